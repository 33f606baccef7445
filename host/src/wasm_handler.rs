//! Runs a wasm guest as the loop's [`EventHandler`]: its generations (one per hot
//! swap), their instances (one for every connection, or one per connection), traps
//! and crash-loop back-off.
//!
//! Every connection has an owner, the guest instance whose events it produces.
//! Owners are never reused, so a connection handed from one generation to the next
//! simply changes owner.

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
use crate::swap::{Loaded, Reloader};
use crate::wit::{Conn, Event};

/// A crash-looping guest is started again no sooner than this after a failure,
/// doubling up to [`MAX_BACKOFF`], so that it cannot make the host spin.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between two attempts to start a guest that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Two failures closer together than this count as a crash loop.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(1);

/// What happens to open connections when a new generation takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SwapMode {
    /// Open connections stay with the generation that accepted them until they
    /// close; only new ones go to the new generation.
    Drain,
    /// Open connections move to the new generation at once (`adopted`), with the
    /// guest's state handed over through its optional `state` interface.
    Handoff,
}

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

    fn waiting(&self) -> Duration {
        self.until.map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        })
    }
}

/// One loaded version of the guest.
struct Generation {
    number: u32,
    guest: Guest,
    /// With shared isolation, the owner of its one instance's connections.
    shared_owner: Owner,
    /// Its live instances.
    instances: usize,
    /// When a newer generation took over new connections; `None` while current.
    retired: Option<Instant>,
}

/// An [`EventHandler`] running a wasm guest under `--isolation` and `--swap`.
pub struct WasmHandler {
    runtime: Arc<Runtime>,
    isolation: Isolation,
    swap_mode: SwapMode,
    drain_timeout: Option<Duration>,
    /// Oldest first; the last one is current and takes new connections.
    generations: Vec<Generation>,
    /// The generation of every owner that holds, or may get, an instance.
    owners: HashMap<Owner, u32>,
    instances: HashMap<Owner, Instance>,
    /// Each instance's events of the current batch, kept between batches (while
    /// the instance lives) so that their memory is reused.
    groups: HashMap<Owner, Vec<Event>>,
    /// The owners with events in the current batch, in order of first event.
    touched: Vec<Owner>,
    next_owner: Owner,
    next_generation: u32,
    backoff: Backoff,
    traps: u64,
    down_log: RateLimit,
    reloader: Option<Reloader>,
}

impl WasmHandler {
    /// Starts serving `guest` as generation 1. An instance starts now, so that a
    /// guest that cannot start is an error at start-up, where the user sees it.
    pub fn new(
        runtime: Arc<Runtime>,
        guest: Guest,
        swap_mode: SwapMode,
        drain_timeout: Option<Duration>,
    ) -> Result<Self> {
        let isolation = runtime.sandbox().isolation;
        let first = runtime
            .instantiate(&guest)
            .with_context(|| format!("guest `{}` failed to start", guest.name))?;
        let mut handler = Self {
            runtime,
            isolation,
            swap_mode,
            drain_timeout,
            generations: Vec::new(),
            owners: HashMap::new(),
            instances: HashMap::new(),
            groups: HashMap::new(),
            touched: Vec::new(),
            next_owner: 0,
            next_generation: 1,
            backoff: Backoff::new(),
            traps: 0,
            down_log: RateLimit::default(),
            reloader: None,
        };
        handler.add_generation(guest, first);
        Ok(handler)
    }

    /// Lets `SIGHUP` and (with `--watch`) file changes bring new generations.
    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    fn current(&self) -> &Generation {
        self.generations
            .last()
            .expect("there is always a current generation")
    }

    fn generation_mut(&mut self, number: u32) -> Option<&mut Generation> {
        self.generations.iter_mut().find(|g| g.number == number)
    }

    fn new_owner(&mut self) -> Owner {
        self.next_owner += 1;
        self.next_owner
    }

    /// Makes `guest` the current generation; `first` is an instance of it already
    /// started (kept as the shared instance, or dropped: it proved the guest starts).
    fn add_generation(&mut self, guest: Guest, first: Instance) -> u32 {
        let number = self.next_generation;
        self.next_generation += 1;
        let shared_owner = self.new_owner();
        let mut generation = Generation {
            number,
            guest,
            shared_owner,
            instances: 0,
            retired: None,
        };
        if self.isolation == Isolation::Shared {
            self.owners.insert(shared_owner, number);
            self.instances.insert(shared_owner, first);
            generation.instances = 1;
        }
        info!(
            guest = &*generation.guest.name,
            keeps_state = generation.guest.keeps_state(),
            "generation {number} ({}) serving",
            generation.guest.short_digest()
        );
        self.generations.push(generation);
        number
    }

    /// The instance for `owner`, starting it if it may be started. `None` when the
    /// guest cannot run now (it failed to start, is backing off, or its generation
    /// is draining and lost its instance).
    fn instance(&mut self, owner: Owner) -> Option<&mut Instance> {
        if !self.instances.contains_key(&owner) {
            let number = *self.owners.get(&owner)?;
            let generation = self.generations.iter().find(|g| g.number == number)?;
            let restartable =
                generation.retired.is_none() || self.isolation == Isolation::Connection;
            if !restartable || !self.backoff.ready() {
                return None;
            }
            match self.runtime.instantiate(&generation.guest) {
                Ok(instance) => {
                    if self.isolation == Isolation::Shared {
                        info!(generation = number, "a fresh guest instance took over");
                    }
                    self.instances.insert(owner, instance);
                    self.generation_mut(number)?.instances += 1;
                }
                Err(err) => {
                    self.backoff.failed();
                    error!(
                        generation = number,
                        retry_in = ?self.backoff.waiting(),
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
        let Some(instance) = self.instance(owner) else {
            self.refuse(owner, events, net);
            return;
        };
        if let Err(err) = instance.call(events, net, owner) {
            let memory_refused = instance.memory_refused();
            self.on_trap(owner, err, memory_refused, net);
        }
    }

    /// Logs a trap once with its cause and the guest's backtrace, closes the
    /// connections the instance held, and drops the instance: the next batch (or
    /// the next connection) gets a fresh one.
    fn on_trap(&mut self, owner: Owner, err: anyhow::Error, memory_refused: bool, net: &mut Net) {
        self.traps += 1;
        let closed = net.close_owned_by(owner);
        self.end_instance(owner, net);
        // With an instance per connection a trap costs one connection, not a restart
        // of the whole guest: only shared instances count towards a crash loop.
        if self.isolation == Isolation::Shared {
            self.backoff.failed();
        }
        // One record: the cause on its first line, the guest's backtrace below it.
        error!(
            guest = &*self.current().guest.name,
            traps = self.traps,
            "guest trapped: {}; closed its {closed} connection(s), a fresh instance takes over\n{}",
            describe(&err, memory_refused),
            backtrace(&err)
        );
    }

    /// Drops an instance and its timers. An owner that can get no new instance (a
    /// connection's, or a retired generation's) is forgotten.
    fn end_instance(&mut self, owner: Owner, net: &mut Net) {
        net.clear_timers(owner);
        let Some(&number) = self.owners.get(&owner) else {
            return;
        };
        if self.instances.remove(&owner).is_some()
            && let Some(generation) = self.generation_mut(number)
        {
            generation.instances -= 1;
        }
        let current = self.current().number == number;
        if self.isolation == Isolation::Connection || !current {
            self.owners.remove(&owner);
            self.groups.remove(&owner);
        }
    }

    /// While the guest cannot run, what it would have been told is answered by
    /// closing: new connections are closed at once, the others were closed already.
    fn refuse(&mut self, owner: Owner, events: &[Event], net: &mut Net) {
        net.set_caller(owner);
        let mut refused = 0;
        for event in events {
            if let Event::Accepted(conn) | Event::Connected(conn) | Event::Adopted(conn) = event
                && net.close(*conn).is_ok()
            {
                refused += 1;
            }
        }
        net.close_owned_by(owner);
        if refused > 0 && self.down_log.allow() {
            warn!(refused, "the guest is not running; closed new connections");
        }
    }

    /// After an instance's call: an instance per connection ends with its
    /// connections, and so does a retired generation's shared instance.
    fn after_call(&mut self, owner: Owner, net: &mut Net) {
        if net.owned_by(owner) > 0 {
            return;
        }
        let retired = self
            .owners
            .get(&owner)
            .is_some_and(|&number| number != self.current().number);
        if self.isolation == Isolation::Connection || retired {
            self.end_instance(owner, net);
        }
    }

    /// Drops the retired generations that hold no instance and no connection.
    fn drop_drained(&mut self, net: &Net) {
        let current = self.current().number;
        self.generations.retain(|generation| {
            let drained = generation.number != current
                && generation.instances == 0
                && net.owned_by(generation.shared_owner) == 0;
            if drained {
                info!(
                    "generation {} dropped: its last connection has closed",
                    generation.number
                );
            }
            !drained
        });
    }

    /// Swaps in a newly loaded guest as the current generation.
    fn swap(&mut self, loaded: Loaded, net: &mut Net) {
        let digest = loaded.guest.short_digest();
        // Start it before retiring anything: a guest that cannot start is refused.
        let first = match self.runtime.instantiate(&loaded.guest) {
            Ok(instance) => instance,
            Err(err) => {
                warn!(
                    "reload refused: generation ({digest}) failed to start: {}",
                    describe(&err, false)
                );
                return;
            }
        };
        let now = Instant::now();
        for generation in &mut self.generations {
            generation.retired.get_or_insert(now);
        }
        let number = self.add_generation(loaded.guest, first);
        self.backoff = Backoff::new();
        match self.swap_mode {
            SwapMode::Drain => {
                for generation in &self.generations[..self.generations.len() - 1] {
                    let held: usize = self
                        .owners
                        .iter()
                        .filter(|&(_, &n)| n == generation.number)
                        .map(|(&owner, _)| net.owned_by(owner))
                        .sum();
                    info!(
                        "generation {} drains {held} connection(s)",
                        generation.number
                    );
                }
            }
            SwapMode::Handoff => self.hand_over(number, net),
        }
        info!(
            took = ?loaded.triggered.elapsed(),
            "swap to generation {number} ({digest}) done"
        );
        self.drop_drained(net);
    }

    /// Moves every connection of older generations to generation `number`: the old
    /// instance's snapshot goes to the new one's restore, then each connection is
    /// announced with `adopted`. The host's bytes for each stay where they are.
    fn hand_over(&mut self, number: u32, net: &mut Net) {
        let shared_target = self.current().shared_owner;
        let old: Vec<Owner> = self
            .owners
            .iter()
            .filter(|&(_, &n)| n != number)
            .map(|(&o, _)| o)
            .collect();
        let mut handed = 0;
        for old_owner in old {
            let state = match self.instances.get_mut(&old_owner).map(Instance::snapshot) {
                Some(Ok(state)) => state,
                Some(Err(err)) => {
                    warn!(
                        "the old generation's snapshot failed, handing over without state: {}",
                        describe(&err, false)
                    );
                    None
                }
                None => None,
            };
            let target = match self.isolation {
                Isolation::Shared => shared_target,
                Isolation::Connection => {
                    let owner = self.new_owner();
                    self.owners.insert(owner, number);
                    owner
                }
            };
            let conns: Vec<Conn> = net.reassign(old_owner, target);
            net.reassign_timers(old_owner, target);
            self.end_instance(old_owner, net);
            handed += conns.len();
            if let Some(state) = state
                && let Some(instance) = self.instance(target)
                && let Err(err) = instance.restore(state)
            {
                let memory_refused = instance.memory_refused();
                self.on_trap(target, err, memory_refused, net);
                continue;
            }
            if conns.is_empty() {
                self.after_call(target, net);
                continue;
            }
            let adopted: Vec<Event> = conns.iter().map(|&c| Event::Adopted(c)).collect();
            self.run(target, &adopted, net);
            self.after_call(target, net);
        }
        info!("handed {handed} connection(s) over to generation {number}");
    }

    /// Closes what retired generations still hold past `--drain-timeout`.
    fn enforce_drain_timeout(&mut self, now: Instant, net: &mut Net) {
        let Some(timeout) = self.drain_timeout else {
            return;
        };
        let expired: Vec<u32> = self
            .generations
            .iter()
            .filter(|g| g.retired.is_some_and(|at| now >= at + timeout))
            .map(|g| g.number)
            .collect();
        for number in expired {
            let owners: Vec<Owner> = self
                .owners
                .iter()
                .filter(|&(_, &n)| n == number)
                .map(|(&o, _)| o)
                .collect();
            let closed: usize = owners.iter().map(|&owner| net.close_owned_by(owner)).sum();
            for owner in owners {
                self.end_instance(owner, net);
            }
            if closed > 0 {
                warn!(
                    "generation {number}: --drain-timeout reached; closed its last {closed} connection(s)"
                );
            }
        }
        self.drop_drained(net);
    }
}

impl EventHandler for WasmHandler {
    fn owner_for_new_connection(&mut self) -> Owner {
        match self.isolation {
            Isolation::Shared => self.current().shared_owner,
            Isolation::Connection => {
                let owner = self.new_owner();
                let number = self.current().number;
                self.owners.insert(owner, number);
                owner
            }
        }
    }

    fn accepting(&mut self) -> bool {
        self.backoff.until.is_none() || self.backoff.ready()
    }

    fn handle(&mut self, batch: &Batch, net: &mut Net) {
        // The common case: one shared instance, every event is its own.
        if self.isolation == Isolation::Shared && self.generations.len() == 1 {
            let owner = self.current().shared_owner;
            self.run(owner, batch.events(), net);
            return;
        }
        for (owner, event) in batch.iter() {
            let events = self.groups.entry(owner).or_default();
            if events.is_empty() {
                self.touched.push(owner);
            }
            events.push(*event);
        }
        let mut touched = std::mem::take(&mut self.touched);
        for &owner in &touched {
            let events = self
                .groups
                .get_mut(&owner)
                .map(std::mem::take)
                .unwrap_or_default();
            self.run(owner, &events, net);
            self.after_call(owner, net);
            if let Some(slot) = self.groups.get_mut(&owner) {
                *slot = events;
                slot.clear();
            }
        }
        touched.clear();
        self.touched = touched;
        if self.generations.len() > 1 {
            self.drop_drained(net);
        }
    }

    fn shutdown(&mut self, net: &mut Net) {
        let owners: Vec<Owner> = self.instances.keys().copied().collect();
        for owner in owners {
            self.run(owner, &[Event::Shutdown], net);
            self.after_call(owner, net);
        }
    }

    fn reload(&mut self) {
        match &self.reloader {
            Some(reloader) => reloader.request(),
            None => warn!("SIGHUP ignored: a built-in guest has no file to reload"),
        }
    }

    fn on_wake(&mut self, net: &mut Net) {
        while let Some(loaded) = self.reloader.as_ref().and_then(Reloader::take) {
            self.swap(loaded, net);
        }
    }

    fn tick(&mut self, now: Instant, net: &mut Net) {
        if self.generations.len() > 1 {
            self.enforce_drain_timeout(now, net);
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        let timeout = self.drain_timeout?;
        self.generations
            .iter()
            .filter_map(|g| g.retired)
            .min()
            .map(|at| at + timeout)
    }
}
