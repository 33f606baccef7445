//! [`EventLoop`]: one thread, one `epoll` (through mio), one handler call per turn.
//! With `--io uring` the loop waits in an io_uring instead, which watches that epoll
//! and carries the listeners' accepts and the plain connections' I/O (see
//! [`crate::sockets::ring`]); the turn is the same.
//!
//! ```text
//!   poll ──► accept new connections, note edges ──► collect one batch ──► handler.handle(batch)
//!    ▲                                                                          │
//!    └──────────── wait, or not at all if a connection is still ready ◄─────────┘
//! ```
//!
//! Underneath, readiness is edge-triggered (each socket is registered once, for
//! readable and writable). To the guest it is level-triggered: a connection the guest
//! did not drain stays in `Net`'s ready list and is reported again next turn, and the
//! loop does not sleep while that list is non-empty.
//!
//! With `--workers N` there are N loops, one per thread, each with its own listening
//! sockets on the same addresses. Other threads reach a loop through its [`Remote`]:
//! the supervisor asks it to shut down (the listeners close, the guest hears
//! `shutdown`, and the loop runs until every connection has finished or the shutdown
//! timeout has passed), and the guest loader wakes it when a new guest is ready.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};

use super::accept::{Admission, RingAccepts, no_delay};
use super::allow::AllowList;
use super::batch::Batch;
use super::capacity::Capacity;
use super::events::Event;
use super::handler::{CarriedGroup, EventHandler};
use super::listener::Listener;
use super::net::{Lingering, Net, Packed};
use super::owners::Owner;
use super::parcel::Parcel;
use super::ring::Ring;
use crate::shared::limits::{Limits, SLOT_BITS};
use crate::shared::metrics::Published;
use crate::shared::rate_limit::RateLimit;

/// Tokens below this are connection slots; listeners sit above.
const LISTENER_BASE: usize = 1 << SLOT_BITS;
/// The waker's token: other threads (the supervisor, the guest loader) wake the loop
/// with it.
const WAKER: Token = Token(usize::MAX);
/// Events taken from the kernel per wait.
const EVENTS_PER_POLL: usize = 1024;
/// At a shutdown, how long connections just accepted may take to send their first
/// bytes before the guest hears `shutdown` (and closes what looks idle): a client
/// whose request is on its way would otherwise lose it. nginx closes such
/// connections at once.
const FIRST_BYTES_GRACE: Duration = Duration::from_secs(1);
/// How long a loop asked for its connections may take to settle (see
/// [`HandoverOrder`]): store answers come within milliseconds, or within
/// `--store-timeout` from a server in trouble, when the upgrade had better wait.
const SETTLE_WAIT: Duration = Duration::from_secs(1);
/// The most unsent bytes a loop may hold (its TLS connections' included) when it
/// hands over: past it (a thousand slow readers each with a full `--max-buffer`),
/// the upgrade fails rather than copy them all.
const MAX_CARRIED_BYTES: u64 = 256 << 20;
/// After an accept failure (out of file descriptors, say), the listener is retried
/// this soon: with edge-triggered readiness no new edge may come for the queue.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// How other threads reach a loop: wake it, ask it to shut down, to stop
/// accepting for a while (a binary upgrade, while the new process starts serving),
/// or to hand its connections over.
#[derive(Clone, Debug)]
pub struct Remote {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    /// Asked for: accept or not.
    paused: Arc<AtomicBool>,
    /// Done: the loop's listeners are out of its poll, or their accepts on the ring
    /// have ended (or they are back in).
    paused_now: Arc<AtomicBool>,
    /// An upgrade's request for the loop's connections, until the loop takes it.
    handover: Arc<Mutex<Option<HandoverOrder>>>,
    /// A shutdown's time limit shorter than `--shutdown-timeout`, in milliseconds
    /// (`u64::MAX`: none).
    stop_within: Arc<AtomicU64>,
}

/// An upgrade asks a loop for its connections. The loop first settles: it stops
/// giving its guests input, and runs on until no guest waits for the store (an
/// answer on its way would be lost with the old process), for [`SETTLE_WAIT`] at
/// most (or it refuses). Then, at the end of a turn, it packs them, sends them on
/// `parcels`, and waits, frozen, for the verdict: `true`, the new process has them
/// (they leave this loop, which then shuts down); anything else (`false`, or the
/// sender dropped: the upgrade failed), the loop goes on with them as if nothing
/// had happened.
#[derive(Debug)]
pub struct HandoverOrder {
    /// The loop's worker number, which the parcel carries back.
    pub worker: usize,
    /// Where the packed connections go (the upgrade's supervisor), or why not.
    pub parcels: mpsc::Sender<Result<Bundle, String>>,
    /// The upgrade's verdict.
    pub verdict: mpsc::Receiver<bool>,
}

/// One loop's connections, packed for the new process.
#[derive(Debug)]
pub struct Bundle {
    /// The worker they come from.
    pub worker: usize,
    /// What the new process needs to know of them.
    pub parcel: Parcel,
    /// Their sockets, in the parcel's order: the loop's own descriptors, open for as
    /// long as it waits for the verdict (it holds them, frozen, until then).
    pub fds: Vec<RawFd>,
    /// Connections that stay to finish here (TLS).
    pub kept: usize,
}

impl Remote {
    /// Wakes the loop: its handler looks for what the caller left it (a new guest).
    pub fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            warn!(error = %e, "cannot wake an event loop");
        }
    }

    /// Asks the loop to shut down: stop accepting, tell the guest, let the open
    /// connections finish.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// Asks the loop to shut down within `limit`, if that is shorter than its
    /// `--shutdown-timeout` (an upgrade's drain, with `--drain-timeout`).
    pub fn stop_within(&self, limit: Option<Duration>) {
        if let Some(limit) = limit {
            let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX - 1);
            self.stop_within.store(ms, Ordering::Release);
        }
        self.stop();
    }

    /// Asks the loop to stop accepting (`true`) or to accept again. Its listeners
    /// stay open: connections wait in their queues for whoever accepts next (the
    /// new process of an upgrade shares the sockets), and none is refused.
    pub fn pause_accepting(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.wake();
    }

    /// Whether the loop has stopped accepting (it does so within a turn of being
    /// asked, on the ring once its cancelled accepts have completed, a turn or two),
    /// or has shut down.
    pub fn accepting_paused(&self) -> bool {
        self.paused_now.load(Ordering::Acquire)
    }

    /// Asks the loop for its connections (see [`HandoverOrder`]).
    pub fn hand_over(&self, order: HandoverOrder) {
        *self.handover.lock().unwrap_or_else(|e| e.into_inner()) = Some(order);
        self.wake();
    }

    fn take_handover(&self) -> Option<HandoverOrder> {
        self.handover
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The loop, generic over what handles the batches so that the wasm guest and the
/// native baseline run through exactly the same code.
pub struct EventLoop<H> {
    poll: Poll,
    events: Events,
    listeners: Vec<Listener>,
    net: Net,
    handler: H,
    batch: Batch,
    remote: Remote,
    shutdown_timeout: Duration,
    /// Set once a shutdown has begun: when it must end.
    stopping: Option<Instant>,
    /// During a shutdown, until the guest is told of it: when it is told at the
    /// latest. Until then every accepted connection may send its first bytes (see
    /// [`FIRST_BYTES_GRACE`]).
    telling_guest: Option<Instant>,
    accept_retry: bool,
    /// The listeners are out of the poll, or their accepts on the ring cancelled
    /// ([`Remote::pause_accepting`]).
    paused: bool,
    /// On the ring (`--io uring`): the listeners' accepts, which replace epoll's.
    ring_accepts: Option<RingAccepts>,
    refused: RateLimit,
    /// Where the loop publishes its counters once per turn, with `--admin`.
    published: Option<Arc<Published>>,
    /// An upgrade's request for the connections, while the loop settles, and when
    /// it gives up settling.
    settling: Option<(HandoverOrder, Instant)>,
    /// On the ring: epoll's last list was full, so it is read again next turn.
    epoll_more: bool,
}

impl<H: EventHandler> EventLoop<H> {
    /// Numbers the loop's connection handles as worker `worker` of `workers`: no
    /// two workers hand out the same handle. Before it runs.
    pub fn number_for_worker(&mut self, worker: usize, workers: usize) {
        self.net.number_for_worker(worker, workers);
    }

    /// Registers the listeners; `capacity` is shared with the other workers' loops.
    pub fn new(
        mut listeners: Vec<Listener>,
        handler: H,
        limits: Limits,
        allow: AllowList,
        capacity: Capacity,
        lingering: Lingering,
        shutdown_timeout: Duration,
    ) -> Result<Self> {
        let poll = Poll::new().context("cannot create the epoll instance")?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            no_delay(listener).context("cannot turn Nagle's algorithm off on a listener")?;
            poll.registry()
                .register(
                    &mut listener.socket,
                    Token(LISTENER_BASE + i),
                    Interest::READABLE,
                )
                .context("cannot register a listener with epoll")?;
        }
        let waker = Waker::new(poll.registry(), WAKER).context("cannot create the loop's waker")?;
        let registry = poll
            .registry()
            .try_clone()
            .context("cannot clone the epoll registry")?;
        let mut net = Net::new(limits, allow, registry, capacity);
        net.set_lingering(lingering);
        Ok(Self {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            listeners,
            net,
            handler,
            batch: Batch::default(),
            remote: Remote {
                waker: Arc::new(waker),
                stop: Arc::new(AtomicBool::new(false)),
                paused: Arc::new(AtomicBool::new(false)),
                paused_now: Arc::new(AtomicBool::new(false)),
                handover: Arc::default(),
                stop_within: Arc::new(AtomicU64::new(u64::MAX)),
            },
            shutdown_timeout,
            stopping: None,
            telling_guest: None,
            accept_retry: false,
            paused: false,
            refused: RateLimit::new(Duration::from_secs(1)),
            published: None,
            settling: None,
            epoll_more: false,
            ring_accepts: None,
        })
    }

    /// Puts the loop's listeners and plain connections on an io_uring of its own
    /// (`--io uring`); before it runs. [`crate::sockets::ring::probe`] says first
    /// whether the kernel allows it.
    pub fn use_uring(&mut self) -> Result<()> {
        let ring = Ring::new(self.poll.as_raw_fd()).context("cannot set up the loop's io_uring")?;
        self.net.use_ring(ring);
        // The listeners are accepted from on the ring instead: out of the poll.
        for listener in &mut self.listeners {
            self.poll
                .registry()
                .deregister(&mut listener.socket)
                .context("cannot take a listener out of epoll")?;
        }
        let mut accepts = RingAccepts::default();
        accepts.arm(&self.listeners, &mut self.net);
        self.ring_accepts = Some(accepts);
        Ok(())
    }

    /// Publishes the loop's counters (and its handler's) there once per turn, for the
    /// admin listener. The first copy goes out now, so that a worker idle from the
    /// start is seen.
    pub fn publish_to(&mut self, published: Arc<Published>) {
        self.published = Some(published);
        self.publish();
    }

    /// Stores the counters into the published copy, with `--admin`.
    fn publish(&mut self) {
        if let Some(published) = &self.published {
            let (counters, gauges) = self.net.metrics();
            published.net(counters, gauges);
            self.handler.publish(published, &self.net);
        }
    }

    /// How other threads reach this loop.
    pub fn remote(&self) -> Remote {
        self.remote.clone()
    }

    /// The handler, to finish setting it up.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The addresses actually bound (port 0 resolved), and whether each is TLS.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners
            .iter()
            .filter_map(|l| Some((l.socket.local_addr().ok()?, l.tls.is_some())))
            .collect()
    }

    /// Runs until a shutdown completes, or a poller error cuts it short; either way
    /// the handler then writes out what it still holds ([`EventHandler::finish`]).
    pub fn run(&mut self) -> Result<()> {
        let result = self.run_turns();
        self.handler.finish();
        result
    }

    fn run_turns(&mut self) -> Result<()> {
        self.net
            .enable_ring()
            .context("cannot start the loop's io_uring")?;
        loop {
            self.turn().context("the event loop failed")?;
            let Some(deadline) = self.stopping else {
                continue;
            };
            // (On the ring the listeners stay until their accepts are cancelled.)
            if self.net.is_empty() && self.listeners.is_empty() {
                info!("every connection has finished; exiting");
                return Ok(());
            }
            if Instant::now() >= deadline {
                let closed = self.net.drop_all();
                info!(
                    closed,
                    "shutdown timeout reached; closed the remaining connections"
                );
                return Ok(());
            }
        }
    }

    /// One turn: wait, take in the edges, make (at most) one handler call.
    pub fn turn(&mut self) -> Result<()> {
        let now = Instant::now();
        let timeout = self.timeout(now);
        match self.wait(timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.into()),
        }

        // A retry asked for in an earlier turn (not in this one: a failed accept
        // is tried again after a pause, not at once).
        let retry_due =
            std::mem::take(&mut self.accept_retry) && !self.paused && self.stopping.is_none();
        let mut admission = Admission {
            net: &mut self.net,
            handler: &mut self.handler,
            batch: &mut self.batch,
            retry: &mut self.accept_retry,
            refused: &mut self.refused,
        };
        if let Some(accepts) = &mut self.ring_accepts {
            let stopped = self.paused || self.stopping.is_some();
            // After the guest heard `shutdown`, no new connection comes to it.
            let refusing = self.stopping.is_some() && self.telling_guest.is_none();
            accepts.completed(&self.listeners, &mut admission, stopped, refusing);
            if stopped && accepts.idle() {
                // Every connection the kernel accepted for this loop is in: a
                // shutdown may close the listeners now.
                if self.stopping.is_some() {
                    self.listeners.clear();
                }
                self.remote.paused_now.store(true, Ordering::Release);
            }
        }
        if retry_due {
            match &mut self.ring_accepts {
                Some(accepts) => accepts.arm(&self.listeners, admission.net),
                None => self.listeners.iter().for_each(|l| admission.accept(l)),
            }
        }
        let mut woken = false;
        for event in self.events.iter() {
            match event.token() {
                WAKER => woken = true,
                Token(token) if token >= LISTENER_BASE => {
                    if let Some(listener) = self.listeners.get(token - LISTENER_BASE) {
                        admission.accept(listener);
                    }
                }
                Token(slot) => admission.net.on_socket_event(slot, event),
            }
        }
        // TLS connections whose handshake finished: now the guest hears of them.
        while let Some(slot) = self.net.next_handshaken() {
            if !self.handler.accepting() {
                self.net.counters_mut().refused_guest_down += 1;
                self.net.refuse(slot);
                continue;
            }
            if self.stopping.is_some() && self.telling_guest.is_none() {
                // The guest heard `shutdown`: no new connection comes after it.
                self.net.refuse(slot);
                continue;
            }
            let owner = self.handler.owner_for_new_connection();
            if let Some(id) = self.net.adopt(slot, owner) {
                self.batch.push(owner, Event::Accepted(id));
            }
        }
        if woken {
            if self.remote.stop.load(Ordering::Acquire) && self.stopping.is_none() {
                self.begin_shutdown();
            }
            let paused = self.remote.paused.load(Ordering::Acquire);
            if paused != self.paused && self.stopping.is_none() {
                self.pause(paused);
            }
            // Dropped during a shutdown: the upgrade fails, and nothing moves.
            if let Some(order) = self.remote.take_handover()
                && self.stopping.is_none()
            {
                self.net.hold_input(true);
                self.settling = Some((order, Instant::now() + SETTLE_WAIT));
            }
            self.handler.on_wake(&mut self.net);
        }

        let now = Instant::now();
        self.handler.tick(now, &mut self.net);
        self.net.sweep_deadlines(now);

        self.net.collect(&mut self.batch);
        self.handler.collect(&mut self.batch);
        if !self.batch.is_empty() {
            self.handler.handle(&self.batch, &mut self.net);
            self.batch.clear();
            self.net.prune();
        }
        // (On the ring, once the connections accepted until the accepts' cancels
        // completed are in too.)
        let accepted_all = self.ring_accepts.as_ref().is_none_or(RingAccepts::idle);
        if let Some(latest) = self.telling_guest
            && ((accepted_all && !self.net.has_unheard()) || Instant::now() >= latest)
        {
            self.tell_guest();
        }
        // At the end of a turn: every call is over, nothing is half done.
        if let Some(by) = self.settling.as_ref().map(|(_, by)| *by) {
            let settled = !self.handler.owes() && self.net.ring_quiet() && self.accepts_quiet();
            if settled || Instant::now() >= by {
                let (order, _) = self.settling.take().expect("settling");
                if settled {
                    self.hand_over(order);
                } else {
                    self.net.hold_input(false);
                    let waited = if self.handler.owes() {
                        "its guests still waited for the store"
                    } else {
                        "its io_uring still had accepts, receives or sends in flight"
                    };
                    let why = format!(
                        "worker {}: {waited} after {SETTLE_WAIT:?}; nothing was handed over",
                        order.worker
                    );
                    let _ = order.parcels.send(Err(why));
                }
            }
        }
        self.publish();
        Ok(())
    }

    /// Waits for the next events, for up to `timeout`: on epoll, or on the ring
    /// (whose completions [`Net`] takes in), and then on epoll without waiting if
    /// the ring said epoll had something.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !self.net.on_ring() {
            return self.poll.poll(&mut self.events, timeout);
        }
        let epoll = self.net.ring_turn(timeout)? || self.epoll_more;
        if !epoll {
            self.events.clear();
            return Ok(());
        }
        self.poll.poll(&mut self.events, Some(Duration::ZERO))?;
        // A full list may have left events behind, and no new wake-up comes for
        // them: look again next turn.
        self.epoll_more = self.events.iter().count() == EVENTS_PER_POLL;
        Ok(())
    }

    /// Hands the loop's connections over, or keeps them, as the upgrade goes; then
    /// what stays takes input again (after the handed ones left: on the ring, a
    /// receive armed before could take bytes that are the new process's).
    fn hand_over(&mut self, order: HandoverOrder) {
        self.pack_and_wait(order);
        self.net.hold_input(false);
    }

    /// Packs the loop's plain connections and its guests' state for an upgrade's
    /// new process, and waits for the verdict (see [`HandoverOrder`]). The loop does
    /// nothing meanwhile: the parcel stays true.
    fn pack_and_wait(&mut self, order: HandoverOrder) {
        let HandoverOrder {
            worker,
            parcels,
            verdict,
        } = order;
        let (_, gauges) = self.net.metrics();
        if gauges.buffered > MAX_CARRIED_BYTES {
            let why = format!(
                "worker {worker} holds {} MiB unsent, more than an upgrade carries ({} MiB); nothing was handed over",
                gauges.buffered >> 20,
                MAX_CARRIED_BYTES >> 20
            );
            let _ = parcels.send(Err(why));
            return;
        }
        let mut owners = self.net.carried_owners();
        let snapshots = self.handler.carry_states(&mut owners);
        let Packed {
            parcel,
            fds,
            slots,
            kept,
        } = self.net.pack(&owners, snapshots);
        let connections = parcel.conns.len();
        let bundle = Bundle {
            worker,
            parcel,
            fds,
            kept,
        };
        if parcels.send(Ok(bundle)).is_err() {
            return;
        }
        drop(parcels);
        if verdict.recv() == Ok(true) {
            self.net.release_packed(&slots, &owners);
            info!(
                connections,
                kept, "upgrade: handed {connections} connection(s) to the new process"
            );
            self.begin_shutdown();
        } else {
            info!(
                connections,
                "upgrade: nothing handed over; this worker keeps its connections"
            );
        }
    }

    /// Takes in the connections an upgrade's old process handed over for this
    /// worker (`fds` in the order of `parcel.conns`): into its table and its epoll,
    /// under their handles, the guest not told yet (see [`EventLoop::adopt`]).
    /// Before the loop runs.
    pub fn unpack(&mut self, parcel: Parcel, fds: Vec<OwnedFd>) -> Result<Vec<CarriedGroup>> {
        let owners: Vec<Owner> = parcel
            .groups
            .iter()
            .map(|_| self.handler.owner_for_new_connection())
            .collect();
        self.net
            .unpack(parcel, fds, &owners)
            .context("cannot take the connections the old process handed over")
    }

    /// Gives the guest what [`EventLoop::unpack`] took in: each old instance's
    /// state, then its connections, as a handoff does. Once the old process has let
    /// them go.
    pub fn adopt(&mut self, groups: Vec<CarriedGroup>) {
        self.handler.adopt_carried(groups, &mut self.net);
    }

    /// How long the next wait may last: not at all while a connection is still
    /// ready, else until the next timer, deadline check, accept retry, handler tick
    /// or the end of a shutdown.
    fn timeout(&mut self, now: Instant) -> Option<Duration> {
        if self.net.has_ready() || self.handler.has_pending() || self.epoll_more {
            return Some(Duration::ZERO);
        }
        let mut wake = self.net.next_wake(now);
        if self.accept_retry {
            wake = Some(wake.map_or(ACCEPT_RETRY, |w| w.min(ACCEPT_RETRY)));
        }
        let settled_by = self.settling.as_ref().map(|(_, by)| *by);
        let deadlines = [
            self.stopping,
            self.telling_guest,
            self.handler.next_tick(),
            settled_by,
        ];
        for deadline in deadlines.into_iter().flatten() {
            let left = deadline.saturating_duration_since(now);
            wake = Some(wake.map_or(left, |w| w.min(left)));
        }
        wake
    }

    /// Whether no accept of this loop's is still armed on the ring while it is
    /// paused: an upgrade's handover packs only after the connections accepted
    /// until the cancels completed are in.
    fn accepts_quiet(&self) -> bool {
        !self.paused || self.ring_accepts.as_ref().is_none_or(RingAccepts::idle)
    }

    /// Takes the listeners out of the poll (on the ring: cancels their accepts), or
    /// puts them back; back in, they are accepted from at once (an edge may have
    /// passed while they were out).
    fn pause(&mut self, paused: bool) {
        self.paused = paused;
        self.accept_retry = !paused;
        info!(
            paused,
            "accepting {}",
            if paused { "paused" } else { "again" }
        );
        if let Some(accepts) = &mut self.ring_accepts {
            // On the ring, paused once the cancelled accepts' last completions have
            // come (the connections accepted before them are taken in first).
            if paused {
                accepts.cancel(&mut self.net);
            }
            let paused_now = paused && accepts.idle();
            self.remote.paused_now.store(paused_now, Ordering::Release);
            return;
        }
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            let registry = self.poll.registry();
            let result = if paused {
                registry.deregister(&mut listener.socket)
            } else {
                registry.register(
                    &mut listener.socket,
                    Token(LISTENER_BASE + i),
                    Interest::READABLE,
                )
            };
            if let Err(e) = result {
                warn!(error = %e, paused, "cannot change a listener's registration");
            }
        }
        self.remote.paused_now.store(paused, Ordering::Release);
    }

    /// Stops accepting, tells the guest, and gives the open connections until the
    /// shutdown timeout to finish.
    fn begin_shutdown(&mut self) {
        // An upgrade's handover still settling is given up: its supervisor has
        // failed it already, or is shutting down.
        if self.settling.take().is_some() {
            self.net.hold_input(false);
        }
        let limit = match self.remote.stop_within.load(Ordering::Acquire) {
            u64::MAX => self.shutdown_timeout,
            ms => self.shutdown_timeout.min(Duration::from_millis(ms)),
        };
        info!(
            connections = self.net.len(),
            timeout = ?limit,
            "shutting down: no new connections; waiting for open ones to finish"
        );
        self.stopping = Some(Instant::now() + limit);
        if let Some(published) = &self.published {
            published
                .stopping
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Dropping the listeners closes them: new clients are refused, not queued
        // (unless an upgrade's new process holds them too: it accepts them). On
        // the ring their accepts are cancelled first, and the connections accepted
        // until the cancels complete are taken in; then the listeners close (see
        // `turn`).
        match &mut self.ring_accepts {
            Some(accepts) => accepts.cancel(&mut self.net),
            None if !self.paused => {
                for listener in &mut self.listeners {
                    let _ = self.poll.registry().deregister(&mut listener.socket);
                }
            }
            None => {}
        }
        if self.ring_accepts.as_ref().is_none_or(RingAccepts::idle) {
            self.listeners.clear();
            self.remote.paused_now.store(true, Ordering::Release);
        }
        self.accept_retry = false;
        // The guest hears `shutdown` at the end of a turn in which every accepted
        // connection has sent something and every TLS handshake under way has
        // ended (at once, usually), or after the grace.
        let grace = FIRST_BYTES_GRACE.min(limit / 2);
        self.telling_guest = Some(Instant::now() + grace);
    }

    /// The guest hears `shutdown`: TLS handshakes still under way (they would
    /// become new connections after it) end first.
    fn tell_guest(&mut self) {
        self.telling_guest = None;
        let handshakes = self.net.drop_handshakes();
        if handshakes > 0 {
            debug!(
                handshakes,
                "closed TLS handshakes under way at the shutdown"
            );
        }
        self.handler.shutdown(&mut self.net);
    }
}
