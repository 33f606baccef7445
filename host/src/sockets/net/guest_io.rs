//! The guest's `io` calls as [`Net`] answers them: each checks that the caller may
//! see the handle, then does one non-blocking step.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use tracing::{debug, warn};

use super::closing::send_fin;
use super::handshake::{read_tls, tls_close_notify};
use super::{Net, visible, write_answer};
#[cfg(doc)]
use crate::shared::limits::MAX_TIMER_DELAY_MS;
use crate::shared::limits::{CONNECT_TIMEOUT, MAX_READ_CHUNK};
use crate::shared::wit::{Conn, IoError, TlsInfo, WriteResult};
use crate::sockets::conn_table::slot_of;
use crate::sockets::connection::Phase;
use crate::sockets::events::{Read as ReadOutcome, ReadResult};
use crate::sockets::tape::Tapes;

impl Net {
    /// The older contracts' `read`: up to `max` bytes, `would-block`, `eof`, or why
    /// not.
    pub fn read(&mut self, id: Conn, max: u32) -> ReadResult {
        if self.scratch.is_empty() {
            self.scratch = vec![0; MAX_READ_CHUNK];
        }
        let want = (max as usize).min(MAX_READ_CHUNK);
        let mut buf = std::mem::take(&mut self.scratch);
        let read = self.read_into(id, &mut buf[..want]);
        let result = ReadResult::of(read, &buf);
        self.scratch = buf;
        result
    }

    /// [`Net::read_into`] on a connection just handed over, before its first edge:
    /// a client that sends at once (most do) has its request there already, and
    /// reading it now saves a turn of the loop and a call into the guest. If
    /// nothing is there, the edge comes as usual.
    pub fn read_fresh(&mut self, id: Conn, buf: &mut [u8]) -> ReadOutcome {
        let Some(conn) = visible(&mut self.conns, id, self.caller) else {
            return ReadOutcome::Failed(IoError::UnknownConn);
        };
        if conn.ring.on {
            self.read_before_receiving(slot_of(id));
        } else if conn.phase != Phase::Open || conn.tls.is_some() || conn.readable {
            return self.read_into(id, buf);
        } else {
            conn.readable = true;
        }
        let read = self.read_into(id, buf);
        // A full read leaves bytes behind, and no edge (on the ring, no completion:
        // they were received already) will tell of them: report it as still
        // readable, as an edge would have made it.
        if let Some(conn) = visible(&mut self.conns, id, self.caller)
            && conn.readable
        {
            self.agenda.enqueue(conn);
        }
        read
    }

    /// One read into `buf` (of at most 64 KiB: the host's chunk), recorded on the
    /// canary's tape. A contract that hands the guest its bytes reads each
    /// `Readable` connection so before the call, straight into the call's input.
    pub fn read_into(&mut self, id: Conn, buf: &mut [u8]) -> ReadOutcome {
        let read = self.read_socket(id, buf);
        if let Some(tapes) = self.tapes.as_deref_mut() {
            match read {
                ReadOutcome::Data(n) => tapes.on_input(id, &buf[..n]),
                ReadOutcome::Eof => tapes.on_eof(id),
                ReadOutcome::WouldBlock | ReadOutcome::Failed(_) => {}
            }
        }
        read
    }

    fn read_socket(&mut self, id: Conn, buf: &mut [u8]) -> ReadOutcome {
        let want = buf.len().min(MAX_READ_CHUNK);
        let buf = &mut buf[..want];
        let Some(conn) = visible(&mut self.conns, id, self.caller) else {
            return ReadOutcome::Failed(IoError::UnknownConn);
        };
        if let Phase::Failed(error) = conn.phase {
            return ReadOutcome::Failed(error);
        }
        if conn.eof_seen {
            return ReadOutcome::Eof;
        }
        if conn.tls.is_some() {
            return read_tls(
                conn,
                buf,
                &mut self.agenda,
                &mut self.counters,
                &mut self.buffered,
            );
        }
        if !conn.readable {
            return ReadOutcome::WouldBlock;
        }
        if want == 0 {
            return ReadOutcome::Data(0);
        }
        if conn.ring.on || !conn.ring.unread.is_empty() {
            return self.read_received(slot_of(id), buf);
        }
        loop {
            return match conn.stream.read(buf) {
                Ok(0) => {
                    conn.readable = false;
                    conn.eof_seen = true;
                    conn.heard = true;
                    ReadOutcome::Eof
                }
                Ok(n) => {
                    conn.heard = true;
                    // A short read drained the socket: new bytes bring a new edge. Not
                    // so for an end-of-stream already queued, which must still be read.
                    if n < want && !conn.peer_closed {
                        conn.readable = false;
                    }
                    self.counters.bytes_read += n as u64;
                    ReadOutcome::Data(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    ReadOutcome::WouldBlock
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.agenda.fail(conn, &e);
                    ReadOutcome::Failed(IoError::Reset)
                }
            };
        }
    }

    /// `write`: sends what the socket takes now, buffers the rest up to the bound.
    pub fn write(&mut self, id: Conn, data: &[u8]) -> WriteResult {
        let result = self.write_now(id, data);
        if let (Some(tapes), WriteResult::Accepted(n)) = (self.tapes.as_deref_mut(), &result) {
            tapes.on_write(id, &data[..*n as usize]);
        }
        result
    }

    fn write_now(&mut self, id: Conn, data: &[u8]) -> WriteResult {
        let Some(conn) = visible(&mut self.conns, id, self.caller) else {
            return WriteResult::Failed(IoError::UnknownConn);
        };
        if let Phase::Failed(error) = conn.phase {
            return WriteResult::Failed(error);
        }
        if conn.write_shut {
            return WriteResult::Failed(IoError::Closed);
        }
        if conn.tls.is_some() {
            return self.write_tls(slot_of(id), data);
        }
        if conn.ring.on {
            let taken = self.write_buffered(slot_of(id), data);
            let conn = self.conns.get_mut(id).expect("just written to");
            return write_answer(conn, &mut self.counters, taken, data.len());
        }
        let mut sent = 0;
        // With bytes already queued, new ones go behind them: order is the contract.
        if conn.out.is_empty() && conn.writable && !data.is_empty() {
            match write_some(&mut conn.stream, data) {
                Ok(n) => {
                    sent = n;
                    if n < data.len() {
                        conn.writable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                Err(e) => {
                    self.agenda.fail(conn, &e);
                    return WriteResult::Failed(IoError::Reset);
                }
            }
        }
        let buffered = conn.out.push(&data[sent..], self.limits.max_buffer);
        self.buffered += buffered as u64;
        write_answer(conn, &mut self.counters, sent + buffered, data.len())
    }

    /// `set-interest`.
    pub fn set_interest(&mut self, id: Conn, readable: bool, writable: bool) {
        if let Some(conn) = visible(&mut self.conns, id, self.caller) {
            conn.want_read = readable;
            conn.want_write = writable;
            if conn.reportable(self.limits.max_buffer) {
                self.agenda.enqueue(conn);
            }
        }
    }

    /// `shutdown-write`: the FIN follows the bytes already accepted.
    pub fn shutdown_write(&mut self, id: Conn) -> Result<(), IoError> {
        let conn = visible(&mut self.conns, id, self.caller).ok_or(IoError::UnknownConn)?;
        if let Phase::Failed(error) = conn.phase {
            return Err(error);
        }
        conn.write_shut = true;
        self.buffered += tls_close_notify(conn, &mut self.agenda) as u64;
        if conn.unsent() == 0 && conn.phase == Phase::Open {
            send_fin(conn);
        }
        Ok(())
    }

    /// `close`: the handle dies now; buffered bytes are still sent, then the socket
    /// is closed.
    pub fn close(&mut self, id: Conn) -> Result<(), IoError> {
        visible(&mut self.conns, id, self.caller).ok_or(IoError::UnknownConn)?;
        self.start_close(slot_of(id));
        Ok(())
    }

    /// `close`, called by the guest: while a canary runs, what it compares (a close
    /// of a connection that failed is the failure's, not the guest's).
    pub fn close_as_guest(&mut self, id: Conn) -> Result<(), IoError> {
        if let Some(tapes) = self.tapes.as_deref_mut()
            && let Some(conn) = visible(&mut self.conns, id, self.caller)
        {
            if matches!(conn.phase, Phase::Failed(_)) {
                tapes.on_hangup(id);
            } else {
                tapes.on_close(id);
            }
        }
        self.close(id)
    }

    /// The [`Tapes`] watched connections are recorded into, made if there were none
    /// (a canary starting, or `--record`).
    pub fn watch(&mut self) -> &mut Tapes {
        self.tapes.get_or_insert_with(Box::default)
    }

    /// Stops recording into tapes once no one watches a connection any more.
    pub fn unwatch_if_idle(&mut self) {
        if self.tapes.as_ref().is_some_and(|tapes| tapes.is_empty()) {
            self.tapes = None;
        }
    }

    /// The tapes, while someone watches.
    pub fn tapes(&mut self) -> Option<&mut Tapes> {
        self.tapes.as_deref_mut()
    }

    /// The TLS facts of `id`, whoever owns it: for its tape.
    pub fn tls_of(&mut self, id: Conn) -> Option<TlsInfo> {
        self.conns.get_mut(id)?.tls.as_ref().map(|tls| tls.info())
    }

    /// The peer of `id`, whoever owns it: for a canary's shadows.
    pub fn peer_of(&mut self, id: Conn) -> Option<String> {
        self.conns.get_mut(id).map(|conn| conn.peer.to_string())
    }

    /// `peer`.
    pub fn peer(&mut self, id: Conn) -> Option<String> {
        visible(&mut self.conns, id, self.caller).map(|conn| conn.peer.to_string())
    }

    /// `tls`: what the handshake settled, for a connection from a TLS listener.
    pub fn tls(&mut self, id: Conn) -> Option<TlsInfo> {
        visible(&mut self.conns, id, self.caller)?
            .tls
            .as_ref()
            .map(|tls| tls.info())
    }

    /// `set-timer`, refusing a delay over `max_ms` (the contract's maximum: today's is
    /// [`MAX_TIMER_DELAY_MS`], 0.1 had none).
    pub fn set_timer(&mut self, id: u64, after_ms: u64, max_ms: u64) -> Result<(), IoError> {
        let key = (self.caller, id);
        let armed = self.owners.get(self.caller).timers;
        if armed >= self.limits.max_timers && !self.timers.is_armed(key) {
            return Err(IoError::LimitExceeded);
        }
        if after_ms > max_ms {
            return Err(IoError::LimitExceeded);
        }
        let after = Duration::from_millis(after_ms);
        if self.timers.set(key, Instant::now(), after) {
            self.owners.timer_armed(self.caller);
        }
        Ok(())
    }

    /// `cancel-timer`.
    pub fn cancel_timer(&mut self, id: u64) {
        if self.timers.cancel((self.caller, id)) {
            self.owners.timers_gone(self.caller, 1);
        }
    }

    /// `connect`: starts a non-blocking connect to an allowed `ip:port`.
    pub fn connect(&mut self, addr: &str) -> Result<Conn, IoError> {
        let Ok(target) = addr.parse::<SocketAddr>() else {
            self.log_denied(addr, "not an ip:port");
            return Err(IoError::InvalidAddress);
        };
        if !self.allow.permits(target) {
            self.log_denied(addr, "no --allow-connect matches");
            return Err(IoError::NotPermitted);
        }
        let place = self.capacity.take().ok_or(IoError::LimitExceeded)?;
        let stream = match TcpStream::connect(target) {
            Ok(stream) => stream,
            Err(e) => return Err(connect_error(&e)),
        };
        let _ = stream.set_nodelay(true);
        let phase = Phase::Connecting {
            deadline: Instant::now() + CONNECT_TIMEOUT,
        };
        let id = self
            .insert(stream, target, self.caller, phase, place)
            .map_err(|_| IoError::LimitExceeded)?;
        debug!(conn = id, %target, "connecting");
        Ok(id)
    }

    fn log_denied(&mut self, addr: &str, why: &str) {
        if self.denied_log.allow() {
            warn!(addr, why, "guest connect denied");
        }
    }
}

/// The guest's word for why an outbound connection failed. A reset means the
/// handshake did complete and the other end dropped it before the host noticed.
pub(super) fn connect_error(error: &io::Error) -> IoError {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => IoError::Refused,
        io::ErrorKind::PermissionDenied => IoError::NotPermitted,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => IoError::Reset,
        _ => IoError::Unreachable,
    }
}

/// Writes to a socket, retrying only on EINTR.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
