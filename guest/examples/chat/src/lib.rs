//! `chat`: every line a client sends goes to every other connected client.
//!
//! A line is relayed exactly as sent, `\n` included, once it is complete; the
//! sender does not get its own lines back. Lines are capped at [`MAX_LINE`] bytes.
//! A client that does not read what the room sends it is disconnected once
//! [`MAX_BACKLOG`] bytes wait for it, so one stalled reader costs the guest a
//! bounded amount of memory and never slows the others down.

use std::collections::HashMap;

use sandsock_sdk::{Conn, Handler, Io, Lines};

/// Longest line, without its `\n`. A longer one gets `ERROR line too long` and
/// the sender is disconnected.
const MAX_LINE: usize = 64 * 1024;

/// Most bytes waiting for one receiver before it is disconnected.
const MAX_BACKLOG: usize = 1024 * 1024;

#[derive(Default)]
struct Chat {
    /// Every open connection, in the order they joined (the order lines go out).
    members: Vec<Conn>,
    /// Each member's unfinished line.
    lines: HashMap<Conn, Lines>,
    /// The complete lines of one chunk, sent to each receiver in one write.
    outgoing: Vec<u8>,
}

impl Handler for Chat {
    fn on_accept(&mut self, _io: &mut Io, conn: Conn) {
        self.members.push(conn);
        self.lines.insert(conn, Lines::new(MAX_LINE));
    }

    fn on_data(&mut self, io: &mut Io, sender: Conn, data: &[u8]) {
        let Some(lines) = self.lines.get_mut(&sender) else {
            return;
        };
        self.outgoing.clear();
        let fed = lines.feed(data, |line| self.outgoing.extend_from_slice(line));
        if !self.outgoing.is_empty() {
            self.relay(io, sender);
        }
        if fed.is_err() {
            io.write(sender, b"ERROR line too long\n");
            io.close(sender);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.members.retain(|&member| member != conn);
        self.lines.remove(&conn);
    }

    /// Relayed lines are queued already, and a graceful close sends them.
    fn on_shutdown(&mut self, io: &mut Io) {
        io.close_all();
    }
}

impl Chat {
    /// Sends `outgoing` to every member but the sender, dropping receivers that
    /// fell too far behind.
    fn relay(&self, io: &mut Io, sender: Conn) {
        for &receiver in self.members.iter().filter(|&&member| member != sender) {
            io.write(receiver, &self.outgoing);
            if io.queued(receiver) > MAX_BACKLOG {
                // A graceful close would wait for the backlog to drain, which a
                // receiver that does not read never lets happen.
                io.abort(receiver);
            }
        }
    }
}

sandsock_sdk::serve!(Chat);
