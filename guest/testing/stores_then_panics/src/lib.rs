//! `stores_then_panics`: `SET key value` and `GET key` lines go to the host's store
//! (bucket `t`), answered `OK`, `VALUE value` or `NOT_FOUND`, until a line is
//! `PANIC`, when it panics.
//!
//! It exists to prove that what the store acknowledged outlives the instance: after
//! the trap, a fresh instance (and a fresh connection) reads every value that was
//! answered `OK` before it. It stores each value behind [`TAG`], and `GET` takes
//! its own tag off (a value stored with another is answered whole): a build with
//! another tag (the canary's tests patch it) answers clients the same, but stores
//! different values, which only a comparison of the store operations can see.

use std::collections::HashMap;

use sandsock_sdk::{Answer, Conn, Handler, Io, OpId};

/// What each stored value starts with.
const TAG: &[u8] = b"<tag:1>";

#[derive(Default)]
struct StoresThenPanics {
    /// Which connection asked, and whether it was a `SET`.
    asked: HashMap<OpId, (Conn, bool)>,
}

impl Handler for StoresThenPanics {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let Ok(bucket) = io.open_bucket("t") else {
            io.write(conn, b"ERROR no store\n");
            return;
        };
        // The test writes one short line at a time: one chunk.
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = String::from_utf8_lossy(line);
            let words: Vec<&str> = line.splitn(3, ' ').collect();
            match words[..] {
                ["PANIC"] => panic!("asked to"),
                ["SET", key, value] => {
                    let op = io.set(bucket, key, &[TAG, value.as_bytes()].concat());
                    self.asked.insert(op, (conn, true));
                }
                ["GET", key] => {
                    let op = io.get(bucket, key);
                    self.asked.insert(op, (conn, false));
                }
                _ => io.write(conn, b"ERROR\n"),
            }
        }
    }

    fn on_store(&mut self, io: &mut Io, op: OpId, answer: Answer<'_>) {
        let Some((conn, set)) = self.asked.remove(&op) else {
            return;
        };
        match (set, answer.value()) {
            _ if answer.error().is_some() => io.write(conn, b"ERROR\n"),
            (true, _) => io.write(conn, b"OK\n"),
            (false, Some(value)) => {
                io.write(conn, b"VALUE ");
                io.write(conn, value.strip_prefix(TAG).unwrap_or(value));
                io.write(conn, b"\n");
            }
            (false, None) => io.write(conn, b"NOT_FOUND\n"),
        }
    }
}

sandsock_sdk::serve!(StoresThenPanics);
