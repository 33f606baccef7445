//! `http`: an HTTP/1.1 server that answers every `GET` with `hello\n`.
//!
//! The HTTP itself is in `http.rs`, which does no I/O (the host's native baseline
//! benchmark includes that same file); this file connects it to the connections.
//!
//! On shutdown, a connection with no unfinished request is closed once its
//! responses are sent; one whose request is still arriving gets that request
//! answered, with `Connection: close`, and is closed then.

mod http;

use std::collections::HashMap;

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct Hello {
    /// The start of a request that arrived split across chunks, per connection.
    /// Bounded by `http`'s own limits: a head or body that grows too large is
    /// refused instead of buffered.
    unfinished: HashMap<Conn, Vec<u8>>,
    /// The responses to one chunk, reused so that answering does not allocate.
    out: Vec<u8>,
    /// The host is shutting down: the next request a connection completes is its
    /// last.
    shutting_down: bool,
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
                let answers = http::answer_all(data, &mut self.out);
                if !send(io, conn, &self.out, answers.close) {
                    return;
                }
                Some(&data[answers.consumed..])
                    .filter(|rest| !rest.is_empty())
                    .map(<[u8]>::to_vec)
            }
            Some(mut buffer) => {
                buffer.extend_from_slice(data);
                let answers = http::answer_all(&buffer, &mut self.out);
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
}

impl Hello {
    /// During shutdown: answers the request under way on `conn` once it is
    /// complete, with `Connection: close`, and closes the connection.
    fn answer_last(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let mut buffer = self.unfinished.remove(&conn).unwrap_or_default();
        buffer.extend_from_slice(data);
        match http::answer_last(&buffer, &mut self.out) {
            http::Outcome::Incomplete => {
                self.unfinished.insert(conn, buffer);
            }
            http::Outcome::Answered { .. } | http::Outcome::Rejected => {
                send(io, conn, &self.out, true);
            }
        }
    }
}

/// Writes the responses and closes the connection if asked; true if it stays open.
fn send(io: &mut Io, conn: Conn, responses: &[u8], close: bool) -> bool {
    io.write(conn, responses);
    if close {
        io.close(conn);
    }
    !close
}

sandsock_sdk::serve!(Hello);
