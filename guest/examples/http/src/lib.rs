//! `http`: an HTTP/1.1 server that answers every `GET` with `hello\n`.
//!
//! The HTTP itself is in `http.rs`, which does no I/O (the host's native baseline
//! benchmark includes that same file); this file connects it to the connections.

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
}

impl Handler for Hello {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        self.out.clear();
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
