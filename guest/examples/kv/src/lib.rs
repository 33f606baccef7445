//! `kv`: a key-value store over a line protocol, its data in the store the host
//! keeps (contract 1.1): every worker, every generation and every connection sees
//! the same keys, and `--store PATH` keeps them across restarts.
//!
//! ```text
//! SET key value   ->  OK              (the value is the rest of the line)
//! GET key         ->  VALUE value  |  NOT_FOUND
//! DEL key         ->  DELETED      |  NOT_FOUND
//! anything else   ->  ERROR unknown command
//! ```
//!
//! One reply line per request line, in order, so a client may pipeline: each line
//! becomes one store operation, and its reply waits in the connection's queue until
//! every reply before it is there. Lines end in `\n` or `\r\n`; a key is one word
//! of UTF-8, a value may hold spaces. A line over [`MAX_LINE`] bytes gets `ERROR
//! line too long` and the connection is closed. What the host's store refuses is
//! answered `ERROR store full`, `ERROR key too large`, `ERROR value too large` or
//! `ERROR store unavailable` (and so on, one word per outcome).
//!
//! At a hot swap with `--swap handoff` the data needs no handing over (it is in
//! the host); the snapshot holds each connection's unfinished line and the
//! requests whose replies had not come, which the new instance asks again
//! (`GET`, `SET` and `DEL` can be repeated safely). A snapshot of the kv from
//! before the store (layout 1: its keys and values) is written into the store.

use std::collections::{HashMap, VecDeque};

use sandsock_sdk::{
    Answer, BadSnapshot, Bucket, Conn, ConnMap, Handler, Io, LineBuffers, OpId, SnapshotReader,
    SnapshotWriter, StoreOutcome, trim_line_end,
};

/// Longest request line, without its line end. Bounds what one connection
/// buffers while a line is arriving.
const MAX_LINE: usize = 64 * 1024;

/// Replies one connection may wait for before its input is paused: a client
/// pipelining faster than the store answers is held back by TCP, not by memory.
const MAX_WAITING: usize = 1024;

/// Most reply bytes waiting for one client. A 64 KiB chunk of `GET k` lines for a
/// 64 KiB value would otherwise ask for hundreds of megabytes of replies; a client
/// that far behind is not reading them, and is disconnected.
const MAX_PENDING_REPLIES: usize = 4 * 1024 * 1024;

/// The bucket the keys live in.
const BUCKET: &str = "kv";

/// The layout of [`Kv::encode`], version 2 (the SDK's `bytes` is a `u64` length,
/// then the bytes; layout 1, before the store, held the keys and values):
///
/// ```text
/// version  u8    2
/// lines          each connection's unfinished line, as `LineBuffers::encode`
///                writes them
/// conns    u64   then per connection: its handle (u64), a u64 count, and per
///                reply in order a u8 (0: ready, then its bytes; 1: waiting,
///                then its request line)
/// ```
const SNAPSHOT_VERSION: u8 = 2;

/// One request, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Request<'a> {
    Set(&'a str, &'a [u8]),
    Get(&'a str),
    Del(&'a str),
}

/// One connection's reply, in request order.
#[derive(Debug)]
enum Reply {
    /// Ready to send.
    Ready(Vec<u8>),
    /// Waiting for operation `OpId`, made for this request line.
    Waiting(OpId, Vec<u8>),
}

struct Kv {
    bucket: Option<Bucket>,
    /// Each open connection's unfinished line.
    lines: LineBuffers,
    /// Each connection's replies, in request order.
    replies: ConnMap<VecDeque<Reply>>,
    /// Which connection each operation in flight answers.
    asked: HashMap<OpId, Conn>,
    /// Connections whose peer has finished sending: closed once their last reply
    /// is out.
    finished: ConnMap<()>,
    /// Connections with replies to send at the end of this call: one write each.
    dirty: ConnMap<()>,
}

impl Default for Kv {
    fn default() -> Self {
        Self {
            bucket: None,
            lines: LineBuffers::new(MAX_LINE),
            replies: ConnMap::default(),
            asked: HashMap::new(),
            finished: ConnMap::default(),
            dirty: ConnMap::default(),
        }
    }
}

impl Handler for Kv {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if io.queued(conn) > MAX_PENDING_REPLIES {
            io.abort(conn);
            return;
        }
        let mut requests = Vec::new();
        let fed = self.lines.feed(conn, data, |line| {
            requests.push(trim_line_end(line).to_vec())
        });
        for line in requests {
            self.request(io, conn, line);
        }
        if fed.is_err() {
            self.queue(conn, Reply::Ready(b"ERROR line too long\n".to_vec()));
            self.flush(io, conn);
            io.close(conn);
            return;
        }
        self.mark(conn);
    }

    fn on_store(&mut self, _io: &mut Io, op: OpId, answer: Answer<'_>) {
        let Some(conn) = self.asked.remove(&op) else {
            return; // its connection is gone
        };
        let Some(queue) = self.replies.get_mut(&conn) else {
            return;
        };
        if let Some(reply) = queue
            .iter_mut()
            .find(|reply| matches!(reply, Reply::Waiting(id, _) if *id == op))
        {
            let Reply::Waiting(_, line) = reply else {
                unreachable!("found waiting")
            };
            *reply = Reply::Ready(answer_line(line, &answer));
        }
        self.mark(conn);
    }

    /// The replies that became ready during the call, one write per connection.
    fn on_batch_end(&mut self, io: &mut Io) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for (conn, ()) in dirty.drain() {
            self.flush(io, conn);
        }
        self.dirty = dirty;
    }

    /// The peer is done sending: close once every reply it asked for is out.
    fn on_eof(&mut self, io: &mut Io, conn: Conn) {
        if self.replies.contains_key(&conn) {
            self.finished.insert(conn, ());
        } else {
            io.close(conn);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.lines.forget(conn);
        self.finished.remove(&conn);
        if let Some(queue) = self.replies.remove(&conn) {
            for reply in queue {
                if let Reply::Waiting(op, _) = reply {
                    self.asked.remove(&op);
                }
            }
        }
    }

    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        self.encode()
    }

    /// Takes up the unfinished lines and asks again what was waiting; a snapshot
    /// from the kv before the store has its keys written into the store.
    fn restore(&mut self, io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        let mut r = SnapshotReader::new(state);
        match r.u8()? {
            1 => {
                let mut entries = Vec::new();
                for _ in 0..r.count()? {
                    entries.push((r.bytes()?.to_vec(), r.bytes()?.to_vec()));
                }
                let lines = LineBuffers::decode(&mut r, MAX_LINE)?;
                r.finish()?;
                if let Some(bucket) = self.bucket(io) {
                    for (key, value) in entries {
                        if let Ok(key) = std::str::from_utf8(&key) {
                            io.set(bucket, key, &value);
                        }
                    }
                }
                self.lines.merge(lines);
            }
            SNAPSHOT_VERSION => {
                let lines = LineBuffers::decode(&mut r, MAX_LINE)?;
                let mut conns = Vec::new();
                for _ in 0..r.count()? {
                    let conn = r.conn()?;
                    let mut queue = Vec::new();
                    for _ in 0..r.count()? {
                        let waiting = r.u8()?;
                        queue.push((waiting == 1, r.bytes()?.to_vec()));
                    }
                    conns.push((conn, queue));
                }
                r.finish()?;
                self.lines.merge(lines);
                for (conn, queue) in conns {
                    for (waiting, bytes) in queue {
                        if waiting {
                            self.request(io, conn, bytes);
                        } else {
                            self.queue(conn, Reply::Ready(bytes));
                        }
                    }
                }
            }
            _ => return Err(BadSnapshot::new("unknown kv snapshot version")),
        }
        Ok(())
    }

    /// Replies to complete lines are queued already, and a graceful close sends
    /// them; an unfinished line is dropped.
    fn on_shutdown(&mut self, io: &mut Io) {
        io.close_all();
    }
}

impl Kv {
    /// The bucket, opened on first use; none if the host has no store for it.
    fn bucket(&mut self, io: &mut Io) -> Option<Bucket> {
        if self.bucket.is_none() {
            self.bucket = io.open_bucket(BUCKET).ok();
        }
        self.bucket
    }

    /// Queues the reply to one request line: at once if it is malformed, else when
    /// its store operation answers.
    fn request(&mut self, io: &mut Io, conn: Conn, line: Vec<u8>) {
        let request = match parse(&line) {
            Ok(request) => request,
            Err(reply) => {
                self.queue(conn, Reply::Ready(reply.to_vec()));
                return;
            }
        };
        let Some(bucket) = self.bucket(io) else {
            self.queue(conn, Reply::Ready(b"ERROR store unavailable\n".to_vec()));
            return;
        };
        let op = match request {
            Request::Set(key, value) => io.set(bucket, key, value),
            Request::Get(key) => io.get(bucket, key),
            Request::Del(key) => io.delete(bucket, key),
        };
        self.asked.insert(op, conn);
        self.queue(conn, Reply::Waiting(op, line));
        if self.replies.get(&conn).map_or(0, VecDeque::len) >= MAX_WAITING {
            io.pause_reading(conn);
        }
    }

    /// Flushes `conn` at the end of the call.
    fn mark(&mut self, conn: Conn) {
        self.dirty.insert(conn, ());
    }

    fn queue(&mut self, conn: Conn, reply: Reply) {
        self.replies.entry(conn).or_default().push_back(reply);
    }

    /// Sends the replies that are ready, in order, up to the first still waiting.
    fn flush(&mut self, io: &mut Io, conn: Conn) {
        let Some(queue) = self.replies.get_mut(&conn) else {
            return;
        };
        let mut out = Vec::new();
        while let Some(Reply::Ready(_)) = queue.front() {
            if let Some(Reply::Ready(bytes)) = queue.pop_front() {
                out.extend_from_slice(&bytes);
            }
        }
        let done = queue.is_empty();
        if done {
            self.replies.remove(&conn);
        }
        if !out.is_empty() {
            io.write(conn, &out);
        }
        if done && self.finished.remove(&conn).is_some() {
            io.close(conn);
        }
        // Not only when this flush emptied a full queue: the answers that fill it
        // may come over several calls, each flushing a part (resuming a connection
        // that is not paused changes nothing).
        if self.replies.get(&conn).map_or(0, VecDeque::len) < MAX_WAITING / 2 {
            io.resume_reading(conn);
        }
    }

    /// The snapshot, as [`SNAPSHOT_VERSION`] lays it out.
    fn encode(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        self.lines.encode(&mut w);
        w.u64(self.replies.len() as u64);
        for (conn, queue) in &self.replies {
            w.conn(*conn);
            w.u64(queue.len() as u64);
            for reply in queue {
                match reply {
                    Reply::Ready(bytes) => {
                        w.u8(0);
                        w.bytes(bytes);
                    }
                    Reply::Waiting(_, line) => {
                        w.u8(1);
                        w.bytes(line);
                    }
                }
            }
        }
        w.into_bytes()
    }
}

/// One request line (without its line end), or the reply to a malformed one.
fn parse(line: &[u8]) -> Result<Request<'_>, &'static [u8]> {
    const UNKNOWN: &[u8] = b"ERROR unknown command\n";
    let (command, args) = split_word(line);
    let utf8 = |word| std::str::from_utf8(word).map_err(|_| &b"ERROR key is not UTF-8\n"[..]);
    match command {
        b"SET" => match split_word(args) {
            (key, value) if is_key(key) && args.len() > key.len() => {
                Ok(Request::Set(utf8(key)?, value))
            }
            _ => Err(UNKNOWN),
        },
        b"GET" if is_key(args) => Ok(Request::Get(utf8(args)?)),
        b"DEL" if is_key(args) => Ok(Request::Del(utf8(args)?)),
        _ => Err(UNKNOWN),
    }
}

/// The reply line to `request` (a line [`parse`] took) from the store's answer.
fn answer_line(request: &[u8], answer: &Answer<'_>) -> Vec<u8> {
    if let Some(error) = answer.error() {
        return error_line(error);
    }
    let (command, _) = split_word(request);
    match (command, answer.outcome()) {
        (b"SET", _) => b"OK\n".to_vec(),
        (b"GET", StoreOutcome::Ok) => {
            let value = answer.value().unwrap_or_default();
            let mut line = Vec::with_capacity(7 + value.len());
            line.extend_from_slice(b"VALUE ");
            line.extend_from_slice(value);
            line.push(b'\n');
            line
        }
        (b"DEL", StoreOutcome::Ok) => b"DELETED\n".to_vec(),
        _ => b"NOT_FOUND\n".to_vec(),
    }
}

/// `ERROR ...` for what the store refused.
fn error_line(error: StoreOutcome) -> Vec<u8> {
    let what: &str = match error {
        StoreOutcome::NamespaceFull => "store full",
        StoreOutcome::KeyTooLarge => "key too large",
        StoreOutcome::ValueTooLarge => "value too large",
        StoreOutcome::Unavailable => "store unavailable",
        StoreOutcome::TimedOut => "store timed out",
        StoreOutcome::Busy => "store busy",
        _ => "store failed",
    };
    format!("ERROR {what}\n").into_bytes()
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

    #[test]
    fn requests_parse_and_anything_else_is_an_unknown_command() {
        assert_eq!(parse(b"SET k a b  c"), Ok(Request::Set("k", b"a b  c")));
        assert_eq!(parse(b"SET k "), Ok(Request::Set("k", b"")));
        assert_eq!(parse(b"GET k"), Ok(Request::Get("k")));
        assert_eq!(parse(b"DEL k"), Ok(Request::Del("k")));
        for line in [
            "", "get k", "SET", "SET k", "SET  k v", "GET", "GET a b", "DEL ", "PING",
        ] {
            assert_eq!(
                parse(line.as_bytes()),
                Err(&b"ERROR unknown command\n"[..]),
                "{line:?}"
            );
        }
        assert_eq!(parse(b"GET \xff"), Err(&b"ERROR key is not UTF-8\n"[..]));
    }

    #[test]
    fn answers_become_the_protocols_replies() {
        let value = Answer::from_parts(StoreOutcome::Ok, 0, b"a b");
        assert_eq!(answer_line(b"GET k", &value), b"VALUE a b\n");
        let missing = Answer::from_parts(StoreOutcome::NotFound, 0, b"");
        assert_eq!(answer_line(b"GET k", &missing), b"NOT_FOUND\n");
        assert_eq!(answer_line(b"DEL k", &missing), b"NOT_FOUND\n");
        let ok = Answer::from_parts(StoreOutcome::Ok, 0, b"");
        assert_eq!(answer_line(b"DEL k", &ok), b"DELETED\n");
        assert_eq!(answer_line(b"SET k v", &ok), b"OK\n");
        let full = Answer::from_parts(StoreOutcome::NamespaceFull, 0, b"");
        assert_eq!(answer_line(b"SET k v", &full), b"ERROR store full\n");
        let down = Answer::from_parts(StoreOutcome::Unavailable, 0, b"");
        assert_eq!(answer_line(b"GET k", &down), b"ERROR store unavailable\n");
    }
}
