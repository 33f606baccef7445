//! The event loop: one thread, one `epoll` (through mio), one guest call per turn.
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

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, warn};

use crate::handler::EventHandler;
use crate::limits::SLOT_BITS;
use crate::net::Net;
use crate::rate_limit::RateLimit;
use crate::wit::Event;

/// Tokens below this are connection slots; listeners sit above.
const LISTENER_BASE: usize = 1 << SLOT_BITS;
/// Events taken from the kernel per wait.
const EVENTS_PER_POLL: usize = 1024;
/// After an accept failure (out of file descriptors, say), the listener is retried
/// this soon: with edge-triggered readiness no new edge may come for the queue.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// How often closing connections are checked for their linger deadline.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
    batch: Vec<Event>,
    accept_retry: bool,
    last_sweep: Instant,
    refused: RateLimit,
}

impl<H: EventHandler> EventLoop<H> {
    /// Registers the listeners; `net` carries the limits.
    pub fn new(mut listeners: Vec<TcpListener>, handler: H, net: Net) -> Result<Self> {
        let poll = Poll::new().context("cannot create the epoll instance")?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(LISTENER_BASE + i), Interest::READABLE)
                .context("cannot register a listener with epoll")?;
        }
        Ok(Self {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL),
            listeners,
            net,
            handler,
            batch: Vec::with_capacity(EVENTS_PER_POLL),
            accept_retry: false,
            last_sweep: Instant::now(),
            refused: RateLimit::new(Duration::from_secs(1)),
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Runs until an unrecoverable poller error.
    pub fn run(&mut self) -> Result<()> {
        loop {
            self.turn().context("the event loop failed")?;
        }
    }

    /// One turn: wait, take in the edges, make (at most) one guest call.
    pub fn turn(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let timeout = if self.net.has_ready() {
            Some(Duration::ZERO)
        } else {
            let wake = self.net.next_wake(now);
            if self.accept_retry {
                Some(wake.map_or(ACCEPT_RETRY, |w| w.min(ACCEPT_RETRY)))
            } else {
                wake
            }
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }

        if std::mem::take(&mut self.accept_retry) {
            for index in 0..self.listeners.len() {
                self.accept(index);
            }
        }
        for event in self.events.iter() {
            match event.token() {
                Token(token) if token >= LISTENER_BASE => {
                    accept(
                        &mut self.listeners[token - LISTENER_BASE],
                        &self.poll,
                        &mut self.net,
                        &mut self.batch,
                        &mut self.accept_retry,
                        &mut self.refused,
                    );
                }
                Token(slot) => self.net.on_socket_event(slot, event),
            }
        }

        let now = Instant::now();
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.net.sweep_closing(now);
        }

        self.net.collect(&mut self.batch);
        if !self.batch.is_empty() {
            self.handler.handle(&self.batch, &mut self.net);
            self.batch.clear();
            self.net.prune();
        }
        Ok(())
    }

    fn accept(&mut self, index: usize) {
        accept(
            &mut self.listeners[index],
            &self.poll,
            &mut self.net,
            &mut self.batch,
            &mut self.accept_retry,
            &mut self.refused,
        );
    }
}

/// Accepts every pending connection of one listener (edge-triggered: until
/// `WouldBlock`), and adds an `accepted` event for each to the batch.
fn accept(
    listener: &mut TcpListener,
    poll: &Poll,
    net: &mut Net,
    batch: &mut Vec<Event>,
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
        // Answers are small and come in one write: Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let Ok((slot, id)) = net.insert(stream, peer, 0) else {
            continue;
        };
        let stream = net.stream_mut(slot).expect("just inserted");
        match poll
            .registry()
            .register(stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            Ok(()) => {
                debug!(conn = id, %peer, "accepted");
                batch.push(Event::Accepted(id));
            }
            Err(e) => {
                warn!(error = %e, %peer, "cannot register a connection with epoll");
                net.discard(slot);
            }
        }
    }
}
