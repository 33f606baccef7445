//! The host side of the guest's `io` interface, and the readiness bookkeeping that
//! turns mio's edges into the guest's level-triggered batches.
//!
//! Every call here is non-blocking: at most one syscall, or none when the flags
//! already know the answer (a read on a drained socket answers `would-block` without
//! asking the kernel).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use tracing::debug;

use crate::conn_table::{ConnTable, slot_of};
use crate::connection::{Connection, Owner, Phase};
use crate::limits::{CLOSE_LINGER, Limits, MAX_READ_CHUNK};
use crate::timers::Timers;
use crate::wit::{Conn, Event, IoError, ReadResult, WriteResult};

/// Connections, timers and limits: everything a guest's I/O calls touch.
///
/// The loop owns it and lends it to the handler for the length of one batch.
#[derive(Debug, Default)]
pub struct Net {
    conns: ConnTable,
    /// Slots to look at before the next batch: touched since the last one, or still
    /// ready. Each slot is in it at most once (`Connection::queued`).
    ready: Vec<usize>,
    timers: Timers,
    limits: Limits,
    /// The guest instance whose call is running: it may only touch its own connections.
    caller: Owner,
    /// Connections the guest closed that still have bytes to send.
    closing: usize,
    /// Where reads land before they are copied into the guest's answer; allocated once.
    scratch: Vec<u8>,
}

impl Net {
    /// An empty table with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Connections held, the closing ones included.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Sets which guest instance the next calls come from.
    pub fn set_caller(&mut self, owner: Owner) {
        self.caller = owner;
    }

    // ---- the guest's `io` interface -------------------------------------------------

    /// `read`: up to `max` bytes, `would-block`, `eof`, or why not.
    pub fn read(&mut self, id: Conn, max: u32) -> ReadResult {
        if self.scratch.is_empty() {
            self.scratch = vec![0; MAX_READ_CHUNK];
        }
        let caller = self.caller;
        let Some(conn) = self.conns.get_mut(id).filter(|c| visible(c, caller)) else {
            return ReadResult::Failed(IoError::UnknownConn);
        };
        if conn.phase == Phase::Failed {
            return ReadResult::Failed(IoError::Reset);
        }
        if conn.eof_seen {
            return ReadResult::Eof;
        }
        if !conn.readable {
            return ReadResult::WouldBlock;
        }
        let want = (max as usize).min(MAX_READ_CHUNK);
        if want == 0 {
            return ReadResult::Data(Vec::new());
        }
        loop {
            return match conn.stream.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    conn.readable = false;
                    conn.eof_seen = true;
                    ReadResult::Eof
                }
                Ok(n) => {
                    // A short read drained the socket: new bytes bring a new edge. Not
                    // so for an end-of-stream already queued, which must still be read.
                    if n < want && !conn.peer_closed {
                        conn.readable = false;
                    }
                    ReadResult::Data(self.scratch[..n].to_vec())
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    ReadResult::WouldBlock
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    fail(conn, &mut self.ready, &e);
                    ReadResult::Failed(IoError::Reset)
                }
            };
        }
    }

    /// `write`: sends what the socket takes now, buffers the rest up to the bound.
    pub fn write(&mut self, id: Conn, data: &[u8]) -> WriteResult {
        let caller = self.caller;
        let Some(conn) = self.conns.get_mut(id).filter(|c| visible(c, caller)) else {
            return WriteResult::Failed(IoError::UnknownConn);
        };
        if conn.phase == Phase::Failed {
            return WriteResult::Failed(IoError::Reset);
        }
        if conn.write_shut {
            return WriteResult::Failed(IoError::Closed);
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
                    fail(conn, &mut self.ready, &e);
                    return WriteResult::Failed(IoError::Reset);
                }
            }
        }
        let taken = sent + conn.out.push(&data[sent..], self.limits.max_buffer);
        if taken < data.len() {
            // The guest has bytes left over: promise it a `writable` when there is room.
            conn.notify_writable = true;
        }
        if taken == 0 && !data.is_empty() {
            return WriteResult::WouldBlock;
        }
        WriteResult::Accepted(taken as u32)
    }

    /// `set-interest`.
    pub fn set_interest(&mut self, id: Conn, readable: bool, writable: bool) {
        let caller = self.caller;
        if let Some(conn) = self.conns.get_mut(id).filter(|c| visible(c, caller)) {
            conn.want_read = readable;
            conn.want_write = writable;
            if conn.reportable(self.limits.max_buffer) {
                enqueue(conn, &mut self.ready);
            }
        }
    }

    /// `shutdown-write`: the FIN follows the bytes already accepted.
    pub fn shutdown_write(&mut self, id: Conn) -> Result<(), IoError> {
        let caller = self.caller;
        let Some(conn) = self.conns.get_mut(id).filter(|c| visible(c, caller)) else {
            return Err(IoError::UnknownConn);
        };
        if conn.phase == Phase::Failed {
            return Err(IoError::Reset);
        }
        conn.write_shut = true;
        if conn.out.is_empty() {
            send_fin(conn);
        }
        Ok(())
    }

    /// `close`: the handle dies now; buffered bytes are still sent, then the socket
    /// is closed.
    pub fn close(&mut self, id: Conn) -> Result<(), IoError> {
        let caller = self.caller;
        if self
            .conns
            .get_mut(id)
            .filter(|c| visible(c, caller))
            .is_none()
        {
            return Err(IoError::UnknownConn);
        }
        self.start_close(slot_of(id));
        Ok(())
    }

    /// `peer`.
    pub fn peer(&mut self, id: Conn) -> Option<String> {
        let caller = self.caller;
        let conn = self.conns.get_mut(id).filter(|c| visible(c, caller))?;
        Some(conn.peer.to_string())
    }

    /// `set-timer`.
    pub fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), IoError> {
        if self.timers.len() >= self.limits.max_timers && !self.timers.is_armed(id) {
            return Err(IoError::LimitExceeded);
        }
        self.timers
            .set(id, Instant::now(), Duration::from_millis(after_ms));
        Ok(())
    }

    /// `cancel-timer`.
    pub fn cancel_timer(&mut self, id: u64) {
        self.timers.cancel(id);
    }

    // ---- the loop's side ------------------------------------------------------------

    /// Stores a freshly accepted connection and returns its handle, or gives the
    /// stream back when the table is full.
    pub fn insert(
        &mut self,
        stream: mio::net::TcpStream,
        peer: std::net::SocketAddr,
        owner: Owner,
    ) -> Result<(usize, Conn), mio::net::TcpStream> {
        let mut stream = Some(stream);
        let slot = self
            .conns
            .insert(|id| Connection::new(id, stream.take().expect("taken once"), peer, owner));
        match (slot, stream) {
            (Some(slot), _) => {
                let conn = self.conns.slot_mut(slot).expect("just inserted");
                Ok((slot, conn.id))
            }
            (None, Some(stream)) => Err(stream),
            (None, None) => unreachable!("the stream is only taken on insert"),
        }
    }

    /// Drops a connection the guest never heard of (it could not be registered).
    pub fn discard(&mut self, slot: usize) {
        self.conns.remove(slot);
    }

    /// The socket of a slot, to register it with the poller.
    pub fn stream_mut(&mut self, slot: usize) -> Option<&mut mio::net::TcpStream> {
        self.conns.slot_mut(slot).map(|c| &mut c.stream)
    }

    /// Records what mio reported for a connection's socket, and does the host's own
    /// part of the work: flushing buffered output, finishing a close.
    pub fn on_socket_event(&mut self, slot: usize, event: &MioEvent) {
        let max_buffer = self.limits.max_buffer;
        let Some(conn) = self.conns.slot_mut(slot) else {
            return;
        };
        if event.is_readable() || event.is_read_closed() {
            conn.readable = true;
        }
        if event.is_read_closed() {
            conn.peer_closed = true;
        }
        if event.is_writable() {
            conn.writable = true;
        }
        if let Phase::Closing { .. } = conn.phase {
            if event.is_error() || self.finish_closing(slot) {
                self.drop_conn(slot);
            }
            return;
        }
        if conn.phase == Phase::Failed {
            return;
        }
        if event.is_error() {
            let error = conn.stream.take_error().ok().flatten();
            let error = error.unwrap_or_else(|| io::ErrorKind::ConnectionReset.into());
            fail(conn, &mut self.ready, &error);
            return;
        }
        if conn.writable && !conn.out.is_empty() {
            flush(conn, &mut self.ready);
        }
        if conn.reportable(max_buffer) {
            enqueue(conn, &mut self.ready);
        }
    }

    /// Appends the events of every connection with something to report, and of
    /// every timer due, to `batch`. Failed connections are reported `hangup` once and
    /// released here.
    pub fn collect(&mut self, batch: &mut Vec<Event>) {
        let max_buffer = self.limits.max_buffer;
        let mut i = 0;
        while i < self.ready.len() {
            let slot = self.ready[i];
            let Some(conn) = self.conns.slot_mut(slot) else {
                self.ready.swap_remove(i);
                continue;
            };
            if conn.phase == Phase::Failed {
                batch.push(Event::Hangup(conn.id));
                self.ready.swap_remove(i);
                self.conns.remove(slot);
                continue;
            }
            let readable = conn.read_ready();
            let writable = conn.write_ready(max_buffer);
            if readable {
                batch.push(Event::Readable(conn.id));
            }
            if writable {
                batch.push(Event::Writable(conn.id));
                conn.notify_writable = false;
            }
            if readable || writable {
                i += 1;
            } else {
                conn.queued = false;
                self.ready.swap_remove(i);
            }
        }
        if !self.timers.is_empty() {
            self.timers
                .expire(Instant::now(), |id| batch.push(Event::Timer(id)));
        }
    }

    /// After a batch: forgets the connections that have nothing left to report, so
    /// the loop only skips its wait when there is work.
    pub fn prune(&mut self) {
        let max_buffer = self.limits.max_buffer;
        let conns = &mut self.conns;
        self.ready.retain(|&slot| match conns.slot_mut(slot) {
            Some(conn) if conn.reportable(max_buffer) => true,
            Some(conn) => {
                conn.queued = false;
                false
            }
            None => false,
        });
    }

    /// Whether a batch is due without waiting for the kernel.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// How long the loop may sleep: until the next timer, or the next closing
    /// connection's deadline check.
    pub fn next_wake(&mut self, now: Instant) -> Option<Duration> {
        let timer = self
            .timers
            .next_deadline()
            .map(|at| at.saturating_duration_since(now));
        let linger = (self.closing > 0).then_some(Duration::from_secs(1));
        match (timer, linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops closing connections whose peer did not take their last bytes in time.
    pub fn sweep_closing(&mut self, now: Instant) {
        if self.closing == 0 {
            return;
        }
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Closing { deadline } if deadline <= now))
            .map(|(slot, _)| slot)
            .collect();
        for slot in expired {
            debug!(
                slot,
                "dropping a closed connection whose peer did not read its last bytes"
            );
            self.drop_conn(slot);
        }
    }

    /// Closes every connection the guest `owner` holds, as if it had called `close`
    /// on each: bytes it wrote are still sent. Used when the guest is cut off.
    pub fn close_owned_by(&mut self, owner: Owner) -> usize {
        let owned: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner == owner && !matches!(c.phase, Phase::Closing { .. }))
            .map(|(slot, _)| slot)
            .collect();
        for &slot in &owned {
            self.start_close(slot);
        }
        owned.len()
    }

    /// Drops every timer: a fresh guest instance starts with none.
    pub fn clear_timers(&mut self) {
        self.timers.clear();
    }

    /// Moves a connection from the guest's hands to the host's: flush, FIN, close.
    fn start_close(&mut self, slot: usize) {
        let Some(conn) = self.conns.slot_mut(slot) else {
            return;
        };
        if let Phase::Closing { .. } = conn.phase {
            return;
        }
        conn.phase = Phase::Closing {
            deadline: Instant::now() + CLOSE_LINGER,
        };
        self.closing += 1;
        if self.finish_closing(slot) {
            self.drop_conn(slot);
        }
    }

    /// Pushes a closing connection's last bytes; true when it can be dropped now.
    fn finish_closing(&mut self, slot: usize) -> bool {
        let scratch = &mut self.scratch;
        let Some(conn) = self.conns.slot_mut(slot) else {
            return false;
        };
        match conn.out.flush_to(&mut conn.stream) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(_) => return true,
        }
        send_fin(conn);
        // Unread input at close makes the kernel send a reset, which can destroy
        // the answer in flight at the peer: read what is there first.
        if scratch.is_empty() {
            scratch.resize(MAX_READ_CHUNK, 0);
        }
        while let Ok(n) = conn.stream.read(scratch) {
            if n == 0 {
                break;
            }
        }
        true
    }

    fn drop_conn(&mut self, slot: usize) {
        if let Some(conn) = self.conns.remove(slot)
            && let Phase::Closing { .. } = conn.phase
        {
            self.closing -= 1;
        }
    }
}

/// Whether the calling guest may see this connection.
fn visible(conn: &Connection, caller: Owner) -> bool {
    conn.owner == caller && !matches!(conn.phase, Phase::Closing { .. })
}

fn enqueue(conn: &mut Connection, ready: &mut Vec<usize>) {
    if !conn.queued {
        conn.queued = true;
        ready.push(slot_of(conn.id));
    }
}

/// Marks a connection failed; the guest hears `hangup` in the next batch.
fn fail(conn: &mut Connection, ready: &mut Vec<usize>, error: &io::Error) {
    debug!(conn = conn.id, peer = %conn.peer, %error, "connection failed");
    conn.phase = Phase::Failed;
    enqueue(conn, ready);
}

/// Writes to a socket, retrying only on EINTR.
fn write_some(stream: &mut mio::net::TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sends buffered bytes after a writable edge; sends the FIN once they are out.
fn flush(conn: &mut Connection, ready: &mut Vec<usize>) {
    match conn.out.flush_to(&mut conn.stream) {
        Ok(true) => {
            if conn.write_shut {
                send_fin(conn);
            }
        }
        Ok(false) => conn.writable = false,
        Err(e) => fail(conn, ready, &e),
    }
}

fn send_fin(conn: &mut Connection) {
    if !conn.fin_sent {
        conn.fin_sent = true;
        // NotConnected only means the peer is gone already; the FIN is moot then.
        let _ = conn.stream.shutdown(Shutdown::Write);
    }
}
