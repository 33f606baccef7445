//! [`Io`]: buffered, non-blocking I/O on the guest's connections.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::conn_state::{AfterDrain, ConnState, Held, sync_interest};
use crate::host::Host;
use crate::raw::types::{IoError, TlsInfo, WriteResult};
use crate::{BadSnapshot, Conn, ConnMap, SnapshotReader, SnapshotWriter};

/// The most bytes the host reads for a connection at once: one
/// [`on_data`](crate::Handler::on_data) gets at most this much (unless it was held
/// while reading was paused).
pub const READ_CHUNK: u32 = 64 * 1024;

/// Reads per `readable` event, at most, before contract 1.0.
///
/// Since 1.0 the host reads for the guest, one [`READ_CHUNK`] per connection per
/// call, and the SDK makes no reads: kept so that code naming it still builds.
#[deprecated(
    note = "contract 1.0: the host reads for the guest, one chunk per connection per call"
)]
pub const READS_PER_EVENT: usize = 16;

/// The guest's side of its connections: what it has written that the host has not
/// taken yet, and what it asked to happen once that is sent.
///
/// Every method takes a [`Conn`] and is a no-op on a connection that is gone or was
/// never known, so a handler never has to check first: it hears
/// [`on_close`](crate::Handler::on_close) exactly once when a connection ends, and
/// can drop its own state for it there.
#[derive(Debug)]
pub struct Io {
    host: Host,
    conns: ConnMap<ConnState>,
    /// Connections an earlier generation handed over at a hot swap, as its
    /// snapshot left them, waiting for their `adopted` event. Until then they are
    /// not this instance's: the host delivers `adopted` after `restore`.
    adopting: HashMap<Conn, ConnState>,
    /// Connections that ended while the handler was running, with the error that
    /// ended them (none for the guest's own close); the runtime calls `on_close` for
    /// each once the handler returns, so that it never re-enters it.
    ended: VecDeque<(Conn, Option<IoError>)>,
    /// The connection whose `on_close` is running, and why it ended: what
    /// [`hangup_reason`](Io::hangup_reason) answers.
    ending: Option<(Conn, Option<IoError>)>,
    /// Connections holding input that came while reading was paused (usually
    /// none: checked after every event).
    holding: Vec<Conn>,
}

impl Io {
    pub(crate) fn new(host: Host) -> Self {
        Self {
            host,
            conns: ConnMap::default(),
            adopting: HashMap::new(),
            ended: VecDeque::new(),
            ending: None,
            holding: Vec::new(),
        }
    }

    /// Writes `bytes` to `conn`, in order after everything written before.
    ///
    /// What the host does not take at once is queued here and sent as the peer
    /// reads; [`queued`](Self::queued) says how much is waiting. Past
    /// [`HIGH_WATER`](crate::HIGH_WATER) queued bytes the SDK stops reading `conn` until the queue
    /// drains below [`LOW_WATER`](crate::LOW_WATER), so a peer that sends without reading cannot make
    /// the guest buffer without bound.
    ///
    /// Bytes are dropped if `conn` is gone, or after [`close`](Self::close) or
    /// [`shutdown_write`](Self::shutdown_write): there is nobody left to send them to.
    pub fn write(&mut self, conn: Conn, bytes: &[u8]) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        if bytes.is_empty() || !state.accepts_writes() {
            return;
        }
        let rest = if state.queue.is_empty() && state.can_flush() {
            match self.host.write(conn.raw(), bytes) {
                WriteResult::Accepted(n) => bytes.get(n as usize..).unwrap_or_default(),
                WriteResult::WouldBlock => bytes,
                WriteResult::Failed(error) => return self.write_failed(conn, error),
            }
        } else {
            // Behind queued bytes (writing these first would reorder the stream), or
            // the connection is not established yet.
            bytes
        };
        if rest.is_empty() {
            return;
        }
        state.queue.push(rest);
        state.update_backpressure();
        sync_interest(&mut self.host, conn, state);
    }

    /// Closes `conn` gracefully: once everything written to it is sent.
    ///
    /// Reading stops at once. An outbound connection that has not completed is
    /// closed at once if nothing was written to it, and otherwise once it completes
    /// and the writes are sent. When the queue is empty the host closes the socket
    /// (still sending what it had accepted), and the handler hears
    /// [`on_close`](crate::Handler::on_close). A peer that never reads keeps the
    /// connection open; [`abort`](Self::abort) does not wait.
    pub fn close(&mut self, conn: Conn) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        if state.queue.is_empty() || state.failed {
            self.finish_close(conn, None);
        } else {
            state.after_drain = AfterDrain::Close;
            sync_interest(&mut self.host, conn, state);
        }
    }

    /// Closes every open connection gracefully, as [`close`](Self::close) does:
    /// what [`on_shutdown`](crate::Handler::on_shutdown) does in a guest that has
    /// nothing else in flight.
    pub fn close_all(&mut self) {
        let open: Vec<Conn> = self.conns.keys().copied().collect();
        for conn in open {
            self.close(conn);
        }
    }

    /// Closes `conn` now, dropping what is still queued in the guest.
    ///
    /// Bytes the host already accepted are still sent. For a peer that stopped
    /// reading, where a graceful [`close`](Self::close) would wait for ever.
    pub fn abort(&mut self, conn: Conn) {
        if self.conns.contains_key(&conn) {
            self.finish_close(conn, None);
        }
    }

    /// Sends end-of-stream to the peer once everything written to `conn` is sent
    /// (and, for an outbound connection, once it has completed).
    ///
    /// Reading goes on (half-close); writes after this are dropped.
    pub fn shutdown_write(&mut self, conn: Conn) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        if !state.accepts_writes() {
            return;
        }
        if state.queue.is_empty() && !state.connecting {
            self.shutdown_now(conn);
        } else {
            state.after_drain = AfterDrain::ShutdownWrite;
        }
    }

    /// Opens an outbound TCP connection to `addr` (`ip:port`; the host does no
    /// name lookup).
    ///
    /// The connection exists from this moment: [`write`](Self::write),
    /// [`shutdown_write`](Self::shutdown_write) and [`close`](Self::close) work at
    /// once, and what they ask for is held in the guest until the connection
    /// completes. Then the handler hears
    /// [`on_connected`](crate::Handler::on_connected); if it cannot be made, it
    /// hears [`on_close`](crate::Handler::on_close), where
    /// [`hangup_reason`](Self::hangup_reason) says `refused` or `unreachable`.
    ///
    /// Fails at once with [`IoError::NotPermitted`] unless the host allows
    /// connecting to `addr` (`--allow-connect`), and with another [`IoError`] if
    /// the host cannot even start (`addr` malformed, too many connections).
    pub fn connect(&mut self, addr: &str) -> Result<Conn, IoError> {
        let conn = Conn::from_raw(self.host.connect(addr)?);
        self.conns.insert(conn, ConnState::new(true));
        Ok(conn)
    }

    /// Stops reading `conn` until [`resume_reading`](Self::resume_reading).
    ///
    /// For backpressure across connections: a proxy pauses the client while the
    /// upstream's queue is full. This composes with the SDK's own pause
    /// ([`HIGH_WATER`](crate::HIGH_WATER)): reading resumes only once neither wants it paused. Bytes
    /// the peer sends meanwhile wait in the host and the kernel, and then the
    /// peer's own send buffer: a paused peer is slowed down, not lost.
    pub fn pause_reading(&mut self, conn: Conn) {
        self.set_paused(conn, true);
    }

    /// Undoes [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&mut self, conn: Conn) {
        self.set_paused(conn, false);
    }

    /// What the guest wants to hear about `conn`, as the raw `set-interest` says it.
    ///
    /// `readable: false` pauses reading, as [`pause_reading`](Self::pause_reading)
    /// does. `writable: true` asks for [`on_writable`](crate::Handler::on_writable)
    /// whenever the connection can take more bytes, even with nothing queued: for a
    /// guest that produces output as fast as the peer reads it (a large file, a
    /// stream), writing a slice per call. Turn it off when there is nothing left to
    /// write, or the handler hears it in every batch.
    ///
    /// Both compose with the SDK's own reasons: reading stays paused while the queue
    /// is above [`HIGH_WATER`](crate::HIGH_WATER) or after end-of-stream, and queued bytes are sent
    /// whatever `writable` says.
    pub fn set_interest(&mut self, conn: Conn, readable: bool, writable: bool) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.paused = !readable;
            state.want_writable = writable;
            sync_interest(&mut self.host, conn, state);
        }
    }

    /// Whether the SDK pauses reading `conn` while `conn`'s own queue is above
    /// [`HIGH_WATER`](crate::HIGH_WATER) (on by default).
    ///
    /// The default suits a connection whose writes answer its own reads (an echo,
    /// a request/response server). Turn it off for a connection whose writes come
    /// from elsewhere, such as either side of a proxy, and pause with
    /// [`pause_reading`](Self::pause_reading) instead: a peer that is slow to
    /// read would otherwise also stop the SDK reading what it sends, coupling two
    /// directions that a direct connection keeps independent, and two peers
    /// waiting on each other that way deadlock.
    pub fn set_auto_pause(&mut self, conn: Conn, enabled: bool) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.auto_pause = enabled;
            state.update_backpressure();
            sync_interest(&mut self.host, conn, state);
        }
    }

    /// Why `conn` ended, when asked from its [`on_close`](crate::Handler::on_close):
    /// the error if it failed (`reset` for a reset or socket error, `refused` or
    /// `unreachable` for an outbound connection that could not be made), `None` if
    /// the guest closed it. `None` at any other time.
    pub fn hangup_reason(&self, conn: Conn) -> Option<IoError> {
        self.ending
            .filter(|&(ending, _)| ending == conn)
            .and_then(|(_, reason)| reason)
    }

    /// Bytes written to `conn` that the host has not taken yet; 0 for an unknown
    /// connection.
    ///
    /// A guest that fans data out to many connections (a chat room) checks this to
    /// drop receivers that fall too far behind.
    pub fn queued(&self, conn: Conn) -> usize {
        self.conns.get(&conn).map_or(0, |state| state.queue.len())
    }

    /// Whether `conn` is still open: accepted (or connecting), and neither closed
    /// nor hung up.
    pub fn is_open(&self, conn: Conn) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The open connections, in no particular order.
    pub fn conns(&self) -> impl Iterator<Item = Conn> + '_ {
        self.conns.keys().copied()
    }

    /// The peer's address of `conn`, as `ip:port`, if the connection is open.
    pub fn peer(&self, conn: Conn) -> Option<String> {
        if self.is_open(conn) {
            self.host.peer(conn.raw())
        } else {
            None
        }
    }

    /// What the TLS handshake of `conn` settled (version, SNI server name, ALPN
    /// protocol), if it came from a TLS listener and is open; `None` for plaintext.
    /// The host decrypts: reads and writes are plaintext either way.
    pub fn tls(&self, conn: Conn) -> Option<TlsInfo> {
        if self.is_open(conn) {
            self.host.tls(conn.raw())
        } else {
            None
        }
    }

    /// Arms (or re-arms) the one-shot timer `id` to fire after `after_ms`
    /// milliseconds, as a call to [`on_timer`](crate::Handler::on_timer).
    ///
    /// Fails with [`IoError::LimitExceeded`] when the guest already has as many
    /// timers outstanding as the host allows, or when `after_ms` is more than a day
    /// (86,400,000): a timer must fire while the host runs.
    pub fn set_timer(&mut self, id: u64, after_ms: u32) -> Result<(), IoError> {
        self.host.set_timer(id, after_ms)
    }

    /// Disarms the timer `id`; nothing happens if it is not armed.
    pub fn cancel_timer(&mut self, id: u64) {
        self.host.cancel_timer(id)
    }

    // The runtime's side: events from the host.

    /// Starts tracking a new connection; false if it was known already.
    pub(crate) fn accept(&mut self, conn: Conn) -> bool {
        match self.conns.entry(conn) {
            Entry::Vacant(entry) => {
                entry.insert(ConnState::new(false));
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    /// A connection an earlier generation held is now this instance's: takes up
    /// the state its snapshot left (a fresh one if there is none, for a
    /// generation that kept no state or a snapshot that was refused). False if it
    /// is open already.
    pub(crate) fn adopt(&mut self, conn: Conn) -> bool {
        let Entry::Vacant(entry) = self.conns.entry(conn) else {
            return false;
        };
        let state = entry.insert(
            self.adopting
                .remove(&conn)
                .unwrap_or_else(|| ConnState::new(false)),
        );
        // The host kept the interest the earlier generation set last, which this
        // instance does not know: say what it wants, whether or not that differs
        // from the default.
        let wanted = state.wanted_interest();
        self.host
            .set_interest(conn.raw(), wanted.readable, wanted.writable);
        state.told = wanted;
        if state.holds() {
            self.holding.push(conn);
        }
        true
    }

    /// Writes the state of every connection, open or still to be adopted, for a
    /// handoff: a count, then per connection its handle and its state.
    pub(crate) fn snapshot_conns(&self, w: &mut SnapshotWriter, version: u8) {
        w.u64((self.conns.len() + self.adopting.len()) as u64);
        for (&conn, state) in self.conns.iter().chain(&self.adopting) {
            w.conn(conn);
            state.encode(w, version);
        }
    }

    /// Whether any connection, open or still to be adopted, holds input that came
    /// while reading was paused.
    pub(crate) fn holds_any(&self) -> bool {
        self.conns
            .values()
            .chain(self.adopting.values())
            .any(ConnState::holds)
    }

    /// Reads what [`snapshot_conns`](Self::snapshot_conns) wrote, without applying
    /// it: a snapshot is taken up whole or not at all.
    pub(crate) fn decode_conns(
        r: &mut SnapshotReader<'_>,
        version: u8,
    ) -> Result<HashMap<Conn, ConnState>, BadSnapshot> {
        let mut conns = HashMap::new();
        for _ in 0..r.count()? {
            let conn = r.conn()?;
            let state = ConnState::decode(r, version)?;
            if conns.insert(conn, state).is_some() {
                return Err(BadSnapshot::new("a connection appears twice"));
            }
        }
        Ok(conns)
    }

    /// Keeps the decoded states of connections handed over, for their `adopted`.
    pub(crate) fn restore_conns(&mut self, conns: HashMap<Conn, ConnState>) {
        for (conn, state) in conns {
            if !self.conns.contains_key(&conn) {
                self.adopting.insert(conn, state);
            }
        }
    }

    /// An outbound connection completed: its queue may be sent from now on. False
    /// if `conn` is not a connection this guest is waiting for.
    pub(crate) fn connected(&mut self, conn: Conn) -> bool {
        match self.conns.get_mut(&conn) {
            Some(state) if state.connecting => {
                state.connecting = false;
                true
            }
            _ => false,
        }
    }

    /// The peer's end-of-stream came: reading is over, so read interest goes off.
    pub(crate) fn mark_eof(&mut self, conn: Conn) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.eof = true;
            sync_interest(&mut self.host, conn, state);
        }
    }

    /// Whether input for `conn` goes to the handler now: reading is on and nothing
    /// held waits before it. One lookup, for every `data` event.
    pub(crate) fn takes_input(&self, conn: Conn) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|state| state.wants_read() && !state.holds())
    }

    /// Keeps `bytes`, which came while reading `conn` was paused, behind what it
    /// holds already.
    pub(crate) fn hold(&mut self, conn: Conn, bytes: &[u8]) {
        if let Some(state) = self.conns.get_mut(&conn) {
            if !state.holds() {
                self.holding.push(conn);
            }
            state.held.bytes.extend_from_slice(bytes);
        }
    }

    /// Keeps the end-of-stream of `conn`, which came while reading was paused.
    pub(crate) fn hold_eof(&mut self, conn: Conn) {
        if let Some(state) = self.conns.get_mut(&conn) {
            if !state.holds() {
                self.holding.push(conn);
            }
            state.held.eof = true;
        }
    }

    /// A connection whose reading resumed while it held input, with that input.
    pub(crate) fn next_resumed(&mut self) -> Option<(Conn, Held)> {
        let mut i = 0;
        while let Some(&conn) = self.holding.get(i) {
            match self.conns.get_mut(&conn) {
                Some(state) if state.wants_read() => {
                    self.holding.swap_remove(i);
                    return Some((conn, std::mem::take(&mut state.held)));
                }
                Some(_) => i += 1,
                None => {
                    self.holding.swap_remove(i);
                }
            }
        }
        None
    }

    /// Hands the host as much of the queue as it takes, and does what waited for
    /// the queue to drain; true if the handler should hear `on_writable`.
    pub(crate) fn flush(&mut self, conn: Conn) -> bool {
        let Some(state) = self.conns.get_mut(&conn) else {
            return false;
        };
        if !state.can_flush() {
            return false;
        }
        if state.queue.is_empty() {
            // Nothing was held back, unless a shutdown or close was waiting for an
            // outbound connection to complete; the handler hears the room only if it
            // asked for it.
            if state.after_drain != AfterDrain::Notify {
                return self.queue_drained(conn);
            }
            return state.want_writable && state.accepts_writes();
        }
        match self.host.write(conn.raw(), state.queue.pending()) {
            WriteResult::Accepted(n) => state.queue.consume(n as usize),
            WriteResult::WouldBlock => {}
            WriteResult::Failed(error) => {
                self.write_failed(conn, error);
                return false;
            }
        }
        state.update_backpressure();
        if state.queue.is_empty() {
            self.queue_drained(conn)
        } else {
            sync_interest(&mut self.host, conn, state);
            false
        }
    }

    /// Forgets `conn`, which the host released (because of `reason`, if any);
    /// the handler hears `on_close`.
    ///
    /// A connection still to be adopted counts too: the handler restored whatever
    /// it kept for it, and drops that in `on_close`.
    pub(crate) fn forget(&mut self, conn: Conn, reason: Option<IoError>) {
        if self.conns.remove(&conn).is_some() || self.adopting.remove(&conn).is_some() {
            self.ended.push_back((conn, reason));
        }
    }

    /// The next connection whose `on_close` is due, and why it ended.
    pub(crate) fn next_ended(&mut self) -> Option<(Conn, Option<IoError>)> {
        self.ended.pop_front()
    }

    /// Marks the connection whose `on_close` runs now, for [`Io::hangup_reason`];
    /// `None` once it returned.
    pub(crate) fn set_ending(&mut self, ending: Option<(Conn, Option<IoError>)>) {
        self.ending = ending;
    }

    // Internals.

    /// Does what waited for `conn`'s queue to drain; true if that is telling the
    /// handler `on_writable`.
    fn queue_drained(&mut self, conn: Conn) -> bool {
        let Some(state) = self.conns.get_mut(&conn) else {
            return false;
        };
        match std::mem::replace(&mut state.after_drain, AfterDrain::Notify) {
            AfterDrain::Notify => {
                sync_interest(&mut self.host, conn, state);
                true
            }
            AfterDrain::ShutdownWrite => {
                self.shutdown_now(conn);
                false
            }
            AfterDrain::Close => {
                self.finish_close(conn, None);
                false
            }
        }
    }

    fn shutdown_now(&mut self, conn: Conn) {
        // A connection that failed meanwhile has its `hangup` coming: nothing to
        // answer here.
        self.host.shutdown_write(conn.raw());
        if let Some(state) = self.conns.get_mut(&conn) {
            state.write_shut = true;
            sync_interest(&mut self.host, conn, state);
        }
    }

    fn write_failed(&mut self, conn: Conn, error: IoError) {
        match error {
            IoError::Reset => self.mark_failed(conn),
            IoError::UnknownConn => self.forget(conn, Some(error)),
            IoError::Closed => self.mark_write_shut(conn),
            // The host will not let this connection be written: it is of no use.
            IoError::NotPermitted
            | IoError::LimitExceeded
            | IoError::Refused
            | IoError::Unreachable
            | IoError::InvalidAddress => self.fail(conn, error),
        }
    }

    /// The host says the write side is shut: nothing queued can be sent any more.
    fn mark_write_shut(&mut self, conn: Conn) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.write_shut = true;
        state.queue.clear();
        state.update_backpressure();
        if state.after_drain == AfterDrain::Close {
            self.finish_close(conn, None);
        } else {
            state.after_drain = AfterDrain::Notify;
            sync_interest(&mut self.host, conn, state);
        }
    }

    /// The connection was reset: drop the queue and stop all interest until the
    /// host's `hangup`, which follows in the next batch.
    fn mark_failed(&mut self, conn: Conn) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.failed = true;
            state.queue.clear();
            state.after_drain = AfterDrain::Notify;
            sync_interest(&mut self.host, conn, state);
        }
    }

    /// Closes `conn` because a host call failed with `error`: it is of no use.
    fn fail(&mut self, conn: Conn, error: IoError) {
        self.finish_close(conn, Some(error));
    }

    fn finish_close(&mut self, conn: Conn, reason: Option<IoError>) {
        // Whatever the host answers, the handle is dead for this guest afterwards:
        // `unknown-conn` only means the host dropped it first.
        self.host.close(conn.raw());
        self.forget(conn, reason);
    }

    /// The host, for the store's calls (`store.rs`).
    pub(crate) fn host_mut(&mut self) -> &mut Host {
        &mut self.host
    }

    fn set_paused(&mut self, conn: Conn, paused: bool) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.paused = paused;
            sync_interest(&mut self.host, conn, state);
        }
    }
}

#[cfg(test)]
impl Io {
    pub(crate) fn host(&mut self) -> &mut Host {
        &mut self.host
    }
}
