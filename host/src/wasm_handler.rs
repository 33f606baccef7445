//! Runs a wasm guest as the loop's [`EventHandler`]: one instance for every
//! connection, or one per connection, cut off and replaced when it traps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use crate::connection::Owner;
use crate::handler::{Batch, EventHandler};
use crate::net::Net;
use crate::rate_limit::RateLimit;
use crate::runtime::{Guest, Instance, Isolation, Runtime, backtrace, describe};
use crate::wit::Event;

/// A crash-looping guest is started again no sooner than this after a failure,
/// doubling up to [`MAX_BACKOFF`], so that it cannot make the host spin.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between two attempts to start a guest that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Two failures closer together than this count as a crash loop.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(1);
/// The owner of every connection with a shared instance.
const SHARED: Owner = 0;

/// Delays restarts of a guest that keeps failing.
#[derive(Debug)]
struct Backoff {
    delay: Duration,
    until: Option<Instant>,
    last_failure: Option<Instant>,
}

impl Backoff {
    fn new() -> Self {
        Self {
            delay: FIRST_BACKOFF,
            until: None,
            last_failure: None,
        }
    }

    /// Records a failure: an isolated one is retried at once, one soon after another
    /// waits, longer each time.
    fn failed(&mut self) {
        let now = Instant::now();
        let looping = self
            .last_failure
            .is_some_and(|at| now - at < CRASH_LOOP_WINDOW);
        self.last_failure = Some(now);
        if looping {
            self.until = Some(now + self.delay);
            self.delay = (self.delay * 2).min(MAX_BACKOFF);
        } else {
            self.delay = FIRST_BACKOFF;
            self.until = None;
        }
    }

    /// Whether a start may be attempted now.
    fn ready(&mut self) -> bool {
        match self.until {
            None => true,
            Some(until) if Instant::now() >= until => {
                self.until = None;
                true
            }
            Some(_) => false,
        }
    }

    fn waiting(&self) -> Option<Duration> {
        self.until
            .map(|until| until.saturating_duration_since(Instant::now()))
    }
}

/// An [`EventHandler`] running a wasm guest under `--isolation`.
pub struct WasmHandler {
    runtime: Arc<Runtime>,
    guest: Guest,
    isolation: Isolation,
    /// Live instances by owner; with shared isolation at most one, [`SHARED`].
    instances: HashMap<Owner, Instance>,
    /// With an instance per connection: each instance's events of the current batch,
    /// kept between batches (while the instance lives) so that their memory is reused.
    groups: HashMap<Owner, Vec<Event>>,
    /// The owners with events in the current batch, in order of first event.
    touched: Vec<Owner>,
    next_owner: Owner,
    backoff: Backoff,
    traps: u64,
    down_log: RateLimit,
}

impl WasmHandler {
    /// Starts serving `guest`. With shared isolation the instance starts now, so
    /// that a guest that cannot start is an error at start-up, where the user sees it.
    pub fn new(runtime: Arc<Runtime>, guest: Guest) -> Result<Self> {
        let isolation = runtime.sandbox().isolation;
        let mut handler = Self {
            runtime,
            guest,
            isolation,
            instances: HashMap::new(),
            groups: HashMap::new(),
            touched: Vec::new(),
            next_owner: SHARED,
            backoff: Backoff::new(),
            traps: 0,
            down_log: RateLimit::default(),
        };
        match isolation {
            Isolation::Shared => {
                let instance = handler
                    .runtime
                    .instantiate(&handler.guest)
                    .with_context(|| format!("guest `{}` failed to start", handler.guest.name))?;
                handler.instances.insert(SHARED, instance);
            }
            Isolation::Connection => {
                // Check now that an instance can start at all.
                handler
                    .runtime
                    .instantiate(&handler.guest)
                    .with_context(|| format!("guest `{}` failed to start", handler.guest.name))?;
            }
        }
        Ok(handler)
    }

    /// The instance for `owner`, starting it if it may be started. `None` when the
    /// guest cannot run now (it failed to start, or is backing off).
    fn instance(&mut self, owner: Owner) -> Option<&mut Instance> {
        if !self.instances.contains_key(&owner) {
            if !self.backoff.ready() {
                return None;
            }
            match self.runtime.instantiate(&self.guest) {
                Ok(instance) => {
                    if self.isolation == Isolation::Shared {
                        info!(
                            guest = &*self.guest.name,
                            "a fresh guest instance took over"
                        );
                    }
                    self.instances.insert(owner, instance);
                }
                Err(err) => {
                    self.backoff.failed();
                    error!(
                        guest = &*self.guest.name,
                        retry_in = ?self.backoff.waiting().unwrap_or_default(),
                        "guest failed to start: {}",
                        describe(&err, false)
                    );
                    return None;
                }
            }
        }
        self.instances.get_mut(&owner)
    }

    /// Runs one instance's events; on a trap, cuts the instance off.
    fn run(&mut self, owner: Owner, events: &[Event], net: &mut Net) {
        let limits = self.runtime.sandbox().limits.clone();
        let Some(instance) = self.instance(owner) else {
            self.refuse(owner, events, net);
            return;
        };
        if let Err(err) = instance.call(events, net, owner, &limits) {
            let memory_refused = instance.memory_refused();
            self.on_trap(owner, err, memory_refused, net);
        }
    }

    /// Logs a trap once with its cause and the guest's backtrace, closes the
    /// connections the instance held, and drops the instance: the next batch (or
    /// the next connection) gets a fresh one.
    fn on_trap(&mut self, owner: Owner, err: anyhow::Error, memory_refused: bool, net: &mut Net) {
        self.traps += 1;
        self.instances.remove(&owner);
        let closed = net.close_owned_by(owner);
        net.clear_timers(owner);
        // With an instance per connection a trap costs one connection, not a restart
        // of the whole guest: only shared instances count towards a crash loop.
        if self.isolation == Isolation::Shared {
            self.backoff.failed();
        }
        // One record: the cause on its first line, the guest's backtrace below it.
        error!(
            guest = &*self.guest.name,
            traps = self.traps,
            "guest trapped: {}; closed its {closed} connection(s), a fresh instance takes over\n{}",
            describe(&err, memory_refused),
            backtrace(&err)
        );
    }

    /// While the guest cannot run, what it would have been told is answered by
    /// closing: new connections are closed at once, the others were closed already.
    fn refuse(&mut self, owner: Owner, events: &[Event], net: &mut Net) {
        net.set_caller(owner);
        let mut refused = 0;
        for event in events {
            if let Event::Accepted(conn) | Event::Connected(conn) = event
                && net.close(*conn).is_ok()
            {
                refused += 1;
            }
        }
        net.close_owned_by(owner);
        if refused > 0 && self.down_log.allow() {
            warn!(
                guest = &*self.guest.name,
                refused, "the guest is not running; closed new connections"
            );
        }
    }
}

impl EventHandler for WasmHandler {
    fn owner_for_new_connection(&mut self) -> Owner {
        match self.isolation {
            Isolation::Shared => SHARED,
            Isolation::Connection => {
                self.next_owner = self.next_owner.wrapping_add(1).max(1);
                self.next_owner
            }
        }
    }

    fn accepting(&mut self) -> bool {
        self.backoff.until.is_none() || self.backoff.ready()
    }

    fn handle(&mut self, batch: &Batch, net: &mut Net) {
        match self.isolation {
            Isolation::Shared => self.run(SHARED, batch.events(), net),
            Isolation::Connection => {
                for (owner, event) in batch.iter() {
                    let events = self.groups.entry(owner).or_default();
                    if events.is_empty() {
                        self.touched.push(owner);
                    }
                    events.push(*event);
                }
                let mut touched = std::mem::take(&mut self.touched);
                for &owner in &touched {
                    let mut events = self.groups.remove(&owner).unwrap_or_default();
                    self.run(owner, &events, net);
                    if net.owned_by(owner) == 0 {
                        // An instance per connection ends with its connections.
                        self.instances.remove(&owner);
                        net.clear_timers(owner);
                    } else {
                        events.clear();
                        self.groups.insert(owner, events);
                    }
                }
                touched.clear();
                self.touched = touched;
            }
        }
    }

    fn shutdown(&mut self, net: &mut Net) {
        let owners: Vec<Owner> = self.instances.keys().copied().collect();
        for owner in owners {
            self.run(owner, &[Event::Shutdown], net);
            if self.isolation == Isolation::Connection && net.owned_by(owner) == 0 {
                self.instances.remove(&owner);
                self.groups.remove(&owner);
                net.clear_timers(owner);
            }
        }
    }
}
