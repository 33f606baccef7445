//! [`Tapes`]: what the serving instances read from and wrote to the connections
//! that are watched, turn by turn: by a canary (its shadows replay the bytes, its
//! comparison judges them) and by `--record` (each instance's tape). One
//! accumulator for both, fed by the io calls, because only they see the bytes.
//!
//! `Net` records into it only while one of them watches (one `Option` test per
//! call otherwise), and only for the watched connections. After each batch the
//! recorder, then the canary, read what is new, and [`Tapes::end_turn`] clears it.

use std::collections::HashMap;

use crate::shared::wit::Conn;

/// What one watched connection did in this turn of the loop.
#[derive(Debug, Default)]
pub struct Tape {
    /// Bytes the serving instance read, in order.
    pub input: Vec<u8>,
    /// The serving instance read the peer's end-of-stream.
    pub eof: bool,
    /// Bytes the serving instance's writes were accepted with, in order.
    pub output: Vec<u8>,
    /// The serving instance closed the connection.
    pub closed: bool,
    /// The connection failed (a `hangup`), or the host ended it (a trap's
    /// clean-up, a drain timeout): what it holds cannot be compared.
    pub hung_up: bool,
    /// Of the hang-ups, the host's doing rather than the peer's.
    pub host_closed: bool,
    /// A canary compares it.
    pub canary: bool,
    /// `--record` watches it (recorded, or kept for a turn in case of a trap).
    pub record: bool,
    touched: bool,
}

impl Tape {
    /// Ended: closed by the instance, failed, or ended by the host.
    pub fn ended(&self) -> bool {
        self.closed || self.hung_up
    }
}

/// The tapes of every watched connection, and which were touched in this turn.
#[derive(Debug, Default)]
pub struct Tapes {
    tapes: HashMap<Conn, Tape>,
    touched: Vec<Conn>,
}

impl Tapes {
    /// Starts a canary's watch of `conn`.
    pub fn start_canary(&mut self, conn: Conn) {
        self.tapes.entry(conn).or_default().canary = true;
    }

    /// Starts `--record`'s watch of `conn`.
    pub fn start_record(&mut self, conn: Conn) {
        self.tapes.entry(conn).or_default().record = true;
    }

    /// Stops the canary's watch of `conn` (too much to compare).
    pub fn stop_canary(&mut self, conn: Conn) {
        if let Some(tape) = self.tapes.get_mut(&conn) {
            tape.canary = false;
        }
    }

    /// The canary ended: it watches nothing any more.
    pub fn end_canary(&mut self) {
        self.tapes.values_mut().for_each(|tape| tape.canary = false);
        self.tapes.retain(|_, tape| tape.record);
    }

    /// Whether anyone watches anything.
    pub fn is_empty(&self) -> bool {
        self.tapes.is_empty()
    }

    fn touch(&mut self, conn: Conn) -> Option<&mut Tape> {
        let tape = self.tapes.get_mut(&conn)?;
        if !tape.touched {
            tape.touched = true;
            self.touched.push(conn);
        }
        Some(tape)
    }

    /// The serving instance was given `bytes` read from `conn`.
    pub fn on_input(&mut self, conn: Conn, bytes: &[u8]) {
        if let Some(tape) = self.touch(conn) {
            tape.input.extend_from_slice(bytes);
        }
    }

    /// The serving instance was given `conn`'s end-of-stream.
    pub fn on_eof(&mut self, conn: Conn) {
        if let Some(tape) = self.touch(conn) {
            tape.eof = true;
        }
    }

    /// A `write` was accepted with `bytes`.
    pub fn on_write(&mut self, conn: Conn, bytes: &[u8]) {
        if let Some(tape) = self.touch(conn) {
            tape.output.extend_from_slice(bytes);
        }
    }

    /// The guest closed `conn`.
    pub fn on_close(&mut self, conn: Conn) {
        if let Some(tape) = self.touch(conn) {
            tape.closed = true;
        }
    }

    /// The host is closing `conn`: unless the guest closed it first, that ends what
    /// can be compared.
    pub fn on_host_close(&mut self, conn: Conn) {
        if let Some(tape) = self.touch(conn)
            && !tape.closed
        {
            tape.hung_up = true;
            tape.host_closed = true;
        }
    }

    /// `conn` failed: its `hangup` went out.
    pub fn on_hangup(&mut self, conn: Conn) {
        if let Some(tape) = self.touch(conn) {
            tape.hung_up = true;
        }
    }

    /// What each connection `--record` watches did in this turn, in the order they
    /// were first touched.
    pub fn recorded(&self, mut each: impl FnMut(Conn, &Tape)) {
        for conn in &self.touched {
            if let Some(tape) = self.tapes.get(conn).filter(|tape| tape.record) {
                each(*conn, tape);
            }
        }
    }

    /// What each connection a canary watches did in this turn.
    pub fn take(&mut self, mut each: impl FnMut(Conn, &mut Tape)) {
        for conn in &self.touched {
            if let Some(tape) = self.tapes.get_mut(conn).filter(|tape| tape.canary) {
                each(*conn, tape);
            }
        }
    }

    /// Ends the turn: what was read and written is forgotten, and so are the
    /// connections that ended.
    pub fn end_turn(&mut self) {
        for conn in self.touched.drain(..) {
            let Some(tape) = self.tapes.get_mut(&conn) else {
                continue;
            };
            if tape.ended() || !(tape.canary || tape.record) {
                self.tapes.remove(&conn);
                continue;
            }
            tape.touched = false;
            tape.eof = false;
            tape.input.clear();
            tape.output.clear();
        }
    }

    /// `--record` stops watching `conn` (its instance's tape was cut, or the
    /// instance trapped).
    pub fn forget(&mut self, conn: Conn) {
        if let Some(tape) = self.tapes.get_mut(&conn) {
            tape.record = false;
            if !tape.canary && !tape.touched {
                self.tapes.remove(&conn);
            }
        }
    }
}
