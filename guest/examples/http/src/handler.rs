//! The connection side of the `http` example: [`Hello`] feeds each connection's
//! bytes to `http.rs` and writes the responses back.
//!
//! Shared, like `http.rs`, by path: `testing/http_v2` includes both files and
//! serves another body, so that the host's hot-swap tests run two generations
//! of exactly this code and tell them apart by the body alone.
//!
//! On shutdown, a connection with no unfinished request is closed once its
//! responses are sent; one whose request is still arriving gets that request
//! answered, with `Connection: close`, and is closed then.
//!
//! At a hot swap with `--swap handoff`, each connection's unfinished request goes
//! into the snapshot, so a request split across the swap is answered by the new
//! generation (responses not yet sent are the SDK's to carry, and it does).

use sandsock_sdk::{BadSnapshot, Conn, ConnMap, Handler, Io, SnapshotReader, SnapshotWriter};

use crate::http;

/// The layout of [`Hello::encode`], version 1 (the SDK's `bytes` is a `u64`
/// length, then the bytes):
///
/// ```text
/// version  u8    1
/// conns    u64   then per connection: handle u64, unfinished request bytes
/// ```
const SNAPSHOT_VERSION: u8 = 1;

/// An HTTP server answering every `GET` with one fixed body.
pub struct Hello {
    /// The body of every `GET`.
    body: &'static [u8],
    /// The start of a request that arrived split across chunks, per connection.
    /// Bounded by `http`'s own limits: a head or body that grows too large is
    /// refused instead of buffered.
    unfinished: ConnMap<Vec<u8>>,
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
            unfinished: ConnMap::default(),
            out: Vec::new(),
            shutting_down: false,
        }
    }
}

impl Handler for Hello {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        self.out.clear();
        if self.shutting_down {
            return self.answer_last(io, conn, data);
        }
        let unfinished = match self.unfinished.remove(&conn) {
            // The common case: the chunk starts with a request; answer straight
            // from it and copy only a trailing partial request, if any.
            None => {
                let answers = http::answer_all_with(data, &mut self.out, self.body);
                if !send(io, conn, &self.out, answers.close) {
                    return;
                }
                Some(&data[answers.consumed..])
                    .filter(|rest| !rest.is_empty())
                    .map(<[u8]>::to_vec)
            }
            Some(mut buffer) => {
                buffer.extend_from_slice(data);
                let answers = http::answer_all_with(&buffer, &mut self.out, self.body);
                if !send(io, conn, &self.out, answers.close) {
                    return;
                }
                buffer.drain(..answers.consumed);
                Some(buffer).filter(|rest| !rest.is_empty())
            }
        };
        if let Some(rest) = unfinished {
            self.unfinished.insert(conn, rest);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.unfinished.remove(&conn);
    }

    fn on_shutdown(&mut self, io: &mut Io) {
        self.shutting_down = true;
        let idle: Vec<Conn> = io
            .conns()
            .filter(|conn| !self.unfinished.contains_key(conn))
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
    fn restore(&mut self, _io: &mut Io, state: &[u8]) {
        match decode(state) {
            Ok(unfinished) => self.unfinished.extend(unfinished),
            Err(error) => eprintln!("http: unfinished requests are lost: {error}"),
        }
    }
}

impl Hello {
    /// During shutdown: answers the request under way on `conn` once it is
    /// complete, with `Connection: close`, and closes the connection.
    fn answer_last(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let mut buffer = self.unfinished.remove(&conn).unwrap_or_default();
        buffer.extend_from_slice(data);
        match http::answer_last_with(&buffer, &mut self.out, self.body) {
            http::Outcome::Incomplete => {
                self.unfinished.insert(conn, buffer);
            }
            http::Outcome::Answered { .. } | http::Outcome::Rejected => {
                send(io, conn, &self.out, true);
            }
        }
    }

    /// The snapshot: every unfinished request, as [`SNAPSHOT_VERSION`] lays them
    /// out.
    fn encode(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        w.u64(self.unfinished.len() as u64);
        for (conn, request) in &self.unfinished {
            w.u64(conn.raw());
            w.bytes(request);
        }
        w.into_bytes()
    }
}

/// Reads what [`Hello::encode`] wrote, checking all of it before any of it is
/// used. The requests need no check of their own: `http` refuses one that grew
/// too large as soon as more of it arrives.
fn decode(state: &[u8]) -> Result<ConnMap<Vec<u8>>, BadSnapshot> {
    let mut r = SnapshotReader::new(state);
    if r.u8()? != SNAPSHOT_VERSION {
        return Err(BadSnapshot::new("unknown http snapshot version"));
    }
    let mut unfinished = ConnMap::default();
    for _ in 0..r.count()? {
        let conn = Conn::from_raw(r.u64()?);
        if unfinished.insert(conn, r.bytes()?.to_vec()).is_some() {
            return Err(BadSnapshot::new("a connection appears twice"));
        }
    }
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
        old.unfinished
            .insert(conn, b"GET / HTTP/1.1\r\nHo".to_vec());
        let mut new = Hello::new(b"new\n");
        new.unfinished
            .extend(decode(&old.encode()).expect("its own snapshot"));
        let mut request = new.unfinished.remove(&conn).expect("the request");
        request.extend_from_slice(b"st: x\r\n\r\n");
        let answers = http::answer_all_with(&request, &mut new.out, new.body);
        assert_eq!(answers.consumed, request.len());
        assert!(new.out.ends_with(b"\r\n\r\nnew\n"));
    }

    #[test]
    fn a_bad_snapshot_is_refused_without_panicking() {
        let mut hello = Hello::new(http::HELLO);
        hello.unfinished.insert(Conn::from_raw(1), b"GET".to_vec());
        let good = hello.encode();
        for end in 0..good.len() {
            assert!(decode(&good[..end]).is_err(), "truncated at {end}");
        }
        let mut version = good.clone();
        version[0] = 0;
        assert!(decode(&version).is_err());
    }
}
