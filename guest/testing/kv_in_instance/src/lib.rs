//! `kv_in_instance`: the `kv` example as it was before contract 1.1, its store in
//! the guest instance: the store benchmark's baseline (`host/benches/store.rs`),
//! what the host-held store is measured against.
//!
//! The store lives in the guest instance: serve it with one instance for every
//! connection and one worker (`--isolation shared --workers 1`, the defaults), or each
//! instance has a store of its own.
//!
//! ```text
//! SET key value   ->  OK              (the value is the rest of the line)
//! GET key         ->  VALUE value  |  NOT_FOUND
//! DEL key         ->  DELETED      |  NOT_FOUND
//! anything else   ->  ERROR unknown command
//! ```
//!
//! One reply line per request line, in order, so a client may pipeline. Lines end
//! in `\n` or `\r\n`; a key is one word, a value may hold spaces. A line over
//! [`MAX_LINE`] bytes gets `ERROR line too long` and the connection is closed.
//!
//! The store survives a hot swap with `--swap handoff`: the snapshot holds every
//! key and value, and each connection's unfinished line, so a `SET` split across
//! the swap still lands (layout: [`SNAPSHOT_VERSION`]).

use std::collections::HashMap;

use sandsock_sdk::{
    BadSnapshot, Conn, Handler, Io, LineBuffers, SnapshotReader, SnapshotWriter, trim_line_end,
};

/// Longest request line, without its line end. Bounds what one connection
/// buffers while a line is arriving.
const MAX_LINE: usize = 64 * 1024;

/// Most bytes (keys and values) the store holds; past it `SET` answers
/// `ERROR store full`. The guest's memory is capped by the host, and running out
/// would trap and drop every connection, so the store refuses first.
const MAX_STORE_BYTES: usize = 16 * 1024 * 1024;

/// Most reply bytes waiting for one client. A 64 KiB chunk of `GET k` lines for a
/// 64 KiB value would otherwise ask for hundreds of megabytes of replies; a client
/// that far behind is not reading them, and is disconnected.
const MAX_PENDING_REPLIES: usize = 4 * 1024 * 1024;

/// The layout of [`Kv::encode`], version 1 (the SDK's `bytes` is a `u64` length,
/// then the bytes):
///
/// ```text
/// version  u8    1
/// entries  u64   then per entry: key bytes, value bytes
/// lines          each connection's unfinished line, as `LineBuffers::encode`
///                writes them (a u64 count, then per connection its handle and the
///                bytes)
/// ```
const SNAPSHOT_VERSION: u8 = 1;

struct Kv {
    store: Store,
    /// Each open connection's unfinished line.
    lines: LineBuffers,
    /// The replies to one chunk, reused across chunks.
    replies: Vec<u8>,
}

impl Default for Kv {
    fn default() -> Self {
        Self {
            store: Store::default(),
            lines: LineBuffers::new(MAX_LINE),
            replies: Vec::new(),
        }
    }
}

impl Handler for Kv {
    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        self.encode()
    }

    /// Takes up the earlier generation's store, or keeps this one's if the
    /// snapshot cannot be read: a bad snapshot loses the data, not the connections.
    ///
    /// The host may call this more than once, once per earlier instance that held
    /// connections (several generations can be draining at once), so a snapshot is
    /// merged into what is there; on a key both have, the later snapshot wins.
    fn restore(&mut self, _io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        let (store, lines) = decode(state)?;
        self.store.merge(store);
        self.lines.merge(lines);
        Ok(())
    }

    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let Self {
            store,
            lines,
            replies,
        } = self;
        replies.clear();
        let already_queued = io.queued(conn);
        let mut overwhelmed = false;
        let fed = lines.feed(conn, data, |line| {
            overwhelmed |= already_queued + replies.len() > MAX_PENDING_REPLIES;
            if !overwhelmed {
                store.execute(trim_line_end(line), replies);
            }
        });
        if overwhelmed {
            io.abort(conn);
            return;
        }
        if fed.is_err() {
            replies.extend_from_slice(b"ERROR line too long\n");
        }
        io.write(conn, replies);
        if fed.is_err() {
            io.close(conn);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.lines.forget(conn);
    }

    /// Replies to complete lines are queued already, and a graceful close sends
    /// them; an unfinished line is dropped.
    fn on_shutdown(&mut self, io: &mut Io) {
        io.close_all();
    }
}

impl Kv {
    /// The snapshot: the store and the unfinished lines, as [`SNAPSHOT_VERSION`]
    /// lays them out.
    fn encode(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        w.u64(self.store.entries.len() as u64);
        for (key, value) in &self.store.entries {
            w.bytes(key);
            w.bytes(value);
        }
        self.lines.encode(&mut w);
        w.into_bytes()
    }
}

/// Reads what [`Kv::encode`] wrote, checking all of it before any of it is used.
///
/// A store larger than [`MAX_STORE_BYTES`] (from a build with a larger limit) is
/// taken as it is: `SET` refuses to grow it until enough is deleted.
fn decode(state: &[u8]) -> Result<(Store, LineBuffers), BadSnapshot> {
    let mut r = SnapshotReader::new(state);
    if r.u8()? != SNAPSHOT_VERSION {
        return Err(BadSnapshot::new("unknown kv snapshot version"));
    }
    let mut store = Store::default();
    for _ in 0..r.count()? {
        let (key, value) = (r.bytes()?, r.bytes()?);
        if !is_key(key) {
            return Err(BadSnapshot::new("a key is not one word"));
        }
        if store.entries.insert(key.to_vec(), value.to_vec()).is_some() {
            return Err(BadSnapshot::new("a key appears twice"));
        }
        store.bytes += key.len() + value.len();
    }
    let lines = LineBuffers::decode(&mut r, MAX_LINE)?;
    r.finish()?;
    Ok((store, lines))
}

/// The keys and values, and how many bytes they take.
#[derive(Default)]
struct Store {
    entries: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl Store {
    /// Runs one request line (without its line end), appending the reply to `out`.
    fn execute(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let (command, args) = split_word(line);
        match command {
            b"SET" => match split_word(args) {
                (key, value) if is_key(key) && args.len() > key.len() => {
                    out.extend_from_slice(self.set(key, value));
                }
                _ => out.extend_from_slice(b"ERROR unknown command\n"),
            },
            b"GET" if is_key(args) => match self.entries.get(args) {
                Some(value) => {
                    out.extend_from_slice(b"VALUE ");
                    out.extend_from_slice(value);
                    out.push(b'\n');
                }
                None => out.extend_from_slice(b"NOT_FOUND\n"),
            },
            b"DEL" if is_key(args) => match self.entries.remove(args) {
                Some(value) => {
                    self.bytes -= args.len() + value.len();
                    out.extend_from_slice(b"DELETED\n");
                }
                None => out.extend_from_slice(b"NOT_FOUND\n"),
            },
            _ => out.extend_from_slice(b"ERROR unknown command\n"),
        }
    }

    /// Adds `other`'s entries, replacing those with the same key. Not held to
    /// [`MAX_STORE_BYTES`]: a store handed over is kept whole.
    fn merge(&mut self, other: Store) {
        if self.entries.is_empty() {
            *self = other;
            return;
        }
        for (key, value) in other.entries {
            let (key_len, value_len) = (key.len(), value.len());
            if let Some(old) = self.entries.insert(key, value) {
                self.bytes -= key_len + old.len();
            }
            self.bytes += key_len + value_len;
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> &'static [u8] {
        let replaced = self.entries.get(key).map_or(0, |old| key.len() + old.len());
        let bytes = self.bytes - replaced + key.len() + value.len();
        if bytes > MAX_STORE_BYTES {
            return b"ERROR store full\n";
        }
        self.bytes = bytes;
        self.entries.insert(key.to_vec(), value.to_vec());
        b"OK\n"
    }
}

/// Splits off the first word: the bytes before the first space, and those after it.
fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&byte| byte == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &[]),
    }
}

/// A key is one non-empty word.
fn is_key(word: &[u8]) -> bool {
    !word.is_empty() && !word.contains(&b' ')
}

sandsock_sdk::serve!(Kv);

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs each line against one store; returns the replies.
    fn run(lines: &[&str]) -> String {
        let mut store = Store::default();
        let mut out = Vec::new();
        for line in lines {
            store.execute(line.as_bytes(), &mut out);
        }
        String::from_utf8(out).expect("replies echo UTF-8 input")
    }

    #[test]
    fn set_get_del() {
        let replies = run(&["GET k", "SET k a b  c", "GET k", "DEL k", "DEL k", "GET k"]);
        assert_eq!(
            replies,
            "NOT_FOUND\nOK\nVALUE a b  c\nDELETED\nNOT_FOUND\nNOT_FOUND\n"
        );
    }

    #[test]
    fn set_replaces_and_accepts_an_empty_value() {
        assert_eq!(run(&["SET k 1", "SET k ", "GET k"]), "OK\nOK\nVALUE \n");
    }

    #[test]
    fn anything_else_is_an_unknown_command() {
        for line in [
            "", "get k", "SET", "SET k", "SET  k v", "GET", "GET a b", "DEL ", "PING",
        ] {
            assert_eq!(run(&[line]), "ERROR unknown command\n", "{line:?}");
        }
    }

    #[test]
    fn the_store_refuses_to_grow_past_its_limit_and_counts_replacements() {
        let mut store = Store::default();
        let mut out = Vec::new();
        let big = format!("SET a {}", "x".repeat(MAX_STORE_BYTES - 1));
        store.execute(big.as_bytes(), &mut out);
        store.execute(b"SET b y", &mut out);
        store.execute(b"SET a small", &mut out);
        store.execute(b"SET b y", &mut out);
        store.execute(b"DEL a", &mut out);
        assert_eq!(out, b"OK\nERROR store full\nOK\nOK\nDELETED\n");
        assert_eq!(store.bytes, 2);
    }

    #[test]
    fn a_snapshot_brings_back_the_store_and_unfinished_lines() {
        let mut kv = Kv::default();
        let mut out = Vec::new();
        for line in ["SET a 1", "SET b two words", "SET c x", "DEL c"] {
            kv.store.execute(line.as_bytes(), &mut out);
        }
        let conn = Conn::from_raw(7);
        kv.lines
            .feed(conn, b"SET d", |_| {})
            .expect("a short unfinished line");

        let (mut store, mut restored) = decode(&kv.encode()).expect("its own snapshot");
        assert_eq!(store.bytes, kv.store.bytes);
        let mut replies = Vec::new();
        let fed = restored.feed(conn, b" 4\nGET b\n", |line| {
            store.execute(trim_line_end(line), &mut replies);
        });
        assert_eq!(fed, Ok(()));
        store.execute(b"GET a", &mut replies);
        store.execute(b"GET d", &mut replies);
        store.execute(b"GET c", &mut replies);
        assert_eq!(
            String::from_utf8(replies).expect("ASCII"),
            "OK\nVALUE two words\nVALUE 1\nVALUE 4\nNOT_FOUND\n"
        );
    }

    #[test]
    fn a_bad_snapshot_is_refused_without_panicking() {
        let mut kv = Kv::default();
        kv.store.execute(b"SET key value", &mut Vec::new());
        kv.lines
            .feed(Conn::from_raw(1), b"GET", |_| {})
            .expect("a short unfinished line");
        let good = kv.encode();
        for end in 0..good.len() {
            assert!(decode(&good[..end]).is_err(), "truncated at {end}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(decode(&version).is_err());

        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        w.u64(1);
        w.bytes(b"two words");
        w.bytes(b"v");
        w.u64(0);
        assert!(decode(&w.into_bytes()).is_err(), "a key with a space");
    }

    #[test]
    fn snapshots_merge_and_the_later_one_wins() {
        let mut store = Store::default();
        store.execute(b"SET a 1", &mut Vec::new());
        store.execute(b"SET b 2", &mut Vec::new());
        let mut later = Store::default();
        later.execute(b"SET b 22", &mut Vec::new());
        later.execute(b"SET c 3", &mut Vec::new());
        store.merge(later);
        let mut out = Vec::new();
        for line in ["GET a", "GET b", "GET c"] {
            store.execute(line.as_bytes(), &mut out);
        }
        assert_eq!(out, b"VALUE 1\nVALUE 22\nVALUE 3\n");
        assert_eq!(store.bytes, 2 + 3 + 2);
    }
}
