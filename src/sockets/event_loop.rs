//! [`EventLoop`]: one thread, one `epoll` (through mio), one handler call per turn.
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
//! `SIGHUP` asks the handler to reload its guest. `SIGTERM` or `SIGINT` starts a
//! shutdown: the listeners close, the guest hears `shutdown`, and the loop runs until
//! every connection has finished or the shutdown timeout has passed. A second signal
//! ends it at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{debug, info, warn};

use super::allow::AllowList;
use super::batch::Batch;
use super::connection::Phase;
use super::handler::EventHandler;
use super::net::Net;
use crate::limits::{Limits, SLOT_BITS};
use crate::rate_limit::RateLimit;
use crate::wit::Event;

/// Tokens below this are connection slots; listeners sit above.
const LISTENER_BASE: usize = 1 << SLOT_BITS;
/// The signal pipe's token, above every listener's.
const SIGNALS: Token = Token(usize::MAX);
/// The waker's token: other threads (the guest loader) wake the loop with it.
const WAKER: Token = Token(usize::MAX - 1);
/// Events taken from the kernel per wait.
const EVENTS_PER_POLL: usize = 1024;
/// After an accept failure (out of file descriptors, say), the listener is retried
/// this soon: with edge-triggered readiness no new edge may come for the queue.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Binds every address, naming the one that fails.
pub fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|addr| TcpListener::bind(*addr).with_context(|| format!("cannot listen on {addr}")))
        .collect()
}

/// The loop, generic over what handles the batches so that the wasm guest and the
/// native baseline run through exactly the same code.
pub struct EventLoop<H> {
    poll: Poll,
    events: Events,
    listeners: Vec<TcpListener>,
    net: Net,
    handler: H,
    batch: Batch,
    signals: Signals,
    waker: Arc<Waker>,
    shutdown_timeout: Duration,
    /// Set once a shutdown has begun: when it must end.
    stopping: Option<Instant>,
    accept_retry: bool,
    refused: RateLimit,
}

impl<H: EventHandler> EventLoop<H> {
    /// Registers the listeners and the shutdown signals.
    pub fn new(
        mut listeners: Vec<TcpListener>,
        handler: H,
        limits: Limits,
        allow: AllowList,
        shutdown_timeout: Duration,
    ) -> Result<Self> {
        let poll = Poll::new().context("cannot create the epoll instance")?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(LISTENER_BASE + i), Interest::READABLE)
                .context("cannot register a listener with epoll")?;
        }
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP]).context("cannot install signal handlers")?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .context("cannot register the signal pipe with epoll")?;
        let waker = Waker::new(poll.registry(), WAKER).context("cannot create the loop's waker")?;
        let registry = poll
            .registry()
            .try_clone()
            .context("cannot clone the epoll registry")?;
        Ok(Self {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            listeners,
            net: Net::new(limits, allow, registry),
            handler,
            batch: Batch::default(),
            signals,
            waker: Arc::new(waker),
            shutdown_timeout,
            stopping: None,
            accept_retry: false,
            refused: RateLimit::new(Duration::from_secs(1)),
        })
    }

    /// Wakes the loop from another thread.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The handler, to finish setting it up.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Runs until a shutdown completes (`Ok`), or a second signal or a poller error
    /// cuts it short.
    pub fn run(&mut self) -> Result<()> {
        loop {
            self.turn().context("the event loop failed")?;
            let Some(deadline) = self.stopping else {
                continue;
            };
            if self.net.is_empty() {
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
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.into()),
        }

        if std::mem::take(&mut self.accept_retry) {
            for listener in &mut self.listeners {
                accept(
                    listener,
                    &mut self.net,
                    &mut self.handler,
                    &mut self.batch,
                    &mut self.accept_retry,
                    &mut self.refused,
                );
            }
        }
        let mut signalled = false;
        let mut woken = false;
        for event in self.events.iter() {
            match event.token() {
                SIGNALS => signalled = true,
                WAKER => woken = true,
                Token(token) if token >= LISTENER_BASE => {
                    let index = token - LISTENER_BASE;
                    if index < self.listeners.len() {
                        accept(
                            &mut self.listeners[index],
                            &mut self.net,
                            &mut self.handler,
                            &mut self.batch,
                            &mut self.accept_retry,
                            &mut self.refused,
                        );
                    }
                }
                Token(slot) => self.net.on_socket_event(slot, event),
            }
        }
        if signalled {
            self.on_signal()?;
        }
        if woken {
            self.handler.on_wake(&mut self.net);
        }

        let now = Instant::now();
        self.handler.tick(now, &mut self.net);
        self.net.sweep_deadlines(now);

        self.net.collect(&mut self.batch);
        if !self.batch.is_empty() {
            self.handler.handle(&self.batch, &mut self.net);
            self.batch.clear();
            self.net.prune();
        }
        Ok(())
    }

    /// How long the next wait may last: not at all while a connection is still
    /// ready, else until the next timer, deadline check, accept retry, handler tick
    /// or the end of a shutdown.
    fn timeout(&mut self, now: Instant) -> Option<Duration> {
        if self.net.has_ready() {
            return Some(Duration::ZERO);
        }
        let mut wake = self.net.next_wake(now);
        if self.accept_retry {
            wake = Some(wake.map_or(ACCEPT_RETRY, |w| w.min(ACCEPT_RETRY)));
        }
        let deadlines = [self.stopping, self.handler.next_tick()];
        for deadline in deadlines.into_iter().flatten() {
            let left = deadline.saturating_duration_since(now);
            wake = Some(wake.map_or(left, |w| w.min(left)));
        }
        wake
    }

    /// `SIGHUP` asks for a reload. The first `SIGTERM` or `SIGINT` starts a
    /// shutdown; a second one ends the process at once.
    fn on_signal(&mut self) -> Result<()> {
        let mut received: Vec<i32> = self.signals.pending().collect();
        if received.contains(&SIGHUP) {
            info!("SIGHUP: reloading the guest");
            self.handler.reload();
            received.retain(|&s| s != SIGHUP);
        }
        if received.is_empty() {
            return Ok(());
        }
        if self.stopping.is_some() {
            bail!("a second signal during shutdown: exiting at once");
        }
        info!(
            signal = received[0],
            connections = self.net.len(),
            timeout = ?self.shutdown_timeout,
            "shutting down: no new connections; waiting for open ones to finish"
        );
        self.stopping = Some(Instant::now() + self.shutdown_timeout);
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener);
        }
        // Dropping the listeners closes them: new clients are refused, not queued.
        self.listeners.clear();
        self.accept_retry = false;
        self.handler.shutdown(&mut self.net);
        Ok(())
    }
}

/// Accepts every pending connection of one listener (edge-triggered: until
/// `WouldBlock`), and adds an `accepted` event for each to the batch.
fn accept(
    listener: &mut TcpListener,
    net: &mut Net,
    handler: &mut impl EventHandler,
    batch: &mut Batch,
    retry: &mut bool,
    refused: &mut RateLimit,
) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors, most likely: the queue stays, so come back soon.
                *retry = true;
                if refused.allow() {
                    warn!(error = %e, "accept failed; retrying shortly");
                }
                return;
            }
        };
        if net.len() >= net.limits().max_connections {
            if refused.allow() {
                warn!(
                    limit = net.limits().max_connections,
                    "connection limit reached; closing new connections at once"
                );
            }
            continue; // dropping `stream` closes it
        }
        if !handler.accepting() {
            if refused.allow() {
                warn!(
                    "the guest is not running (backing off after traps); closing new connections"
                );
            }
            continue;
        }
        // Answers are small and come in one write: Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let owner = handler.owner_for_new_connection();
        match net.insert(stream, peer, owner, Phase::Open) {
            Ok(id) => {
                debug!(conn = id, %peer, "accepted");
                batch.push(owner, Event::Accepted(id));
            }
            Err(e) => warn!(error = %e, %peer, "cannot take a new connection"),
        }
    }
}
