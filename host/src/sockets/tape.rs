//! [`Tapes`]: what the serving generation read from and wrote to the connections a
//! canary samples, for the shadows to replay and the comparison to judge.
//!
//! `Net` records into it only while a canary runs (one `Option` test per call
//! otherwise), and only for the sampled connections; the canary takes what is new
//! after each batch.

use std::collections::HashMap;

use crate::shared::wit::Conn;

/// What one sampled connection did since the canary last took it.
#[derive(Debug, Default)]
pub struct Tape {
    /// Bytes the serving generation read, in order.
    pub input: Vec<u8>,
    /// The serving generation read the peer's end-of-stream.
    pub eof: bool,
    /// Bytes the serving generation's writes were accepted with, in order.
    pub output: Vec<u8>,
    /// The serving generation closed the connection.
    pub closed: bool,
    /// The connection failed (a `hangup`), or the host ended it (a trap's
    /// clean-up, a drain timeout): what it holds cannot be compared.
    pub hung_up: bool,
}

/// The tapes of every sampled connection.
#[derive(Debug, Default)]
pub struct Tapes {
    tapes: HashMap<Conn, Tape>,
}

impl Tapes {
    /// Starts recording `conn`.
    pub fn start(&mut self, conn: Conn) {
        self.tapes.entry(conn).or_default();
    }

    /// The serving generation was given `bytes` read from `conn`.
    pub fn on_input(&mut self, conn: Conn, bytes: &[u8]) {
        if let Some(tape) = self.tapes.get_mut(&conn) {
            tape.input.extend_from_slice(bytes);
        }
    }

    /// The serving generation was given `conn`'s end-of-stream.
    pub fn on_eof(&mut self, conn: Conn) {
        if let Some(tape) = self.tapes.get_mut(&conn) {
            tape.eof = true;
        }
    }

    /// A `write` was accepted with `bytes`.
    pub fn on_write(&mut self, conn: Conn, bytes: &[u8]) {
        if let Some(tape) = self.tapes.get_mut(&conn) {
            tape.output.extend_from_slice(bytes);
        }
    }

    /// The guest closed `conn`.
    pub fn on_close(&mut self, conn: Conn) {
        if let Some(tape) = self.tapes.get_mut(&conn) {
            tape.closed = true;
        }
    }

    /// The host is closing `conn`: unless the guest closed it first, that ends what
    /// can be compared.
    pub fn on_host_close(&mut self, conn: Conn) {
        if let Some(tape) = self.tapes.get_mut(&conn)
            && !tape.closed
        {
            tape.hung_up = true;
        }
    }

    /// Stops recording `conn` (too much to compare).
    pub fn stop(&mut self, conn: Conn) {
        self.tapes.remove(&conn);
    }

    /// `conn` failed: its `hangup` went out.
    pub fn on_hangup(&mut self, conn: Conn) {
        if let Some(tape) = self.tapes.get_mut(&conn) {
            tape.hung_up = true;
        }
    }

    /// Takes what each tape recorded since the last take; a tape whose connection
    /// ended is taken whole and forgotten.
    pub fn take(&mut self, mut each: impl FnMut(Conn, &mut Tape)) {
        self.tapes.retain(|&conn, tape| {
            each(conn, tape);
            let ended = tape.closed || tape.hung_up;
            tape.input.clear();
            tape.output.clear();
            !ended
        });
    }
}
