//! `kv`: a key-value store over a line protocol, shared by all connections.
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

use std::collections::HashMap;

use sandsock_sdk::{Conn, Handler, Io, Lines, trim_line_end};

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

#[derive(Default)]
struct Kv {
    store: Store,
    /// Each open connection's unfinished line.
    lines: HashMap<Conn, Lines>,
    /// The replies to one chunk, reused across chunks.
    replies: Vec<u8>,
}

impl Handler for Kv {
    fn on_accept(&mut self, _io: &mut Io, conn: Conn) {
        self.lines.insert(conn, Lines::new(MAX_LINE));
    }

    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let Self {
            store,
            lines,
            replies,
        } = self;
        let Some(lines) = lines.get_mut(&conn) else {
            return;
        };
        replies.clear();
        let already_queued = io.queued(conn);
        let mut overwhelmed = false;
        let fed = lines.feed(data, |line| {
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
        self.lines.remove(&conn);
    }

    /// Replies to complete lines are queued already, and a graceful close sends
    /// them; an unfinished line is dropped.
    fn on_shutdown(&mut self, io: &mut Io) {
        io.close_all();
    }
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
}
