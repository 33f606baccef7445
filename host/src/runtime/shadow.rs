//! [`ShadowIo`]: the `io` a canary's shadow instance sees instead of the sockets.
//!
//! A shadow gets the events of the connections its canary samples and, when it
//! reads, the bytes the serving instance read from them, in the same order. Its
//! writes are kept, never sent (every write is accepted whole: the shadow's socket
//! never pushes back); its interest, closes and shutdowns are recorded, never
//! applied; it cannot connect out. Its timers are its own, fired by the canary.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::shadow_store::ShadowStore;
use crate::shared::limits::Limits;
use crate::shared::wit::{Conn, IoError, TlsInfo, WriteResult};
use crate::sockets::events::{Event, HangupInfo, Read, ReadResult};

/// The most bytes of a connection's output a shadow keeps for the comparison (a
/// canary holds no more of the serving instance's).
pub const MAX_OUTPUT: usize = 1 << 20;

/// The largest read a shadow is answered, as the host caps a real one.
const MAX_READ: usize = 64 * 1024;

/// How a connection came to a shadow, and the event that announces it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arrival {
    /// A new connection: `accepted`.
    #[default]
    Accepted,
    /// Handed over from an earlier generation: `adopted`.
    Adopted,
    /// Its own `connect`, not completed yet: announced by [`ShadowIo::connected`].
    Connecting,
    /// Its own `connect`, completed: `connected`.
    Connected,
}

/// One sampled connection as a shadow sees it.
#[derive(Debug, Default)]
pub struct ShadowConn {
    /// What the serving instance read from it that the shadow has not read yet
    /// (from `read` on; what it has read is dropped).
    pub input: Vec<u8>,
    /// How much of `input` the shadow has read.
    pub read: usize,
    /// Input bytes read and dropped before `input`.
    pub base: usize,
    /// The serving instance read the peer's end-of-stream after `input`.
    pub eof: bool,
    /// What the shadow wrote to it, up to [`MAX_OUTPUT`] bytes.
    pub output: Vec<u8>,
    /// Bytes it wrote past [`MAX_OUTPUT`], not kept.
    pub output_dropped: usize,
    /// The input offset at which the shadow closed it, once it has.
    pub closed_at: Option<usize>,
    /// The shadow shut its write side.
    pub write_shut: bool,
    /// The connection failed: the shadow hears `hangup`, and it is dead.
    pub hung_up: bool,
    /// The peer's address, as the serving instance saw it.
    pub peer: Option<String>,
    /// Its TLS facts (a replay's; a canary's shadows are told none).
    pub tls: Option<TlsInfo>,
    /// How it arrived, and so which event announces it.
    pub arrival: Arrival,
    want_read: bool,
    want_write: bool,
    accepted_told: bool,
    eof_told: bool,
    hangup_told: bool,
}

impl ShadowConn {
    /// Open to the shadow: neither closed by it nor failed.
    fn live(&self) -> bool {
        self.closed_at.is_none() && !self.hung_up
    }

    /// The real host would report it readable: it wants to read, and there is
    /// input or an end-of-stream it has not read.
    fn readable(&self) -> bool {
        self.live()
            && self.want_read
            && (self.read < self.input.len() || (self.eof && !self.eof_told))
    }

    /// Ended for the shadow: closed by it, or failed.
    pub fn ended(&self) -> bool {
        !self.live()
    }
}

/// The connections and timers of one shadow instance.
#[derive(Debug)]
pub struct ShadowIo {
    /// By handle, so that events go out in the same order to every shadow.
    pub conns: BTreeMap<Conn, ShadowConn>,
    timers: BTreeMap<u64, Instant>,
    /// The most timers it may have armed: the host's default `--max-timers`.
    pub max_timers: usize,
    /// Its store and topics (contract 1.1).
    pub store: ShadowStore,
    /// The time its timers are set from: a replay's clock; `None` is the real one.
    pub now: Option<Instant>,
    /// What its `connect` calls answer, in order (a replay's tape); when none is
    /// left, `not-permitted`.
    pub connects: VecDeque<Result<Conn, IoError>>,
    /// Timers fired by the driver (a replay fires the ones its tape fired, at the
    /// turn they fired) rather than when due.
    pub scripted_timers: HashSet<u64>,
    fired: HashSet<u64>,
    /// The host's shutdown, for the next call (a replay's tape).
    pub shutdown: bool,
}

impl Default for ShadowIo {
    fn default() -> Self {
        Self {
            conns: BTreeMap::new(),
            timers: BTreeMap::new(),
            max_timers: Limits::DEFAULT.max_timers,
            store: ShadowStore::default(),
            now: None,
            connects: VecDeque::new(),
            scripted_timers: HashSet::new(),
            fired: HashSet::new(),
            shutdown: false,
        }
    }
}

impl ShadowIo {
    /// Adds a sampled connection, announced as `accepted` in the next batch.
    pub fn accept(&mut self, conn: Conn, peer: Option<String>) {
        self.arrive(conn, peer, None, Arrival::Accepted);
    }

    /// Adds a connection that arrived as `arrival` says, with its TLS facts.
    pub fn arrive(
        &mut self,
        conn: Conn,
        peer: Option<String>,
        tls: Option<TlsInfo>,
        arrival: Arrival,
    ) {
        self.conns.insert(
            conn,
            ShadowConn {
                peer,
                tls,
                arrival,
                want_read: true,
                ..ShadowConn::default()
            },
        );
    }

    /// Its outbound connection `conn` completed: `connected` in the next batch.
    pub fn connected(&mut self, conn: Conn) {
        if let Some(conn) = self.conns.get_mut(&conn)
            && conn.arrival == Arrival::Connecting
        {
            conn.arrival = Arrival::Connected;
            conn.accepted_told = false;
        }
    }

    /// Fires timer `id` now, if it is armed (a replay's tape fired it here).
    pub fn fire(&mut self, id: u64) {
        if self.timers.contains_key(&id) {
            self.fired.insert(id);
        }
    }

    /// The events the shadow has now, as the host's loop would report them: a new
    /// connection, unread input or end-of-stream, room to write (while write
    /// interest is on: a shadow's socket always has room), a failure, and the
    /// timers due at `now`.
    pub fn events(&mut self, now: Instant, events: &mut Vec<Event>) {
        // The store's answers first: the serving instance had each of them before
        // it read what came after it (a client waiting for a reply sends its next
        // line, or its end, only once the reply came).
        if self.store.has_mail() {
            events.push(Event::Mail);
        }
        for (&id, conn) in &mut self.conns {
            if conn.hung_up {
                if !conn.hangup_told && conn.closed_at.is_none() {
                    conn.hangup_told = true;
                    events.push(Event::Hangup(HangupInfo {
                        conn: id,
                        error: IoError::Reset,
                    }));
                }
                continue;
            }
            if conn.closed_at.is_some() {
                continue;
            }
            if !conn.accepted_told && conn.arrival != Arrival::Connecting {
                conn.accepted_told = true;
                events.push(match conn.arrival {
                    Arrival::Adopted => Event::Adopted(id),
                    Arrival::Connected => Event::Connected(id),
                    Arrival::Accepted | Arrival::Connecting => Event::Accepted(id),
                });
            }
            if conn.readable() {
                events.push(Event::Readable(id));
            }
            if conn.want_write {
                events.push(Event::Writable(id));
            }
        }
        let due: Vec<u64> = self
            .timers
            .iter()
            .filter(|&(id, &at)| self.due(*id, at, now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.timers.remove(&id);
            self.fired.remove(&id);
            events.push(Event::Timer(id));
        }
        if std::mem::take(&mut self.shutdown) {
            events.push(Event::Shutdown);
        }
    }

    /// Whether timer `id`, set to fire `at`, is due at `now` (a scripted timer is
    /// due only once the driver fired it).
    fn due(&self, id: u64, at: Instant, now: Instant) -> bool {
        match self.scripted_timers.contains(&id) {
            true => self.fired.contains(&id),
            false => at <= now,
        }
    }

    /// Whether the shadow has something to hear at `now` (a new connection, input,
    /// an end-of-stream, a failure, a timer due): what earns it a call. Room to
    /// write does not; it comes with the calls there are.
    pub fn has_work(&self, now: Instant) -> bool {
        self.conns.values().any(|conn| {
            conn.readable()
                || (conn.live() && !conn.accepted_told && conn.arrival != Arrival::Connecting)
                || (conn.hung_up && !conn.hangup_told && conn.closed_at.is_none())
        }) || self.timers.iter().any(|(&id, &at)| self.due(id, at, now))
            || self.store.has_mail()
            || self.shutdown
    }

    /// Whether a live connection wants to write: the real host calls the guest in
    /// every turn while it does (and has room), so a replay calls it once per turn.
    pub fn wants_write(&self) -> bool {
        self.conns
            .values()
            .any(|conn| conn.live() && conn.want_write)
    }

    /// When its next timer is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.values().min().copied()
    }

    /// Failed, and the shadow not told yet: its calls answer `reset`, as the host's do.
    fn failed(&self, c: Conn) -> bool {
        self.conns
            .get(&c)
            .is_some_and(|conn| conn.hung_up && !conn.hangup_told && conn.closed_at.is_none())
    }

    fn live(&mut self, c: Conn) -> Option<&mut ShadowConn> {
        self.conns.get_mut(&c).filter(|conn| conn.live())
    }

    /// The older contracts' `read`: as [`ShadowIo::read_into`], with its bytes.
    pub fn read(&mut self, c: Conn, max: u32) -> ReadResult {
        let mut buf = vec![0; (max as usize).min(MAX_READ)];
        let read = self.read_into(c, &mut buf);
        ReadResult::of(read, &buf)
    }

    /// One read into `buf` (at most 64 KiB): the serving instance's input, then
    /// `would-block`, or `eof` once the serving instance read it; `reset` once it
    /// failed, until the shadow has heard `hangup`.
    pub fn read_into(&mut self, c: Conn, buf: &mut [u8]) -> Read {
        if self.failed(c) {
            return Read::Failed(IoError::Reset);
        }
        let Some(conn) = self.live(c) else {
            return Read::Failed(IoError::UnknownConn);
        };
        if buf.is_empty() && conn.read < conn.input.len() {
            return Read::Data(0);
        }
        let end = conn.input.len().min(conn.read + buf.len().min(MAX_READ));
        if end > conn.read {
            let n = end - conn.read;
            buf[..n].copy_from_slice(&conn.input[conn.read..end]);
            conn.read = end;
            return Read::Data(n);
        }
        if conn.eof && conn.read == conn.input.len() {
            conn.eof_told = true;
            return Read::Eof;
        }
        Read::WouldBlock
    }

    /// `write`: kept, and accepted whole.
    pub fn write(&mut self, c: Conn, data: &[u8]) -> WriteResult {
        if self.failed(c) {
            return WriteResult::Failed(IoError::Reset);
        }
        let Some(conn) = self.live(c) else {
            return WriteResult::Failed(IoError::UnknownConn);
        };
        if conn.write_shut {
            return WriteResult::Failed(IoError::Closed);
        }
        let kept = data.len().min(MAX_OUTPUT.saturating_sub(conn.output.len()));
        conn.output.extend_from_slice(&data[..kept]);
        conn.output_dropped += data.len() - kept;
        WriteResult::Accepted(data.len() as u32)
    }

    /// `set-interest`: recorded.
    pub fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
        if let Some(conn) = self.live(c) {
            conn.want_read = readable;
            conn.want_write = writable;
        }
    }

    /// `shutdown-write`: recorded.
    pub fn shutdown_write(&mut self, c: Conn) -> Result<(), IoError> {
        let conn = self.live(c).ok_or(IoError::UnknownConn)?;
        conn.write_shut = true;
        Ok(())
    }

    /// `close`: recorded, with how much input the shadow had read by then.
    pub fn close(&mut self, c: Conn) -> Result<(), IoError> {
        let conn = self.live(c).ok_or(IoError::UnknownConn)?;
        conn.closed_at = Some(conn.base + conn.read);
        Ok(())
    }

    /// `peer`: the serving instance's peer.
    pub fn peer(&mut self, c: Conn) -> Option<String> {
        self.live(c)?.peer.clone()
    }

    /// `tls`: what its tape holds (a canary's shadows are told nothing of TLS).
    pub fn tls(&mut self, c: Conn) -> Option<TlsInfo> {
        self.live(c)?.tls.clone()
    }

    /// `set-timer`: the shadow's own, fired by the canary (over `max_ms`, refused).
    pub fn set_timer(&mut self, id: u64, after_ms: u64, max_ms: u64) -> Result<(), IoError> {
        if after_ms > max_ms
            || (self.timers.len() >= self.max_timers && !self.timers.contains_key(&id))
        {
            return Err(IoError::LimitExceeded);
        }
        let now = self.now.unwrap_or_else(Instant::now);
        self.timers
            .insert(id, now + Duration::from_millis(after_ms));
        Ok(())
    }

    /// `cancel-timer`.
    pub fn cancel_timer(&mut self, id: u64) {
        self.timers.remove(&id);
        self.fired.remove(&id);
    }

    /// `connect`: a replay's tape's answer, in order; never permitted to a
    /// canary's shadow.
    pub fn connect(&mut self) -> Result<Conn, IoError> {
        let result = self
            .connects
            .pop_front()
            .unwrap_or(Err(IoError::NotPermitted));
        if let Ok(conn) = result {
            self.arrive(conn, None, None, Arrival::Connecting);
        }
        result
    }
}
