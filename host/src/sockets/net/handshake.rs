//! Connections from a TLS listener: held by the host until their handshake is done,
//! then adopted by a guest instance; and the TLS side of reads, writes and closes.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use tracing::{debug, warn};

use super::{Agenda, Net, write_answer};
use crate::shared::metrics::NetCounters;
use crate::shared::wit::{Conn, IoError, WriteResult};
use crate::sockets::capacity::Place;
use crate::sockets::connection::{Connection, Phase};
use crate::sockets::events::Read;
use crate::sockets::owners::{HOST, Owner};
use crate::sockets::tls::{Failure, Tls};

impl Net {
    /// Stores and registers a connection from a TLS listener: the host holds it and
    /// runs its handshake until [`Net::adopt`] gives it to a guest instance, or
    /// closes it at `deadline`.
    pub fn insert_tls(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Tls,
        deadline: Instant,
        place: Place,
    ) -> io::Result<Conn> {
        let phase = Phase::Handshaking { deadline };
        let id = self.insert(stream, peer, HOST, phase, place)?;
        let conn = self.conns.get_mut(id).expect("just inserted");
        conn.tls = Some(Box::new(tls));
        // A new socket takes bytes: the server's first flight goes out at once.
        conn.writable = true;
        Ok(id)
    }

    /// The next TLS connection whose handshake is done and that waits for an owner.
    pub fn next_handshaken(&mut self) -> Option<usize> {
        self.handshaken.pop()
    }

    /// Gives a connection the host held (its TLS handshake done) to `owner`; returns
    /// its handle for the guest's `accepted`.
    pub fn adopt(&mut self, slot: usize, owner: Owner) -> Option<Conn> {
        let max_buffer = self.limits.max_buffer;
        let conn = self.conns.slot_mut(slot)?;
        conn.owner = owner;
        // The handshake is not a request: the first plaintext byte is.
        conn.heard = false;
        self.owners.conn_removed(HOST);
        self.owners.conn_added(owner);
        if conn.reportable(max_buffer) {
            self.agenda.enqueue(conn);
        }
        Some(conn.id)
    }

    /// Drops a connection the host held, with no guest to give it to.
    pub fn refuse(&mut self, slot: usize) {
        self.remove(slot);
    }

    /// Drops every connection the host still holds (TLS handshakes under way): at a
    /// shutdown, no new connection goes to the guest.
    pub fn drop_handshakes(&mut self) -> usize {
        let held = self.slots_of(HOST);
        for &slot in &held {
            self.remove(slot);
        }
        self.handshaken.clear();
        held.len()
    }

    /// Moves a TLS handshake on after an edge: takes in what the peer sent, answers,
    /// and, once it is done, queues the connection for [`Net::adopt`]. A peer that
    /// breaks the protocol is closed with one (rate-limited) line.
    pub(super) fn advance_handshake(&mut self, slot: usize) {
        let Some(conn) = self.conns.slot_mut(slot) else {
            return;
        };
        let tls = conn.tls.as_mut().expect("a handshaking connection has TLS");
        let taken = if conn.readable {
            tls.fill(&mut conn.stream, 1).map(|drained| {
                if drained {
                    conn.readable = false;
                }
            })
        } else {
            Ok(())
        };
        // The answer (or the alert that says why not) goes out either way.
        let sent = tls.send(&mut conn.stream, &mut conn.writable, &mut conn.out);
        self.buffered += *sent.as_ref().unwrap_or(&0) as u64;
        if let Err(failure) = taken {
            self.counters.tls_handshakes_failed += 1;
            if let Failure::Protocol(error) = &failure
                && self.tls_log.allow()
            {
                warn!(peer = %conn.peer, %error, "TLS handshake failed; closing the connection");
            }
            debug!(peer = %conn.peer, %failure, "TLS handshake failed");
            // The alert, if the socket takes it; `remove` counts off what is left.
            let before = conn.out.len();
            let _ = conn.out.flush_to(&mut conn.stream);
            self.buffered -= (before - conn.out.len()) as u64;
            self.remove(slot);
            return;
        }
        if sent.is_err() || (tls.at_end() && tls.is_handshaking()) {
            debug!(peer = %conn.peer, "the peer left during the TLS handshake");
            self.counters.tls_handshakes_failed += 1;
            self.remove(slot);
            return;
        }
        let done = !tls.is_handshaking();
        if conn.writable && !conn.out.is_empty() {
            let before = conn.out.len();
            let flushed = conn.out.flush_to(&mut conn.stream);
            self.buffered -= (before - conn.out.len()) as u64;
            match flushed {
                Ok(true) => {}
                Ok(false) => conn.writable = false,
                // No guest owns it yet to hear a `hangup`: it just goes.
                Err(error) => {
                    debug!(peer = %conn.peer, %error, "the TLS handshake's socket failed");
                    self.counters.tls_handshakes_failed += 1;
                    self.remove(slot);
                    return;
                }
            }
        }
        if done {
            debug!(conn = conn.id, peer = %conn.peer, "TLS handshake done");
            self.counters.tls_handshakes += 1;
            self.agenda.set_phase(conn, Phase::Open);
            self.handshaken.push(slot);
        }
    }

    /// `write` on a TLS connection: encrypts what fits under the bound and sends
    /// the records the socket takes now.
    pub(super) fn write_tls(&mut self, slot: usize, data: &[u8]) -> WriteResult {
        let Some(conn) = self.conns.slot_mut(slot) else {
            return WriteResult::Failed(IoError::UnknownConn);
        };
        let room = self.limits.max_buffer.saturating_sub(conn.out.len());
        let tls = conn.tls.as_mut().expect("a TLS connection");
        let taken = tls.write_plaintext(&data[..data.len().min(room)]);
        match tls.send(&mut conn.stream, &mut conn.writable, &mut conn.out) {
            Ok(buffered) => self.buffered += buffered as u64,
            Err(e) => {
                self.agenda.fail(conn, &e);
                return WriteResult::Failed(IoError::Reset);
            }
        }
        write_answer(conn, &mut self.counters, taken, data.len())
    }
}

/// `read` on a TLS connection: decrypted bytes if some wait, else what the socket
/// holds, decrypted, else `would-block` or the end.
pub(super) fn read_tls(
    conn: &mut Connection,
    buf: &mut [u8],
    agenda: &mut Agenda,
    counters: &mut NetCounters,
    buffered: &mut u64,
) -> Read {
    let tls = conn.tls.as_mut().expect("a TLS connection");
    if !tls.has_input() {
        if !conn.readable {
            return Read::WouldBlock;
        }
        match tls.fill(&mut conn.stream, buf.len().max(1)) {
            Ok(true) => conn.readable = false,
            Ok(false) => {}
            Err(failure) => {
                debug!(conn = conn.id, %failure, "TLS connection failed");
                let error = match failure {
                    Failure::Io(e) => e,
                    Failure::Protocol(e) => io::Error::other(e),
                };
                agenda.fail(conn, &error);
                return Read::Failed(IoError::Reset);
            }
        }
        // Whatever the records asked for (a key update's answer) goes out now, or
        // waits behind what is buffered.
        if let Ok(added) = tls.send(&mut conn.stream, &mut conn.writable, &mut conn.out) {
            *buffered += added as u64;
        }
    }
    if buf.is_empty() {
        return Read::Data(0);
    }
    let n = tls.read_plaintext(buf);
    if n > 0 {
        counters.bytes_read += n as u64;
        conn.heard = true;
        return Read::Data(n);
    }
    if tls.at_end() {
        conn.heard = true;
        conn.readable = false;
        conn.eof_seen = true;
        return Read::Eof;
    }
    Read::WouldBlock
}

/// Queues a TLS connection's `close_notify` (at `close` and `shutdown-write`) and
/// sends or buffers it; returns the bytes buffered. Nothing for a plain one.
pub(super) fn tls_close_notify(conn: &mut Connection, agenda: &mut Agenda) -> usize {
    let Some(tls) = conn.tls.as_mut() else {
        return 0;
    };
    tls.close_notify();
    match tls.send(&mut conn.stream, &mut conn.writable, &mut conn.out) {
        Ok(buffered) => buffered,
        Err(e) => {
            if conn.phase == Phase::Open {
                agenda.fail(conn, &e);
            }
            0
        }
    }
}
