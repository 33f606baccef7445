//! [`Net`]: the host side of the guest's `io` interface, and the readiness bookkeeping
//! that turns mio's edges into the guest's level-triggered batches.
//!
//! Every call here is non-blocking. Most make one syscall, or none when the flags
//! already know the answer (a read on a drained socket answers `would-block` without
//! asking the kernel). A few make a short, bounded series: `connect` creates, connects
//! and registers a socket; `close` flushes what is buffered, sends the FIN and drains
//! what the peer already sent; `read` retries only when interrupted by a signal.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tracing::{debug, info, warn};

use super::allow::AllowList;
use super::batch::Batch;
use super::capacity::{Capacity, Place};
use super::conn_table::{ConnTable, slot_of};
use super::connection::{Connection, Phase};
use super::owners::{HOST, Owner, Owners};
use super::tape::Tapes;
use super::timers::Timers;
use super::tls::{Failure, Tls};
use crate::limits::{
    CLOSE_LINGER, CONNECT_TIMEOUT, DEADLINE_CHECK, LINGER_AFTER_FIN, Limits, MAX_READ_CHUNK,
    MAX_TIMER_DELAY_MS,
};
use crate::metrics::{NetCounters, NetGauges};
use crate::rate_limit::RateLimit;
use crate::wit::{Conn, Event, HangupInfo, IoError, ReadResult, TlsInfo, WriteResult};

/// How the host ends a connection the guest closed, once its last bytes are out.
///
/// Once a socket is closed, the kernel answers any byte the peer sends with a reset,
/// which discards whatever of the answer the kernel has not sent yet. A lingering
/// close sends the FIN and keeps reading (and discarding) until the peer's own end,
/// at the cost of an extra turn and three syscalls per connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lingering {
    /// Linger when input is pending at the close (bytes the guest left unread, or
    /// that arrived while the last bytes went out) or the kernel has not sent all of
    /// the answer yet; otherwise every byte is on the wire, and the host closes at
    /// once. A peer that starts sending only then may be reset, but loses nothing
    /// already sent (on a network that loses a segment, a retransmission of it).
    #[default]
    Auto,
    /// Linger after every close, up to 5 s: no byte the peer sends late can destroy
    /// an answer.
    Always,
}

/// Connections, timers and limits: everything a guest's I/O calls touch.
///
/// The loop owns it and lends it to the handler for the length of one batch.
#[derive(Debug, Default)]
pub struct Net {
    conns: ConnTable<Connection>,
    agenda: Agenda,
    timers: Timers,
    /// What each guest instance holds: its connections and its timers.
    owners: Owners,
    limits: Limits,
    /// Where outbound connections may go.
    allow: AllowList,
    /// Places for connections, shared with the other workers.
    capacity: Capacity,
    /// How a closed connection ends.
    lingering: Lingering,
    /// What it counts for the admin listener.
    counters: NetCounters,
    /// Bytes held in every connection's write buffer, kept as they change.
    buffered: u64,
    /// Registers the sockets of outbound connections; `None` in the placeholder a
    /// guest store holds between calls.
    registry: Option<Registry>,
    /// The guest instance whose call is running: it may only touch its own connections.
    caller: Owner,
    /// When connection deadlines are next checked.
    next_check: Option<Instant>,
    /// Where reads land before they are copied into the guest's answer; allocated once.
    scratch: Vec<u8>,
    denied_log: RateLimit,
    /// TLS connections whose handshake finished this turn, for the loop to give to
    /// the guest.
    handshaken: Vec<usize>,
    tls_log: RateLimit,
    /// While a canary runs: what the serving generation reads and writes on the
    /// connections it samples.
    tapes: Option<Box<Tapes>>,
}

/// What the loop must come back to: the connections with something to report, and
/// how many connections have a deadline to enforce.
///
/// Every change of a connection's phase goes through [`Agenda::set_phase`], so the
/// count cannot drift from the phases it counts.
#[derive(Debug, Default)]
struct Agenda {
    /// Slots to look at before the next batch: touched since the last one, or still
    /// ready. Each slot is in it at most once (`Connection::queued`).
    ready: Vec<usize>,
    /// Connections whose phase has a deadline (connecting, or closing).
    with_deadline: usize,
}

impl Agenda {
    /// Puts a connection on the list for the next batch.
    fn enqueue(&mut self, conn: &mut Connection) {
        if !conn.queued {
            conn.queued = true;
            self.ready.push(slot_of(conn.id));
        }
    }

    /// Moves a connection to `phase`.
    fn set_phase(&mut self, conn: &mut Connection, phase: Phase) {
        self.forget(conn);
        conn.phase = phase;
        self.note(conn);
    }

    /// Counts a connection that enters the table.
    fn note(&mut self, conn: &Connection) {
        self.with_deadline += usize::from(conn.has_deadline());
    }

    /// Stops counting a connection that leaves the table (or its phase).
    fn forget(&mut self, conn: &Connection) {
        self.with_deadline -= usize::from(conn.has_deadline());
    }

    /// Marks a connection failed; the guest hears `hangup` in the next batch.
    fn fail(&mut self, conn: &mut Connection, error: &io::Error) {
        debug!(conn = conn.id, peer = %conn.peer, %error, "connection failed");
        self.set_phase(conn, Phase::Failed(IoError::Reset));
        self.enqueue(conn);
    }
}

/// The connection `id` if the calling guest instance may use it.
fn visible(conns: &mut ConnTable<Connection>, id: Conn, caller: Owner) -> Option<&mut Connection> {
    conns.get_mut(id).filter(|conn| conn.visible_to(caller))
}

impl Net {
    /// An empty table with these limits; `registry` registers new sockets, and
    /// every connection takes a place in `capacity`.
    pub fn new(limits: Limits, allow: AllowList, registry: Registry, capacity: Capacity) -> Self {
        Self {
            limits,
            allow,
            capacity,
            registry: Some(registry),
            ..Self::default()
        }
    }

    /// The places for connections, across every worker.
    pub fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    /// What it counted so far (connections, bytes), for `/metrics`.
    pub fn counters_mut(&mut self) -> &mut NetCounters {
        &mut self.counters
    }

    /// What it counted, and its gauges now, for `/metrics`.
    pub fn metrics(&self) -> (&NetCounters, NetGauges) {
        let gauges = NetGauges {
            open: self.conns.len() as u64,
            buffered: self.buffered,
            timers: self.timers.len() as u64,
        };
        (&self.counters, gauges)
    }

    /// Sets how closed connections end (`--lingering-close`).
    pub fn set_lingering(&mut self, lingering: Lingering) {
        self.lingering = lingering;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Connections this loop holds, the closing ones included.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections the guest instance `owner` still holds (not counting those it
    /// closed, which the host is finishing).
    pub fn owned_by(&self, owner: Owner) -> usize {
        self.owners.get(owner).conns
    }

    /// Bytes the host holds unsent for a connection the current caller may see.
    pub fn buffered(&mut self, id: Conn) -> Option<usize> {
        visible(&mut self.conns, id, self.caller).map(|c| c.out.len())
    }

    /// Sets which guest instance the next calls come from.
    pub fn set_caller(&mut self, owner: Owner) {
        self.caller = owner;
    }

    // ---- the guest's `io` interface -------------------------------------------------

    /// `read`: up to `max` bytes, `would-block`, `eof`, or why not.
    pub fn read(&mut self, id: Conn, max: u32) -> ReadResult {
        let result = self.read_now(id, max);
        if let Some(tapes) = self.tapes.as_deref_mut() {
            tapes.on_read(id, &result);
        }
        result
    }

    fn read_now(&mut self, id: Conn, max: u32) -> ReadResult {
        if self.scratch.is_empty() {
            self.scratch = vec![0; MAX_READ_CHUNK];
        }
        let Some(conn) = visible(&mut self.conns, id, self.caller) else {
            return ReadResult::Failed(IoError::UnknownConn);
        };
        if let Phase::Failed(error) = conn.phase {
            return ReadResult::Failed(error);
        }
        if conn.eof_seen {
            return ReadResult::Eof;
        }
        let want = (max as usize).min(MAX_READ_CHUNK);
        if conn.tls.is_some() {
            let buf = &mut self.scratch[..want];
            return read_tls(
                conn,
                buf,
                &mut self.agenda,
                &mut self.counters,
                &mut self.buffered,
            );
        }
        if !conn.readable {
            return ReadResult::WouldBlock;
        }
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
                    self.counters.bytes_read += n as u64;
                    ReadResult::Data(self.scratch[..n].to_vec())
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    ReadResult::WouldBlock
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.agenda.fail(conn, &e);
                    ReadResult::Failed(IoError::Reset)
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
        if conn.out.is_empty() && conn.phase == Phase::Open {
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

    /// Starts or stops recording for a canary: with `Some`, [`Tapes`] that sampled
    /// connections are recorded into; answers the ones it replaces.
    pub fn set_tapes(&mut self, tapes: Option<Box<Tapes>>) -> Option<Box<Tapes>> {
        std::mem::replace(&mut self.tapes, tapes)
    }

    /// The canary's tapes, while it runs.
    pub fn tapes(&mut self) -> Option<&mut Tapes> {
        self.tapes.as_deref_mut()
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

    /// `set-timer`.
    pub fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), IoError> {
        let key = (self.caller, id);
        let armed = self.owners.get(self.caller).timers;
        if armed >= self.limits.max_timers && !self.timers.is_armed(key) {
            return Err(IoError::LimitExceeded);
        }
        if after_ms > MAX_TIMER_DELAY_MS {
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

    // ---- the loop's side ------------------------------------------------------------

    /// Stores and registers a new connection for `owner`, in the place it took,
    /// and returns its handle. An error means it was not kept (the table is full, or
    /// epoll refused it); the stream is closed and the place given back then.
    pub fn insert(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        owner: Owner,
        phase: Phase,
        place: Place,
    ) -> io::Result<Conn> {
        let mut parts = Some((stream, place));
        let slot = self
            .conns
            .insert(|id| {
                let (stream, place) = parts.take().expect("taken once");
                Connection::new(id, stream, peer, owner, phase, place)
            })
            .ok_or_else(|| io::Error::other("every connection slot is taken"))?;
        let conn = self.conns.slot_mut(slot).expect("just inserted");
        if let Some(registry) = &self.registry {
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut conn.stream, Token(slot), interest) {
                self.conns.remove(slot);
                return Err(e);
            }
        }
        let id = conn.id;
        self.agenda.note(conn);
        self.owners.conn_added(owner);
        Ok(id)
    }

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
    fn advance_handshake(&mut self, slot: usize) {
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
    fn write_tls(&mut self, slot: usize, data: &[u8]) -> WriteResult {
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
            Phase::Handshaking { .. } => {
                if event.is_error() {
                    self.counters.tls_handshakes_failed += 1;
                    self.remove(slot);
                } else {
                    self.advance_handshake(slot);
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
                        self.agenda.set_phase(conn, Phase::Failed(error));
                        self.agenda.enqueue(conn);
                        return;
                    }
                    Some(Ok(())) => {
                        self.agenda.set_phase(conn, Phase::Open);
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
            self.agenda.fail(conn, &error);
            return;
        }
        if conn.writable && !conn.out.is_empty() {
            let before = conn.out.len();
            flush(conn, &mut self.agenda);
            self.buffered -= (before - conn.out.len()) as u64;
        }
        if conn.reportable(max_buffer) {
            self.agenda.enqueue(conn);
        }
    }

    /// Appends the events of every connection with something to report, and of
    /// every timer due, to `batch`, each for its owner. Failed connections are
    /// reported `hangup` once and released here.
    pub fn collect(&mut self, batch: &mut Batch) {
        let max_buffer = self.limits.max_buffer;
        let mut i = 0;
        while i < self.agenda.ready.len() {
            let slot = self.agenda.ready[i];
            let Some(conn) = self.conns.slot_mut(slot) else {
                self.agenda.ready.swap_remove(i);
                continue;
            };
            let owner = conn.owner;
            if let Phase::Failed(error) = conn.phase {
                let hangup = HangupInfo {
                    conn: conn.id,
                    error,
                };
                if let Some(tapes) = self.tapes.as_deref_mut() {
                    tapes.on_hangup(conn.id);
                }
                batch.push(owner, Event::Hangup(hangup));
                self.agenda.ready.swap_remove(i);
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
                self.agenda.ready.swap_remove(i);
            }
        }
        if !self.timers.is_empty() {
            let owners = &mut self.owners;
            self.timers.expire(Instant::now(), |(owner, id)| {
                owners.timers_gone(owner, 1);
                batch.push(owner, Event::Timer(id));
            });
        }
    }

    /// After a batch: forgets the connections that have nothing left to report, so
    /// the loop only skips its wait when there is work.
    pub fn prune(&mut self) {
        let max_buffer = self.limits.max_buffer;
        let conns = &mut self.conns;
        self.agenda
            .ready
            .retain(|&slot| match conns.slot_mut(slot) {
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
        !self.agenda.ready.is_empty()
    }

    /// How long the loop may sleep: until the next timer, or the next check of
    /// connection deadlines.
    pub fn next_wake(&mut self, now: Instant) -> Option<Duration> {
        let timer = self
            .timers
            .next_deadline()
            .map(|at| at.saturating_duration_since(now));
        let check = (self.agenda.with_deadline > 0).then(|| {
            self.next_check
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
        });
        match (timer, check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Enforces connection deadlines, at most once per [`DEADLINE_CHECK`]: drops
    /// closing connections whose peer did not take their last bytes in time, and
    /// fails connects that did not complete.
    pub fn sweep_deadlines(&mut self, now: Instant) {
        if self.agenda.with_deadline == 0 || self.next_check.is_some_and(|at| now < at) {
            return;
        }
        self.next_check = Some(now + DEADLINE_CHECK);
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| match c.phase {
                Phase::Closing { deadline }
                | Phase::Connecting { deadline }
                | Phase::Handshaking { deadline } => deadline <= now,
                _ => false,
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in expired {
            let Some(conn) = self.conns.slot_mut(slot) else {
                continue;
            };
            if conn.is_closing() {
                debug!(
                    slot,
                    "dropping a closed connection whose peer did not read its last bytes"
                );
                self.remove(slot);
            } else if let Phase::Handshaking { .. } = conn.phase {
                self.counters.tls_handshakes_timed_out += 1;
                if self.tls_log.allow() {
                    info!(peer = %conn.peer, "TLS handshake not done in time; closing the connection");
                }
                self.remove(slot);
            } else {
                self.agenda
                    .set_phase(conn, Phase::Failed(IoError::Unreachable));
                self.agenda.enqueue(conn);
            }
        }
    }

    /// Cuts a guest instance off: closes every connection it holds, as if it had
    /// called `close` on each (bytes it wrote are still sent), and disarms its
    /// timers. Returns how many connections it held.
    pub fn release(&mut self, owner: Owner) -> usize {
        let held = self.owners.get(owner);
        if held.timers > 0 {
            let disarmed = self.timers.clear_owner(owner);
            self.owners.timers_gone(owner, disarmed);
        }
        if held.conns == 0 {
            return 0;
        }
        let owned = self.slots_of(owner);
        for &slot in &owned {
            self.start_close(slot);
        }
        owned.len()
    }

    /// Hands everything `old` holds to `new` (a hot swap's handoff): its connections,
    /// whose buffered bytes and readiness stay as they are, and its timers, due when
    /// they were. Returns the handles of the connections.
    pub fn hand_over(&mut self, old: Owner, new: Owner) -> Vec<Conn> {
        let max_buffer = self.limits.max_buffer;
        let moved = self.slots_of(old);
        let mut handles = Vec::with_capacity(moved.len());
        for slot in moved {
            let Some(conn) = self.conns.slot_mut(slot) else {
                continue;
            };
            conn.owner = new;
            handles.push(conn.id);
            if conn.reportable(max_buffer) {
                self.agenda.enqueue(conn);
            }
        }
        self.timers.reassign(old, new);
        self.owners.transfer(old, new);
        handles
    }

    /// Drops every connection at once, sent or not: the end of a shutdown.
    pub fn drop_all(&mut self) -> usize {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for &slot in &slots {
            self.remove(slot);
        }
        self.agenda.ready.clear();
        slots.len()
    }

    /// The slots of the connections `owner` may use: for cutting off or handing over
    /// an instance, not for the hot path.
    fn slots_of(&self, owner: Owner) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| c.visible_to(owner))
            .map(|(slot, _)| slot)
            .collect()
    }

    /// Moves a connection from the guest's hands to the host's: flush, FIN, close.
    fn start_close(&mut self, slot: usize) {
        let Some(conn) = self.conns.slot_mut(slot) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        let owner = conn.owner;
        if let Some(tapes) = self.tapes.as_deref_mut() {
            tapes.on_host_close(conn.id);
        }
        self.buffered += tls_close_notify(conn, &mut self.agenda) as u64;
        let deadline = Instant::now() + CLOSE_LINGER;
        self.agenda.set_phase(conn, Phase::Closing { deadline });
        self.owners.conn_removed(owner);
        if self.finish_closing(slot) {
            self.remove(slot);
        }
    }

    /// Moves a closing connection on: its last bytes out, then either the close at
    /// once or the FIN and a lingering wait for the peer's own end, as [`Lingering`]
    /// decides. True when it can be dropped now.
    ///
    /// Closing a socket while input is unread, or while input is still to come,
    /// makes the kernel answer with a reset, which destroys whatever of ours the
    /// kernel has not sent yet and what the peer has not read yet. So a lingering
    /// close sends the FIN and keeps reading and discarding until the peer's
    /// end-of-stream (or the linger deadline), like nginx's.
    fn finish_closing(&mut self, slot: usize) -> bool {
        let scratch = &mut self.scratch;
        let Some(conn) = self.conns.slot_mut(slot) else {
            return false;
        };
        let before = conn.out.len();
        let flushed = conn.out.flush_to(&mut conn.stream);
        self.buffered -= (before - conn.out.len()) as u64;
        match flushed {
            Ok(true) => {}
            Ok(false) => return false,
            Err(_) => return true,
        }
        if scratch.is_empty() {
            scratch.resize(MAX_READ_CHUNK, 0);
        }
        if !conn.fin_sent {
            // The peer has ended its side and the guest read it all: nothing more
            // can come, so nothing can turn into a reset.
            if conn.eof_seen {
                return true;
            }
            if self.lingering == Lingering::Auto {
                match read_pending(&mut conn.stream, scratch) {
                    // Nothing to read, and every byte of ours on the wire: late input
                    // could only reset what is already sent. Close at once.
                    Ok(false) if unsent(&conn.stream) == 0 => return true,
                    Ok(_) => {}
                    Err(_) => return true,
                }
            }
            send_fin(conn);
            if let Phase::Closing { deadline } = &mut conn.phase {
                *deadline = (*deadline).min(Instant::now() + LINGER_AFTER_FIN);
            }
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
        self.buffered -= conn.out.len() as u64;
        self.agenda.forget(&conn);
        if !conn.is_closing() {
            self.owners.conn_removed(conn.owner);
        }
    }
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

/// One read to see whether input is pending at a close: true if it found (and
/// discarded) some, false at `WouldBlock` or the peer's end-of-stream.
fn read_pending(stream: &mut TcpStream, scratch: &mut [u8]) -> io::Result<bool> {
    loop {
        return match stream.read(scratch) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Bytes the kernel holds for a socket that it has not sent yet (the peer's window is
/// full, say): a reset would discard them. Unknown counts as some.
fn unsent(stream: &TcpStream) -> usize {
    let mut unsent: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, to a valid local.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::SIOCOUTQNSD, &mut unsent) };
    if rc == 0 {
        usize::try_from(unsent).unwrap_or(1)
    } else {
        1
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
fn flush(conn: &mut Connection, agenda: &mut Agenda) {
    match conn.out.flush_to(&mut conn.stream) {
        Ok(true) => {
            if conn.write_shut {
                send_fin(conn);
            }
        }
        Ok(false) => conn.writable = false,
        Err(e) => agenda.fail(conn, &e),
    }
}

fn send_fin(conn: &mut Connection) {
    if !conn.fin_sent {
        conn.fin_sent = true;
        // NotConnected only means the peer is gone already; the FIN is moot then.
        let _ = conn.stream.shutdown(Shutdown::Write);
    }
}

/// What `write` answers once `taken` of `len` bytes were taken (sent, buffered or
/// encrypted): bytes left over get the guest a `writable` when there is room.
fn write_answer(
    conn: &mut Connection,
    counters: &mut NetCounters,
    taken: usize,
    len: usize,
) -> WriteResult {
    counters.bytes_written += taken as u64;
    if taken < len {
        conn.notify_writable = true;
    }
    if taken == 0 && len > 0 {
        return WriteResult::WouldBlock;
    }
    WriteResult::Accepted(taken as u32)
}

/// `read` on a TLS connection: decrypted bytes if some wait, else what the socket
/// holds, decrypted, else `would-block` or the end.
fn read_tls(
    conn: &mut Connection,
    buf: &mut [u8],
    agenda: &mut Agenda,
    counters: &mut NetCounters,
    buffered: &mut u64,
) -> ReadResult {
    let tls = conn.tls.as_mut().expect("a TLS connection");
    if !tls.has_input() {
        if !conn.readable {
            return ReadResult::WouldBlock;
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
                return ReadResult::Failed(IoError::Reset);
            }
        }
        // Whatever the records asked for (a key update's answer) goes out now, or
        // waits behind what is buffered.
        if let Ok(added) = tls.send(&mut conn.stream, &mut conn.writable, &mut conn.out) {
            *buffered += added as u64;
        }
    }
    if buf.is_empty() {
        return ReadResult::Data(Vec::new());
    }
    let n = tls.read_plaintext(buf);
    if n > 0 {
        counters.bytes_read += n as u64;
        return ReadResult::Data(buf[..n].to_vec());
    }
    if tls.at_end() {
        conn.readable = false;
        conn.eof_seen = true;
        return ReadResult::Eof;
    }
    ReadResult::WouldBlock
}

/// Queues a TLS connection's `close_notify` (at `close` and `shutdown-write`) and
/// sends or buffers it; returns the bytes buffered. Nothing for a plain one.
fn tls_close_notify(conn: &mut Connection, agenda: &mut Agenda) -> usize {
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
