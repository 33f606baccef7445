//! [`Net`]: the host side of the guest's `io` interface, and the readiness bookkeeping
//! that turns mio's edges into the guest's level-triggered batches.
//!
//! Every call here is non-blocking. Most make one syscall, or none when the flags
//! already know the answer (a read on a drained socket answers `would-block` without
//! asking the kernel). A few make a short, bounded series: `connect` creates, connects
//! and registers a socket; `close` flushes what is buffered, sends the FIN and drains
//! what the peer already sent; `read` retries only when interrupted by a signal.
//!
//! One record, one file per job it does:
//! - this file: the record, the connection table's entries and exits, the counts;
//! - [`guest_io`]: the guest's `io` calls (`read`, `write`, ..., `connect`);
//! - [`readiness`]: mio's edges recorded, and turned into each turn's events;
//! - [`closing`]: the close as the host finishes it (flush, FIN, linger), and the
//!   deadlines of connects, handshakes and closes;
//! - [`handshake`]: connections from a TLS listener, held until their handshake is
//!   done, and the TLS side of reads, writes and closes;
//! - [`handover`]: what an instance holds, released or handed to another;
//! - [`carry`]: the connections packed for an upgrade's new process, and unpacked there;
//! - [`uring`]: the connections on the loop's io_uring (`--io uring`), whose bytes
//!   come and go in the ring's completions rather than at epoll's edges.

mod carry;
mod closing;
mod guest_io;
mod handover;
mod handshake;
mod readiness;
mod uring;

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tracing::debug;

use super::allow::AllowList;
use super::capacity::{Capacity, Place};
use super::conn_table::{ConnTable, slot_of};
use super::connection::{Connection, Phase};
use super::owners::{Owner, Owners};
use super::ring::{Completion, Ring};
use super::tape::Tapes;
use super::timers::Timers;
use crate::shared::limits::Limits;
use crate::shared::metrics::{NetCounters, NetGauges};
use crate::shared::rate_limit::RateLimit;
use crate::shared::wit::{Conn, IoError, WriteResult};

pub use carry::Packed;
pub use closing::Lingering;

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
    /// While an upgrade's handover settles: the guests hear of no input.
    holding_input: bool,
    /// `--io uring`: the ring the plain connections' I/O goes through.
    ring: Option<Box<Ring>>,
    /// Connections on the ring with bytes to send at the end of the turn.
    sends: Vec<usize>,
    /// Connections new on the ring this turn, whose receive is armed at its end.
    arming: Vec<Conn>,
    /// The listeners' accept completions of the last wait on the ring, for the
    /// loop (which owns the listeners).
    accepts: Vec<Completion>,
    /// The input of a guest call (contract 1.x), lent to each call in turn: one
    /// buffer for all of the loop's instances.
    call_input: Vec<u8>,
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
        let mut net = Self::default();
        net.limits = limits;
        net.allow = allow;
        net.capacity = capacity;
        net.registry = Some(registry);
        net
    }

    /// Lends the loop's buffer for a guest call's input (give it back with
    /// [`Net::return_input`]): with an instance per connection, one of each
    /// instance's own would be 64 KiB per connection.
    pub fn lend_input(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.call_input)
    }

    /// Takes back the buffer [`Net::lend_input`] lent.
    pub fn return_input(&mut self, input: Vec<u8>) {
        self.call_input = input;
    }

    /// Numbers handles for worker `worker` of `workers`, so that no two workers
    /// hand out the same one. Before the first connection.
    pub fn number_for_worker(&mut self, worker: usize, workers: usize) {
        self.conns.number_for_worker(worker, workers);
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

    /// Stops reporting input to the guests (`true`), or starts again: while an
    /// upgrade's handover settles, no new request starts. The input waits in the
    /// sockets (on the ring, receives stop, and what they brought waits in
    /// `unread`, which an upgrade carries), and the connections stay readable.
    pub fn hold_input(&mut self, hold: bool) {
        self.holding_input = hold;
        self.hold_ring(hold);
        if hold {
            return;
        }
        // A connection whose input came while it was held left the ready list
        // still readable, and no new edge may come for it: back on the list.
        let held: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.read_ready() && !conn.queued)
            .map(|(slot, _)| slot)
            .collect();
        for slot in held {
            if let Some(conn) = self.conns.slot_mut(slot) {
                self.agenda.enqueue(conn);
            }
        }
    }

    /// Connections this loop holds, the closing ones included.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Whether an accepted connection the guest may read has not sent a byte yet,
    /// or a TLS handshake is under way. Looks at every connection: for a
    /// shutdown's first turns only.
    pub fn has_unheard(&self) -> bool {
        self.conns.iter().any(|(_, conn)| match conn.phase {
            Phase::Open => !conn.heard && !conn.eof_seen,
            Phase::Handshaking { .. } => true,
            _ => false,
        })
    }

    /// Connections the guest instance `owner` still holds (not counting those it
    /// closed, which the host is finishing).
    pub fn owned_by(&self, owner: Owner) -> usize {
        self.owners.get(owner).conns
    }

    /// Bytes the host holds unsent for a connection the current caller may see.
    pub fn buffered(&mut self, id: Conn) -> Option<usize> {
        visible(&mut self.conns, id, self.caller).map(|c| c.unsent())
    }

    /// Sets which guest instance the next calls come from.
    pub fn set_caller(&mut self, owner: Owner) {
        self.caller = owner;
    }

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
        let on_ring = self.onto_ring(slot);
        let conn = self.conns.slot_mut(slot).expect("just inserted");
        if let (false, Some(registry)) = (on_ring, &self.registry) {
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

    /// Takes a connection out of the table (closing its socket), keeping the counts.
    fn remove(&mut self, slot: usize) {
        let Some(conn) = self.conns.remove(slot) else {
            return;
        };
        self.buffered -= conn.unsent() as u64;
        self.agenda.forget(&conn);
        if !conn.is_closing() {
            self.owners.conn_removed(conn.owner);
        }
        if conn.ring.on {
            self.off_ring(conn);
        }
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
}

impl Drop for Net {
    fn drop(&mut self) {
        // On the ring, each connection leaves through `remove` before the ring
        // goes (its requests cancelled, its descriptor closed by the ring after
        // them, its bytes in flight kept): dropped as a field, its descriptor and
        // bytes would go while the ring's requests still used them.
        if self.ring.is_some() {
            self.drop_all();
        }
    }
}

/// Puts a connection on the ring on the list of those with bytes to send at the
/// end of the turn.
fn queue_send(conn: &mut Connection, sends: &mut Vec<usize>) {
    if !conn.ring.send_queued {
        conn.ring.send_queued = true;
        sends.push(slot_of(conn.id));
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
