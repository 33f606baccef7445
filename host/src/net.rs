//! The host side of the guest's `io` interface, and the readiness bookkeeping that
//! turns mio's edges into the guest's level-triggered batches.
//!
//! Every call here is non-blocking: at most one syscall, or none when the flags
//! already know the answer (a read on a drained socket answers `would-block` without
//! asking the kernel).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tracing::{debug, warn};

use crate::allow::AllowList;
use crate::conn_table::{ConnTable, slot_of};
use crate::connection::{Connection, Owner, Phase};
use crate::handler::Batch;
use crate::limits::{CLOSE_LINGER, CONNECT_TIMEOUT, LINGER_AFTER_FIN, Limits, MAX_READ_CHUNK};
use crate::rate_limit::RateLimit;
use crate::timers::Timers;
use crate::wit::{Conn, Event, HangupInfo, IoError, ReadResult, WriteResult};

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
    /// Where outbound connections may go.
    allow: AllowList,
    /// Registers the sockets of outbound connections; `None` in the placeholder a
    /// guest store holds between calls.
    registry: Option<Registry>,
    /// The guest instance whose call is running: it may only touch its own connections.
    caller: Owner,
    /// Connections each guest instance holds (not counting those it closed, which
    /// the host is finishing): an instance per connection ends when this is zero.
    owned: HashMap<Owner, usize>,
    /// Connections with a deadline (connecting, or closing with bytes left to send).
    with_deadline: usize,
    /// Where reads land before they are copied into the guest's answer; allocated once.
    scratch: Vec<u8>,
    denied_log: RateLimit,
}

impl Net {
    /// An empty table with these limits; `registry` registers new sockets.
    pub fn new(limits: Limits, allow: AllowList, registry: Registry) -> Self {
        Self {
            limits,
            allow,
            registry: Some(registry),
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

    /// Connections the guest instance `owner` still holds.
    pub fn owned_by(&self, owner: Owner) -> usize {
        self.owned.get(&owner).copied().unwrap_or(0)
    }

    /// Bytes the host holds unsent for a connection the current caller may see.
    pub fn buffered(&mut self, id: Conn) -> Option<usize> {
        let caller = self.caller;
        self.conns
            .get_mut(id)
            .filter(|c| visible(c, caller))
            .map(|c| c.out.len())
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
        if let Phase::Failed(error) = conn.phase {
            return ReadResult::Failed(error);
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
        if let Phase::Failed(error) = conn.phase {
            return WriteResult::Failed(error);
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
        if let Phase::Failed(error) = conn.phase {
            return Err(error);
        }
        conn.write_shut = true;
        if conn.out.is_empty() && conn.phase == Phase::Open {
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
        let key = (self.caller, id);
        if self.timers.armed_by(self.caller) >= self.limits.max_timers && !self.timers.is_armed(key)
        {
            return Err(IoError::LimitExceeded);
        }
        self.timers
            .set(key, Instant::now(), Duration::from_millis(after_ms));
        Ok(())
    }

    /// `cancel-timer`.
    pub fn cancel_timer(&mut self, id: u64) {
        self.timers.cancel((self.caller, id));
    }

    /// `connect`: starts a non-blocking connect to an allowed `ip:port`.
    pub fn connect(&mut self, addr: &str) -> Result<Conn, IoError> {
        let Ok(target) = addr.parse::<SocketAddr>() else {
            self.log_denied(addr, "not an ip:port");
            return Err(IoError::NotPermitted);
        };
        if !self.allow.permits(target) {
            self.log_denied(addr, "no --allow-connect matches");
            return Err(IoError::NotPermitted);
        }
        if self.conns.len() >= self.limits.max_connections {
            return Err(IoError::LimitExceeded);
        }
        let stream = match TcpStream::connect(target) {
            Ok(stream) => stream,
            Err(e) => return Err(connect_error(&e)),
        };
        let _ = stream.set_nodelay(true);
        let phase = Phase::Connecting {
            deadline: Instant::now() + CONNECT_TIMEOUT,
        };
        let (_, id) = self
            .insert(stream, target, self.caller, phase)
            .map_err(|_| IoError::LimitExceeded)?;
        debug!(conn = id, %target, "connecting");
        Ok(id)
    }

    fn log_denied(&mut self, addr: &str, why: &str) {
        if self.denied_log.allow() {
            warn!(addr, why, "guest connect denied");
        }
    }

    // ---- the loop's side ------------------------------------------------------------

    /// Stores and registers a new connection, and returns its slot and handle. An
    /// error means it was not kept (the table is full, or epoll refused it); the
    /// stream is closed then.
    pub fn insert(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        owner: Owner,
        phase: Phase,
    ) -> io::Result<(usize, Conn)> {
        let mut stream = Some(stream);
        let slot = self
            .conns
            .insert(|id| {
                Connection::new(id, stream.take().expect("taken once"), peer, owner, phase)
            })
            .ok_or_else(|| io::Error::other("every connection slot is taken"))?;
        let conn = self.conns.slot_mut(slot).expect("just inserted");
        let id = conn.id;
        if let Some(registry) = &self.registry {
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut conn.stream, Token(slot), interest) {
                self.conns.remove(slot);
                return Err(e);
            }
        }
        *self.owned.entry(owner).or_default() += 1;
        if has_deadline(phase) {
            self.with_deadline += 1;
        }
        Ok((slot, id))
    }

    /// Records what mio reported for a connection's socket, and does the host's own
    /// part of the work: completing a connect, flushing buffered output, finishing a
    /// close.
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
        match conn.phase {
            Phase::Closing { .. } => {
                if event.is_error() || self.finish_closing(slot) {
                    self.remove(slot);
                }
                return;
            }
            Phase::Failed(_) => return,
            Phase::Connecting { .. } => {
                if !(event.is_writable() || event.is_error()) {
                    return;
                }
                match connect_outcome(conn) {
                    None => return, // a spurious edge: still connecting
                    Some(Err(error)) => {
                        self.with_deadline -= 1;
                        conn.phase = Phase::Failed(error);
                        enqueue(conn, &mut self.ready);
                        return;
                    }
                    Some(Ok(())) => {
                        self.with_deadline -= 1;
                        conn.phase = Phase::Open;
                        conn.announce_connected = true;
                        if conn.write_shut && conn.out.is_empty() {
                            send_fin(conn);
                        }
                    }
                }
            }
            Phase::Open => {}
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
    pub fn collect(&mut self, batch: &mut Batch) {
        let max_buffer = self.limits.max_buffer;
        let mut i = 0;
        while i < self.ready.len() {
            let slot = self.ready[i];
            let Some(conn) = self.conns.slot_mut(slot) else {
                self.ready.swap_remove(i);
                continue;
            };
            let owner = conn.owner;
            if let Phase::Failed(error) = conn.phase {
                batch.push(
                    owner,
                    Event::Hangup(HangupInfo {
                        conn: conn.id,
                        error,
                    }),
                );
                self.ready.swap_remove(i);
                self.remove(slot);
                continue;
            }
            if std::mem::take(&mut conn.announce_connected) {
                batch.push(owner, Event::Connected(conn.id));
            }
            let readable = conn.read_ready();
            let writable = conn.write_ready(max_buffer);
            if readable {
                batch.push(owner, Event::Readable(conn.id));
            }
            if writable {
                batch.push(owner, Event::Writable(conn.id));
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
            self.timers.expire(Instant::now(), |(owner, id)| {
                batch.push(owner, Event::Timer(id))
            });
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

    /// How long the loop may sleep: until the next timer, or the next check of
    /// connection deadlines.
    pub fn next_wake(&mut self, now: Instant) -> Option<Duration> {
        let timer = self
            .timers
            .next_deadline()
            .map(|at| at.saturating_duration_since(now));
        let deadlines = (self.with_deadline > 0).then_some(Duration::from_secs(1));
        match (timer, deadlines) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Enforces connection deadlines: drops closing connections whose peer did not
    /// take their last bytes in time, and fails connects that did not complete.
    pub fn sweep_deadlines(&mut self, now: Instant) {
        if self.with_deadline == 0 {
            return;
        }
        let expired: Vec<(usize, Phase)> = self
            .conns
            .iter()
            .filter_map(|(slot, c)| match c.phase {
                Phase::Closing { deadline } | Phase::Connecting { deadline } if deadline <= now => {
                    Some((slot, c.phase))
                }
                _ => None,
            })
            .collect();
        for (slot, phase) in expired {
            if let Phase::Closing { .. } = phase {
                debug!(
                    slot,
                    "dropping a closed connection whose peer did not read its last bytes"
                );
                self.remove(slot);
            } else if let Some(conn) = self.conns.slot_mut(slot) {
                self.with_deadline -= 1;
                conn.phase = Phase::Failed(IoError::Unreachable);
                enqueue(conn, &mut self.ready);
            }
        }
    }

    /// Closes every connection the guest `owner` holds, as if it had called `close`
    /// on each: bytes it wrote are still sent. Used when the guest is cut off.
    pub fn close_owned_by(&mut self, owner: Owner) -> usize {
        if self.owned_by(owner) == 0 {
            return 0;
        }
        let owned: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner == owner && !c.is_closing())
            .map(|(slot, _)| slot)
            .collect();
        for &slot in &owned {
            self.start_close(slot);
        }
        owned.len()
    }

    /// Hands every connection `old` holds to `new` (a hot swap's handoff), and
    /// returns their handles. Their buffered bytes and readiness stay as they are.
    pub fn reassign(&mut self, old: Owner, new: Owner) -> Vec<Conn> {
        let moved: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner == old && !c.is_closing())
            .map(|(slot, _)| slot)
            .collect();
        let max_buffer = self.limits.max_buffer;
        let mut handles = Vec::with_capacity(moved.len());
        for slot in moved {
            let Some(conn) = self.conns.slot_mut(slot) else {
                continue;
            };
            conn.owner = new;
            handles.push(conn.id);
            if conn.reportable(max_buffer) {
                enqueue(conn, &mut self.ready);
            }
        }
        if let Some(count) = self.owned.remove(&old) {
            *self.owned.entry(new).or_default() += count;
        }
        handles
    }

    /// Hands the timers `old` armed to `new`, due when they were.
    pub fn reassign_timers(&mut self, old: Owner, new: Owner) {
        self.timers.reassign(old, new);
    }

    /// Drops every timer of a guest instance: a fresh one starts with none.
    pub fn clear_timers(&mut self, owner: Owner) {
        self.timers.clear_owner(owner);
    }

    /// Drops every connection at once, sent or not: the end of a shutdown.
    pub fn drop_all(&mut self) -> usize {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for &slot in &slots {
            self.remove(slot);
        }
        self.ready.clear();
        slots.len()
    }

    /// Moves a connection from the guest's hands to the host's: flush, FIN, close.
    fn start_close(&mut self, slot: usize) {
        let Some(conn) = self.conns.slot_mut(slot) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        if !has_deadline(conn.phase) {
            self.with_deadline += 1;
        }
        let owner = conn.owner;
        conn.phase = Phase::Closing {
            deadline: Instant::now() + CLOSE_LINGER,
        };
        self.disown(owner);
        if self.finish_closing(slot) {
            self.remove(slot);
        }
    }

    /// Moves a closing connection on: its last bytes out, then the FIN, then a
    /// lingering wait for the peer's own end. True when it can be dropped now.
    ///
    /// Closing a socket while input is unread, or while input is still to come,
    /// makes the kernel answer with a reset, which destroys whatever of ours the
    /// kernel has not sent yet and what the peer has not read yet. So after the FIN
    /// the host keeps reading and discarding until the peer's end-of-stream (or the
    /// linger deadline), like nginx's lingering close.
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
        if !conn.fin_sent {
            send_fin(conn);
            if let Phase::Closing { deadline } = &mut conn.phase {
                *deadline = (*deadline).min(Instant::now() + LINGER_AFTER_FIN);
            }
        }
        if scratch.is_empty() {
            scratch.resize(MAX_READ_CHUNK, 0);
        }
        loop {
            match conn.stream.read(scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Takes a connection out of the table (closing its socket), keeping the counts.
    fn remove(&mut self, slot: usize) {
        let Some(conn) = self.conns.remove(slot) else {
            return;
        };
        if has_deadline(conn.phase) {
            self.with_deadline -= 1;
        }
        if !conn.is_closing() {
            self.disown(conn.owner);
        }
    }

    fn disown(&mut self, owner: Owner) {
        if let Some(count) = self.owned.get_mut(&owner) {
            *count -= 1;
            if *count == 0 {
                self.owned.remove(&owner);
            }
        }
    }
}

/// Whether the calling guest may see this connection.
fn visible(conn: &Connection, caller: Owner) -> bool {
    conn.owner == caller && !conn.is_closing()
}

fn has_deadline(phase: Phase) -> bool {
    matches!(phase, Phase::Closing { .. } | Phase::Connecting { .. })
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
    conn.phase = Phase::Failed(IoError::Reset);
    enqueue(conn, ready);
}

/// How an outbound connect ended, after a writable or error edge: `None` while it
/// is still under way.
fn connect_outcome(conn: &mut Connection) -> Option<Result<(), IoError>> {
    let error = match conn.stream.take_error() {
        Ok(None) => match conn.stream.peer_addr() {
            Ok(_) => return Some(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
            Err(e) => e,
        },
        Ok(Some(e)) | Err(e) => e,
    };
    debug!(conn = conn.id, peer = %conn.peer, %error, "connect failed");
    Some(Err(connect_error(&error)))
}

/// The guest's word for why an outbound connection failed. A reset means the
/// handshake did complete and the other end dropped it before the host noticed.
fn connect_error(error: &io::Error) -> IoError {
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
