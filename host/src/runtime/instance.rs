//! [`Instance`]: one live guest instance in a store of its own, and the budget each of
//! its calls runs under.
//!
//! One store per instance, because a trap poisons the whole store: recovery is a
//! fresh store and a fresh instance from the pre-instantiated component (~40 µs).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use wasmtime::Store;
use wasmtime_wasi::WasiCtxBuilder;

use super::component::Guest;
use super::contracts::{Handle, State};
use super::environment::{Environment, Journal, Reading};
use super::guest_log::{GuestBudget, GuestLog};
use super::imports::GuestState;
use super::limiter::Limiter;
use super::sandbox::Sandbox;
use super::shadow::ShadowIo;
use super::shadow_store::Recording;
use crate::shared::limits::{EPOCH_TICK, Limits};
use crate::shared::units::Size;
use crate::sockets::events::Event;
use crate::sockets::net::Net;
use crate::sockets::owners::Owner;
use crate::store::{Asker, Delivery, StoreLink};

/// A live instance and its store.
pub struct Instance {
    store: Store<GuestState>,
    /// Its `handle`, in the types of the contract it was built for.
    handle: Handle,
    state: Option<State>,
    budget: Budget,
    /// Its compiled guest's log budget, which counts the output lines dropped.
    log_budget: Arc<GuestBudget>,
    /// Its linear memory once started (or rebased): recycling looks at growth past it.
    initial_memory: usize,
    /// With `--record`: the clocks' and random generators' answers, for its tape.
    journal: Option<Journal>,
}

impl Instance {
    /// Starts a fresh instance of `guest` in a store of its own (of the engine its
    /// code was compiled for), within `sandbox`, its clocks and random bytes from
    /// `environment`.
    pub fn start(sandbox: &Sandbox, guest: &Guest, environment: Environment) -> Result<Self> {
        let mut wasi = WasiCtxBuilder::new();
        environment.apply(&mut wasi);
        let journal = environment.journal().cloned();
        let (stdout, stderr) = GuestLog::pair(guest.name.clone(), guest.log_budget.clone());
        let log = stdout.clone();
        wasi.stdout(stdout).stderr(stderr);
        for (key, value) in &sandbox.env {
            wasi.env(key, value);
        }
        let mut state = GuestState::new(wasi.build(), Limiter::new(sandbox.limits.max_memory), log);
        state.journal = journal.clone();
        if journal.is_some() {
            state.store.record_tape();
        }
        let mut store = Store::new(&guest.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Instantiation runs guest code too (its start functions): same budget.
        let budget = Budget::new(&sandbox.limits);
        budget.arm(&mut store)?;
        let instance = match guest.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(err) => {
                let limiter = &store.data().limiter;
                // The one reason a user can give (and fix): a cap below what the
                // guest's memory needs at start, refused before any guest code ran (a
                // trap is the guest's own doing, and keeps its own words).
                if let Some(needed) = limiter.last_refused()
                    && err.downcast_ref::<wasmtime::Trap>().is_none()
                {
                    bail!(
                        "it needs {} of linear memory to start, more than --max-memory {} allows",
                        Size(needed),
                        Size(limiter.max_memory())
                    );
                }
                return Err(anyhow::Error::from(err));
            }
        };
        let handle = guest.exports.load(&mut store, &instance)?;
        let state = match guest.state {
            Some(exports) => Some(
                exports
                    .load(&mut store, &instance)
                    .context("the `state` interface has the wrong type")?,
            ),
            None => None,
        };
        let initial_memory = store.data().limiter.memory();
        Ok(Self {
            store,
            handle,
            state,
            budget,
            log_budget: guest.log_budget.clone(),
            initial_memory,
            journal,
        })
    }

    /// With `--record`: moves the answers its environment gave since the last time
    /// into `readings`, and gives what it did with the store.
    pub fn take_tape(&mut self, readings: &mut Vec<Reading>) -> Option<Recording> {
        let journal = self.journal.as_ref()?;
        journal.take_into(readings);
        self.store.data_mut().store.take_tape()
    }

    /// Calls `handle` with `events` on behalf of guest instance `owner`, lending it
    /// `net` for the call. An error is a trap: the instance is unusable afterwards.
    pub fn call(&mut self, events: &[Event], net: &mut Net, owner: Owner) -> Result<()> {
        self.budget.arm(&mut self.store)?;
        net.set_caller(owner);
        std::mem::swap(net, &mut self.store.data_mut().net);
        let result = self.handle.call(&mut self.store, events);
        std::mem::swap(net, &mut self.store.data_mut().net);
        result
    }

    /// Calls `handle` with `events` as a canary's shadow: its I/O goes to `shadow`,
    /// lent to the store for the call, under the same time and memory limits as
    /// any call.
    pub fn call_shadow(
        &mut self,
        events: &[Event],
        shadow: &mut Option<Box<ShadowIo>>,
    ) -> Result<()> {
        self.budget.arm(&mut self.store)?;
        std::mem::swap(shadow, &mut self.store.data_mut().shadow);
        let result = self.handle.call(&mut self.store, events);
        std::mem::swap(shadow, &mut self.store.data_mut().shadow);
        result
    }

    /// Attaches it to its worker's store as `owner` (the first time; after that, a
    /// test of an `Option`).
    pub fn attach_store(&mut self, link: &StoreLink, owner: Owner) {
        self.store.data_mut().store.attach(link, owner);
    }

    /// Gives it `delivery` (an answer of the store, a topic message) for its next
    /// call: `None` if it is for an instance this one replaced (dropped), else
    /// whether nothing waited before it (the loop then adds an `Event::Mail`).
    pub fn deliver(&mut self, delivery: Delivery) -> Option<bool> {
        let session = &mut self.store.data_mut().store;
        session
            .accepts(&delivery)
            .then(|| session.deliver(delivery))
    }

    /// Whether store answers or messages wait for its next call.
    pub fn has_mail(&self) -> bool {
        !self.store.data().store.mail.is_empty()
    }

    /// Whether it waits for the store: operations it sent not answered yet, or
    /// answers and messages not yet given to it.
    pub fn awaits_store(&self) -> bool {
        let session = &self.store.data().store;
        session.in_flight > 0 || !session.mail.is_empty()
    }

    /// Starts or stops recording what it does with the store (the serving
    /// instance, while a canary runs).
    pub fn record_store(&mut self, on: bool) {
        self.store.data_mut().store.record(on);
    }

    /// What it did with the store since the last time, while recording.
    pub fn take_store_recording(&mut self) -> Option<Recording> {
        self.store.data_mut().store.take_recording()
    }

    /// Who it asks the store as, once attached to a worker's.
    pub fn store_asker(&self) -> Option<Asker> {
        self.store.data().store.asker_now()
    }

    /// Its compiled guest's log budget: after a call, whether output was dropped.
    pub fn log_budget(&self) -> &Arc<GuestBudget> {
        &self.log_budget
    }

    /// The instance's `snapshot`, or `None` when it does not export `state`.
    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        self.budget.arm(&mut self.store)?;
        Ok(Some(state.snapshot(&mut self.store)?))
    }

    /// Hands an earlier instance's snapshot (at a handoff) to this instance's `restore`: the
    /// outer error is a trap, the inner one the guest refusing the snapshot (with its
    /// reason). Nothing happens when it does not export `state`.
    pub fn restore(&mut self, state: Vec<u8>) -> Result<Result<(), String>> {
        let Some(keeper) = &self.state else {
            return Ok(Ok(()));
        };
        self.budget.arm(&mut self.store)?;
        keeper.restore(&mut self.store, state)
    }

    /// [`Instance::restore`] as a canary's shadow or a replay: the store calls
    /// `restore` makes go to `shadow`'s view of the store.
    pub fn restore_shadow(
        &mut self,
        state: Vec<u8>,
        shadow: &mut Option<Box<ShadowIo>>,
    ) -> Result<Result<(), String>> {
        std::mem::swap(shadow, &mut self.store.data_mut().shadow);
        let result = self.restore(state);
        std::mem::swap(shadow, &mut self.store.data_mut().shadow);
        result
    }

    /// The size of its largest linear memory, in bytes.
    pub fn memory(&self) -> usize {
        self.store.data().limiter.memory()
    }

    /// How far its linear memory has grown since it started (or since
    /// [`Instance::rebase`]), in bytes.
    pub fn grown(&self) -> usize {
        self.memory().saturating_sub(self.initial_memory)
    }

    /// Counts growth from the memory it has now.
    pub fn rebase(&mut self) {
        self.initial_memory = self.memory();
    }

    /// Whether the store refused a memory growth during the last call (for naming a
    /// trap's cause).
    pub fn memory_refused(&self) -> bool {
        self.store.data().limiter.memory_refused()
    }
}

/// What one stretch of guest code may use, worked out once per instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Budget {
    /// The epoch deadline, in ticks from now.
    ticks: u64,
    fuel: Option<u64>,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        Self {
            ticks: deadline_ticks(limits),
            fuel: limits.fuel,
        }
    }

    /// Gives a store its budget for the next call: the epoch deadline, and fuel when
    /// a fuel limit is set; and starts the call's record of refused memory growth.
    fn arm(self, store: &mut Store<GuestState>) -> Result<()> {
        store.data_mut().limiter.start_call();
        store.set_epoch_deadline(self.ticks);
        if let Some(fuel) = self.fuel {
            store.set_fuel(fuel).map_err(anyhow::Error::from)?;
        }
        Ok(())
    }
}

/// `--event-timeout` in epoch ticks, rounded down, plus one: the epoch may advance
/// just after the deadline is set, so a call gets between `ticks - 1` and `ticks`
/// whole ticks, never less than the timeout's whole ticks and never zero.
fn deadline_ticks(limits: &Limits) -> u64 {
    (limits.event_timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ticks(timeout: Duration) -> u64 {
        deadline_ticks(&Limits {
            event_timeout: timeout,
            ..Limits::DEFAULT
        })
    }

    #[test]
    fn deadlines_are_whole_ticks_plus_one() {
        assert_eq!(
            EPOCH_TICK,
            Duration::from_millis(5),
            "the cases below assume 5 ms"
        );
        assert_eq!(ticks(Duration::from_millis(100)), 21);
        assert_eq!(ticks(Duration::from_millis(7)), 2, "rounded down");
        assert_eq!(
            ticks(Duration::from_millis(1)),
            2,
            "never less than one tick"
        );
        assert_eq!(ticks(Duration::ZERO), 2);
        assert_eq!(ticks(Duration::from_secs(30)), 6001);
    }
}
