//! The connection side of the `http` example: [`Hello`] feeds each connection's
//! bytes to `http.rs` and writes the responses back.
//!
//! Shared, like `http.rs`, by path: `testing/http_v2` includes both files and
//! serves another body, so that the host's hot-swap tests run two generations
//! of exactly this code and tell them apart by the body alone.
//!
//! A refused request (a body too large, a bad head) may still be arriving when the
//! refusal goes out. Closing then would let the kernel answer the rest with a
//! reset, which can destroy the refusal before the client reads it; so the
//! connection shuts down its write side after the refusal and reads and drops
//! what still comes, until the peer ends its side or [`DRAIN_MS`] pass, as
//! nginx's lingering close does.
//!
//! On shutdown, a connection with no unfinished request is closed once its
//! responses are sent; one whose request is still arriving gets that request
//! answered, with `Connection: close`, and is closed then; one draining a refused
//! request goes on until its client's end or its drain timer.
//!
//! At a hot swap with `--swap handoff`, each connection's unfinished request goes
//! into the snapshot, so a request split across the swap is answered by the new
//! generation (responses not yet sent are the SDK's to carry, and it does).

use sandsock_sdk::{
    BadSnapshot, Conn, ConnMap, Handler, InputBuffers, Io, SnapshotReader, SnapshotWriter,
};

use crate::http;

/// The layout of [`Hello::encode`], version 1:
///
/// ```text
/// version  u8    1
/// input          each connection's unfinished request, as `InputBuffers::encode`
///                writes them (a u64 count, then per connection its handle and the
///                bytes)
/// ```
const SNAPSHOT_VERSION: u8 = 1;

/// How long a refused connection goes on reading and dropping what its peer
/// sends, at most: the host's own lingering time after a close.
const DRAIN_MS: u32 = 5_000;

/// An HTTP server answering every `GET` with one fixed body.
pub struct Hello {
    /// The body of every `GET`.
    body: &'static [u8],
    /// The start of a request that arrived split across chunks, per connection.
    /// Bounded by `http`'s own limits: a head or body that grows too large is
    /// refused instead of buffered.
    unfinished: InputBuffers,
    /// Connections whose request was refused, read and dropped until the peer's
    /// end (or [`DRAIN_MS`], a timer whose id is the connection's handle).
    draining: ConnMap<()>,
    /// The responses to one chunk, reused so that answering does not allocate.
    out: Vec<u8>,
    /// The host is shutting down: the next request a connection completes is its
    /// last.
    shutting_down: bool,
}

impl Hello {
    /// A server whose `GET`s answer `body`.
    pub fn new(body: &'static [u8]) -> Self {
        Self {
            body,
            unfinished: InputBuffers::default(),
            draining: ConnMap::default(),
            out: Vec::new(),
            shutting_down: false,
        }
    }
}

impl Handler for Hello {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if self.draining.contains_key(&conn) {
            return;
        }
        self.out.clear();
        if self.shutting_down {
            return self.answer_last(io, conn, data);
        }
        // Answered straight from the chunk when no request is half-way; only a
        // trailing partial request is copied, to be completed by the next chunk.
        let (out, body) = (&mut self.out, self.body);
        let answers = self.unfinished.feed(conn, data, |input| {
            let answers = http::answer_all_with(input, out, body);
            (answers.consumed, answers)
        });
        if answers.close {
            self.unfinished.forget(conn);
        }
        if answers.rejected {
            self.refuse(io, conn);
        } else {
            send(io, conn, &self.out, answers.close);
        }
    }

    fn on_close(&mut self, io: &mut Io, conn: Conn) {
        self.unfinished.forget(conn);
        if self.draining.remove(&conn).is_some() {
            io.cancel_timer(conn.raw());
        }
    }

    /// A refused connection's drain ran out: it closes, whatever still comes.
    fn on_timer(&mut self, io: &mut Io, id: u64) {
        let conn = Conn::from_raw(id);
        if self.draining.remove(&conn).is_some() {
            io.close(conn);
        }
    }

    fn on_shutdown(&mut self, io: &mut Io) {
        self.shutting_down = true;
        // A connection still draining a refused request ends as it would have: at
        // the client's end or its drain timer, well within the shutdown timeout.
        let idle: Vec<Conn> = io
            .conns()
            .filter(|&conn| !self.unfinished.is_holding(conn) && !self.draining.contains_key(&conn))
            .collect();
        for conn in idle {
            io.close(conn);
        }
    }

    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        self.encode()
    }

    /// Takes up the unfinished requests; the next bytes of each connection then
    /// complete them. A snapshot that cannot be read loses them (those clients
    /// get a `400` for the rest of their request), not the connections.
    fn restore(&mut self, _io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        self.unfinished.merge(decode(state)?);
        Ok(())
    }
}

impl Hello {
    /// During shutdown: answers the request under way on `conn` once it is
    /// complete, with `Connection: close`, and closes the connection.
    fn answer_last(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let (out, body) = (&mut self.out, self.body);
        let answered = self.unfinished.feed(conn, data, |input| {
            match http::answer_last_with(input, out, body) {
                http::Outcome::Incomplete => (0, false),
                http::Outcome::Answered { .. } | http::Outcome::Rejected => (input.len(), true),
            }
        });
        if answered {
            send(io, conn, &self.out, true);
        }
    }

    /// Sends the refusal in `self.out` and ends the write side; the connection
    /// stays open, dropping its input, until the peer ends its side (the SDK's
    /// `on_eof` closes it then) or the drain timer fires.
    fn refuse(&mut self, io: &mut Io, conn: Conn) {
        io.write(conn, &self.out);
        io.shutdown_write(conn);
        if io.set_timer(conn.raw(), DRAIN_MS).is_ok() {
            self.draining.insert(conn, ());
        } else {
            // No timer to bound the drain (the host's cap on timers is reached):
            // close now rather than read for ever.
            io.close(conn);
        }
    }

    /// The snapshot: every unfinished request, as [`SNAPSHOT_VERSION`] lays them
    /// out.
    fn encode(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        self.unfinished.encode(&mut w);
        w.into_bytes()
    }
}

/// Reads what [`Hello::encode`] wrote, checking all of it before any of it is
/// used. The requests need no check of their own: `http` refuses one that grew
/// too large as soon as more of it arrives.
fn decode(state: &[u8]) -> Result<InputBuffers, BadSnapshot> {
    let mut r = SnapshotReader::new(state);
    if r.u8()? != SNAPSHOT_VERSION {
        return Err(BadSnapshot::new("unknown http snapshot version"));
    }
    let unfinished = InputBuffers::decode(&mut r)?;
    r.finish()?;
    Ok(unfinished)
}

/// Writes the responses and closes the connection if asked; true if it stays open.
fn send(io: &mut Io, conn: Conn, responses: &[u8], close: bool) -> bool {
    io.write(conn, responses);
    if close {
        io.close(conn);
    }
    !close
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_split_across_a_snapshot_is_answered() {
        let mut old = Hello::new(b"old\n");
        let conn = Conn::from_raw(3);
        let (out, body) = (&mut old.out, old.body);
        old.unfinished.feed(conn, b"GET / HTTP/1.1\r\nHo", |input| {
            let answers = http::answer_all_with(input, out, body);
            (answers.consumed, ())
        });
        assert!(old.unfinished.is_holding(conn), "half a request");
        let mut new = Hello::new(b"new\n");
        new.unfinished
            .merge(decode(&old.encode()).expect("its own snapshot"));
        let (out, body) = (&mut new.out, new.body);
        let consumed_all = new.unfinished.feed(conn, b"st: x\r\n\r\n", |input| {
            let answers = http::answer_all_with(input, out, body);
            (answers.consumed, answers.consumed == input.len())
        });
        assert!(consumed_all);
        assert!(new.out.ends_with(b"\r\n\r\nnew\n"));
    }

    #[test]
    fn a_bad_snapshot_is_refused_without_panicking() {
        let mut hello = Hello::new(http::HELLO);
        hello
            .unfinished
            .feed(Conn::from_raw(1), b"GET", |_| (0, ()));
        let good = hello.encode();
        for end in 0..good.len() {
            assert!(decode(&good[..end]).is_err(), "truncated at {end}");
        }
        let mut version = good.clone();
        version[0] = 0;
        assert!(decode(&version).is_err());
    }
}
