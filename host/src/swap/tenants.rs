//! [`Tenants`]: the guest instances that serve connections, one record per owner,
//! and what happens when one traps.
//!
//! Every connection has an owner (see `sockets::owners`). With `--isolation shared`
//! a generation has one owner, whose instance serves all of that generation's
//! connections; with `--isolation connection` each connection has an owner of its
//! own, and its instance ends with the connection. A record holds the owner's
//! generation, its compiled guest and its instance (none while it cannot run);
//! what the owner holds on the sockets side (connections, timers) is `Net`'s to
//! count, since those outlive a trapped instance.
//!
//! [`Generations`](super::generations::Generations) owns the records and says which
//! generation serves: the calls that depend on it take its number, `serving`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::runtime::backoff::Backoff;
use crate::runtime::component::Guest;
use crate::runtime::engine::Runtime;
use crate::runtime::guest_log::GuestBudget;
use crate::runtime::instance::Instance;
use crate::runtime::sandbox::Isolation;
use crate::runtime::trap::{backtrace, cause, describe};
use crate::shared::metrics::{GuestCounters, Published, TrapCause};
use crate::shared::rate_limit::RateLimit;
use crate::sockets::events::Event;
use crate::sockets::net::Net;
use crate::sockets::owners::Owner;
use crate::store::StoreLink;

use super::recorder::Note;

/// One owner's guest instance.
struct Tenant {
    /// The generation it belongs to: a hot swap's unit (see `swap`).
    generation: u32,
    guest: Arc<Guest>,
    /// `None` after a trap, or before its first event.
    instance: Option<Instance>,
    /// Calls made into its current instance: a trap in the first means it cannot
    /// serve anything.
    calls: u32,
}

/// A trap of one cause is logged in full (with the guest's backtrace) at most once
/// per this long; the others are counted and summed up in one line at its end, so
/// that a guest clients can make trap at will cannot flood the log.
const TRAP_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The traps of one cause not logged in full yet.
#[derive(Clone, Copy, Debug, Default)]
struct Suppressed {
    /// When this cause was last logged (in full, or summed up).
    logged: Option<Instant>,
    traps: u64,
    closed: usize,
}

/// How a handoff's `restore` went.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// The state was taken up (or the guest keeps none).
    Taken,
    /// The guest refused it, saying why: it goes on with a fresh state.
    Refused(String),
    /// It trapped, and was cut off.
    Trapped,
}

/// Every owner that holds, or may get, an instance.
pub struct Tenants {
    runtime: Arc<Runtime>,
    isolation: Isolation,
    records: HashMap<Owner, Tenant>,
    /// How many records each generation has, kept by `insert` and `remove`: a
    /// retired generation with none left holds nothing.
    per_generation: HashMap<u32, usize>,
    next_owner: Owner,
    /// Restarts of the serving shared instance, after traps.
    backoff: Backoff,
    traps: u64,
    down_log: RateLimit,
    /// What it counts for `/metrics`.
    counters: GuestCounters,
    /// Whether calls are timed (only for `/metrics`: it costs two clock reads).
    timed: bool,
    /// Traps of each cause waiting to be summed up, in [`TrapCause::ALL`] order.
    suppressed: [Suppressed; 6],
    /// Compiled guests whose dropped output lines wait to be reported, and when.
    log_pending: Vec<(Arc<GuestBudget>, Instant)>,
    /// The worker's store, which every instance is attached to at its first call.
    store: Option<StoreLink>,
    /// With `--record`: what each call gave and did, for the recorder.
    pub notes: Option<Vec<Note>>,
}

impl Tenants {
    /// No tenant yet; instances start on `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        let isolation = runtime.sandbox().isolation;
        Self {
            runtime,
            isolation,
            records: HashMap::new(),
            per_generation: HashMap::new(),
            next_owner: 0,
            backoff: Backoff::default(),
            traps: 0,
            down_log: RateLimit::default(),
            counters: GuestCounters::default(),
            timed: false,
            suppressed: [Suppressed::default(); 6],
            log_pending: Vec::new(),
            store: None,
            notes: None,
        }
    }

    /// The guest `owner` runs.
    pub fn guest_of(&self, owner: Owner) -> Option<&Arc<Guest>> {
        self.records.get(&owner).map(|tenant| &tenant.guest)
    }

    /// The worker's store, for its instances' `store` and `topics` calls.
    pub fn set_store(&mut self, link: StoreLink) {
        self.store = Some(link);
    }

    /// Times every call, for the call duration histogram of `/metrics`.
    pub fn time_calls(&mut self) {
        self.timed = true;
    }

    /// Stores what it counted into the worker's published metrics.
    pub fn publish(&mut self, to: &Published) {
        self.counters.backing_off = self.backoff.waiting(Instant::now()) > Duration::ZERO;
        to.guest(&self.counters);
    }

    /// The connections `generation` still holds, for `/metrics`, counted without a
    /// scan per turn: with shared isolation, the few owners' connections; with an
    /// instance per connection, its instances, one per client connection (outbound
    /// connections an instance opened are not counted).
    pub fn connections_of(&self, generation: u32, net: &Net) -> u64 {
        match self.isolation {
            Isolation::Connection => {
                self.per_generation.get(&generation).copied().unwrap_or(0) as u64
            }
            Isolation::Shared => self
                .owners_of(generation)
                .into_iter()
                .map(|owner| net.owned_by(owner) as u64)
                .sum(),
        }
    }

    /// The runtime instances are started with.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Whether `isolation` is shared: one owner per generation.
    pub fn shared(&self) -> bool {
        self.isolation == Isolation::Shared
    }

    /// A crash-loop back-off of the generation that served before is forgotten.
    pub fn forget_backoff(&mut self) {
        self.backoff = Backoff::default();
    }

    /// `owner`'s instance, while it has one.
    pub fn instance_of(&self, owner: Owner) -> Option<&Instance> {
        self.records.get(&owner)?.instance.as_ref()
    }

    /// `owner`'s instance, while it has one, to change.
    pub fn instance_mut(&mut self, owner: Owner) -> Option<&mut Instance> {
        self.records.get_mut(&owner)?.instance.as_mut()
    }

    /// Calls made into `owner`'s current instance.
    pub fn calls_of(&self, owner: Owner) -> u32 {
        self.records.get(&owner).map_or(0, |t| t.calls)
    }

    /// Whether new connections can be served now (the serving instance is not backing
    /// off after traps).
    pub fn accepting(&mut self) -> bool {
        self.backoff.ready(Instant::now())
    }

    /// Whether any instance waits for the store (see [`Instance::awaits_store`]).
    pub fn await_store(&self) -> bool {
        self.records
            .values()
            .any(|tenant| tenant.instance.as_ref().is_some_and(Instance::awaits_store))
    }

    /// Whether any owner of `generation` is left.
    pub fn holds(&self, generation: u32) -> bool {
        self.per_generation.get(&generation).is_some_and(|&n| n > 0)
    }

    /// The owners of `generation`.
    pub fn owners_of(&self, generation: u32) -> Vec<Owner> {
        self.owners_where(|g| g == generation)
    }

    /// The owners of every generation but `generation`.
    pub fn owners_not_of(&self, generation: u32) -> Vec<Owner> {
        self.owners_where(|g| g != generation)
    }

    /// Runs `events` on `owner`'s instance, starting one if it may; on a trap, cuts
    /// the instance off. While it cannot run, its connections are closed. Answers
    /// whether store answers or messages are left for its next call (a call takes
    /// about `MAX_CALL_INPUT` of them).
    pub fn run(&mut self, owner: Owner, events: &[Event], serving: u32, net: &mut Net) -> bool {
        let timed = self.timed;
        if let Some(tenant) = self.records.get_mut(&owner) {
            tenant.calls = tenant.calls.saturating_add(1);
        }
        // Moved out for the call (the instance borrows `self`), and back after it.
        let store = self.store.take();
        let mut notes = self.notes.take();
        let guest = match notes {
            Some(_) => self.records.get(&owner).map(|t| t.guest.clone()),
            None => None,
        };
        let Some(instance) = self.instance(owner, serving) else {
            self.store = store;
            self.notes = notes;
            self.refuse(owner, events, net);
            return false;
        };
        if let Some(link) = &store {
            instance.attach_store(link, owner);
        }
        let started = timed.then(Instant::now);
        let result = instance.call(events, net, owner);
        let memory_refused = instance.memory_refused();
        if let Some(notes) = &mut notes {
            note_call(
                notes,
                owner,
                guest,
                events,
                instance,
                &result,
                memory_refused,
            );
        }
        let mail_left = instance.has_mail();
        let dropped = instance
            .log_budget()
            .has_dropped()
            .then(|| instance.log_budget().clone());
        self.store = store;
        self.notes = notes;
        if let Some(budget) = dropped {
            self.report_dropped(budget, Instant::now());
        }
        self.counters.calls += 1;
        self.counters.call_events.observe(events.len() as f64);
        if let Some(started) = started {
            self.counters
                .call_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if let Err(err) = result {
            self.on_trap(owner, err, memory_refused, serving, net);
            return false;
        }
        mail_left
    }

    /// After `owner`'s call: an instance per connection ends with its connections,
    /// and so does a retired generation's shared instance.
    pub fn after_call(&mut self, owner: Owner, serving: u32, net: &mut Net) {
        if net.owned_by(owner) == 0 && !self.restartable(owner, serving) {
            self.end(owner, serving, net);
        }
    }

    /// Ends every owner of a retired generation that holds no connection: nothing
    /// would ever call it again.
    pub fn end_idle_retired(&mut self, serving: u32, net: &mut Net) {
        for owner in self.owners_not_of(serving) {
            if net.owned_by(owner) == 0 {
                self.end(owner, serving, net);
            }
        }
    }

    /// Cuts `owner` off: closes its connections (bytes it wrote are still sent),
    /// disarms its timers, drops its instance, and forgets it unless it is the
    /// serving generation's shared owner, which a fresh instance takes over. Returns
    /// how many connections it held.
    pub fn end(&mut self, owner: Owner, serving: u32, net: &mut Net) -> usize {
        let closed = net.release(owner);
        if let Some(notes) = &mut self.notes {
            notes.push(Note::Ended { owner });
        }
        if self.restartable(owner, serving) {
            if let Some(tenant) = self.records.get_mut(&owner) {
                tenant.instance = None;
            }
        } else {
            self.remove(owner);
        }
        closed
    }

    /// The `state` interface's snapshot of `owner`'s instance, if it has one and
    /// exports `state`. A snapshot that fails is logged, and the handoff goes on
    /// without state.
    pub fn snapshot(&mut self, owner: Owner) -> Option<Vec<u8>> {
        let instance = self.records.get_mut(&owner)?.instance.as_mut()?;
        match instance.snapshot() {
            Ok(state) => state,
            Err(err) => {
                warn!(
                    "the old generation's snapshot failed, handing over without state: {}",
                    describe(&err, false)
                );
                None
            }
        }
    }

    /// Hands `state` to `owner`'s `restore`, starting its instance if need be.
    pub fn restore(
        &mut self,
        owner: Owner,
        state: Vec<u8>,
        serving: u32,
        net: &mut Net,
    ) -> Restored {
        let store = self.store.take();
        let mut notes = self.notes.take();
        let Some(instance) = self.instance(owner, serving) else {
            self.store = store;
            self.notes = notes;
            return Restored::Taken;
        };
        // `restore` may open buckets and subscribe already.
        if let Some(link) = &store {
            instance.attach_store(link, owner);
        }
        if let Some(notes) = &mut notes {
            notes.push(Note::Restored {
                owner,
                state: state.clone(),
            });
        }
        let restored = instance.restore(state);
        let memory_refused = instance.memory_refused();
        self.store = store;
        self.notes = notes;
        match restored {
            Ok(Ok(())) => Restored::Taken,
            Ok(Err(why)) => Restored::Refused(why),
            Err(err) => {
                self.on_trap(owner, err, memory_refused, serving, net);
                Restored::Trapped
            }
        }
    }

    /// Tells every live instance that the host is shutting down.
    pub fn shutdown(&mut self, serving: u32, net: &mut Net) {
        let live: Vec<Owner> = self
            .records
            .iter()
            .filter(|(_, tenant)| tenant.instance.is_some())
            .map(|(&owner, _)| owner)
            .collect();
        for owner in live {
            self.run(owner, &[Event::Shutdown], serving, net);
            self.after_call(owner, serving, net);
        }
    }

    /// Whether `owner` gets a fresh instance when it has none: an owner per
    /// connection always does (until its connection ends); a shared one only while
    /// its generation serves.
    fn restartable(&self, owner: Owner, serving: u32) -> bool {
        match self.isolation {
            Isolation::Connection => false,
            Isolation::Shared => self
                .records
                .get(&owner)
                .is_some_and(|t| t.generation == serving),
        }
    }

    /// The instance for `owner`, starting it if it may be started. `None` when the
    /// guest cannot run now (it failed to start, is backing off, or its generation
    /// is draining and lost its instance).
    fn instance(&mut self, owner: Owner, serving: u32) -> Option<&mut Instance> {
        let isolation = self.isolation;
        let tenant = self.records.get_mut(&owner)?;
        if tenant.instance.is_none() {
            let shared = isolation == Isolation::Shared;
            if shared && (tenant.generation != serving || !self.backoff.ready(Instant::now())) {
                return None;
            }
            match self.runtime.instantiate(&tenant.guest) {
                Ok(instance) => {
                    if shared {
                        info!(
                            generation = tenant.generation,
                            "a fresh guest instance took over"
                        );
                    }
                    tenant.instance = Some(instance);
                    tenant.calls = 1;
                }
                Err(err) => {
                    let now = Instant::now();
                    self.backoff.failed(now);
                    error!(
                        generation = tenant.generation,
                        retry_in = ?self.backoff.waiting(now),
                        "guest failed to start: {}",
                        describe(&err, false)
                    );
                    return None;
                }
            }
        }
        tenant.instance.as_mut()
    }

    /// Logs a trap with its cause and the guest's backtrace (or counts it, when the
    /// same cause was logged in the last [`TRAP_SUMMARY_EVERY`]), and cuts the
    /// instance off: the next batch (or the next connection) gets a fresh one.
    fn on_trap(
        &mut self,
        owner: Owner,
        err: anyhow::Error,
        memory_refused: bool,
        serving: u32,
        net: &mut Net,
    ) {
        self.traps += 1;
        let now = Instant::now();
        let cause = cause(&err, memory_refused);
        let index = TrapCause::ALL.iter().position(|&c| c == cause).unwrap_or(5);
        self.counters.traps[index] += 1;
        let tenant = self.records.get(&owner);
        let guest = tenant.map(|t| t.guest.name.clone());
        let generation = tenant.map_or(0, |t| t.generation);
        let first_call = tenant.is_some_and(|t| t.calls <= 1);
        let closed = self.end(owner, serving, net);
        // A shared instance that traps is a crash; with an instance per connection a
        // trap costs one connection, unless the instance trapped in its first call:
        // then every connection would, and that is a crash loop too.
        if self.isolation == Isolation::Shared || first_call {
            self.backoff.failed(now);
        }
        let suppressed = &mut self.suppressed[index];
        if suppressed
            .logged
            .is_some_and(|at| now.saturating_duration_since(at) < TRAP_SUMMARY_EVERY)
        {
            suppressed.traps += 1;
            suppressed.closed += closed;
            return;
        }
        self.log_suppressed(now);
        self.suppressed[index].logged = Some(now);
        let after = match self.isolation {
            Isolation::Shared => "a fresh instance takes over",
            Isolation::Connection => "its instance ends",
        };
        // One record: the cause on its first line, the guest's backtrace below it.
        error!(
            guest = guest.as_deref().unwrap_or("?"),
            generation,
            cause = cause.label(),
            closed,
            traps = self.traps,
            "guest trapped: {}; closed its {closed} connection(s), {after}\n{}",
            describe(&err, memory_refused),
            backtrace(&err)
        );
    }

    /// The loop's tick: sums up the traps and reports the dropped output lines that
    /// are due.
    pub fn tick(&mut self, now: Instant) {
        self.log_suppressed(now);
        self.log_pending.retain_mut(|(budget, due)| {
            if now < *due {
                return true;
            }
            match budget.report_due(now) {
                Some(next) => {
                    *due = next;
                    true
                }
                None => false,
            }
        });
    }

    /// When the loop should tick for the tenants next: a trap summary or a report of
    /// dropped output due, or the end of a crash-loop back-off (so that `/readyz`
    /// says ready again without waiting for a connection).
    pub fn next_tick(&self) -> Option<Instant> {
        let summary = self
            .suppressed
            .iter()
            .filter(|s| s.traps > 0)
            .filter_map(|s| s.logged)
            .min()
            .map(|at| at + TRAP_SUMMARY_EVERY);
        let report = self.log_pending.iter().map(|&(_, due)| due).min();
        // Once past, the back-off's end is no deadline (it is cleared only when a
        // connection asks), or the loop would spin.
        let backoff_ends = self.backoff.until().filter(|&at| at > Instant::now());
        [summary, report, backoff_ends].into_iter().flatten().min()
    }

    /// After a call whose instance dropped output lines: reports them if that is
    /// due, or keeps its compiled guest's budget for the tick that will.
    fn report_dropped(&mut self, budget: Arc<GuestBudget>, now: Instant) {
        if let Some(due) = budget.report_due(now)
            && !self
                .log_pending
                .iter()
                .any(|(b, _)| Arc::ptr_eq(b, &budget))
        {
            self.log_pending.push((budget, due));
        }
    }

    /// Sums up the traps counted but not logged whose interval has ended (from the
    /// loop's tick, and before a trap is logged in full).
    fn log_suppressed(&mut self, now: Instant) {
        self.sum_up_traps(now, false);
    }

    /// The loop has ended: the traps counted but not logged yet are summed up now,
    /// whatever their interval, or they would leave no line at all.
    pub fn finish(&mut self) {
        self.sum_up_traps(Instant::now(), true);
    }

    /// Sums up, in one line per cause, the traps counted but not logged in full:
    /// those whose interval has ended, or (`all`) every one.
    fn sum_up_traps(&mut self, now: Instant, all: bool) {
        for (cause, suppressed) in TrapCause::ALL.iter().zip(&mut self.suppressed) {
            let due = suppressed
                .logged
                .is_some_and(|at| now.saturating_duration_since(at) >= TRAP_SUMMARY_EVERY);
            if suppressed.traps == 0 || !(due || all) {
                continue;
            }
            let (traps, closed) = (suppressed.traps, suppressed.closed);
            let over = suppressed.logged.map_or(TRAP_SUMMARY_EVERY, |at| {
                now.saturating_duration_since(at).min(TRAP_SUMMARY_EVERY)
            });
            error!(
                cause = cause.label(),
                traps,
                closed,
                "guest trapped {traps} more time(s) ({}) in the last {}s; closed {closed} connection(s)",
                cause.label(),
                over.as_secs().max(1)
            );
            *suppressed = Suppressed {
                logged: Some(now),
                ..Suppressed::default()
            };
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
        net.release(owner);
        if refused > 0 && self.down_log.allow() {
            warn!(refused, "the guest is not running; closed new connections");
        }
    }

    /// The owners whose generation `keep` says, oldest first (owners are numbered
    /// as they come): a handoff restores their snapshots in that order, so the
    /// latest state is taken up last.
    fn owners_where(&self, keep: impl Fn(u32) -> bool) -> Vec<Owner> {
        let mut owners: Vec<Owner> = self
            .records
            .iter()
            .filter(|(_, tenant)| keep(tenant.generation))
            .map(|(&owner, _)| owner)
            .collect();
        owners.sort_unstable();
        owners
    }

    /// A new owner for `generation`, with `instance` started already or none yet.
    pub fn insert(
        &mut self,
        generation: u32,
        guest: Arc<Guest>,
        instance: Option<Instance>,
    ) -> Owner {
        self.next_owner += 1;
        let owner = self.next_owner;
        let tenant = Tenant {
            generation,
            guest,
            calls: u32::from(instance.is_some()),
            instance,
        };
        self.records.insert(owner, tenant);
        *self.per_generation.entry(generation).or_default() += 1;
        owner
    }

    fn remove(&mut self, owner: Owner) {
        let Some(tenant) = self.records.remove(&owner) else {
            return;
        };
        if let Some(count) = self.per_generation.get_mut(&tenant.generation) {
            *count -= 1;
            if *count == 0 {
                self.per_generation.remove(&tenant.generation);
            }
        }
    }
}

/// With `--record`: what `owner`'s call on `events` gave and did, for its tape: the
/// arrivals by handover and the shutdown (calls outside a batch bring them), the
/// environment's answers, the store, the trap.
fn note_call(
    notes: &mut Vec<Note>,
    owner: Owner,
    guest: Option<Arc<Guest>>,
    events: &[Event],
    instance: &mut Instance,
    result: &anyhow::Result<()>,
    memory_refused: bool,
) {
    for event in events {
        match *event {
            Event::Adopted(conn) => notes.push(Note::Adopted { owner, conn }),
            Event::Shutdown => notes.push(Note::Shutdown { owner }),
            _ => {}
        }
    }
    let mut readings = Vec::new();
    let store = instance.take_tape(&mut readings);
    let trap = result.as_ref().err().map(|err| {
        let deadline = matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        );
        (describe(err, memory_refused), backtrace(err), deadline)
    });
    if !readings.is_empty() || store.as_ref().is_some_and(|s| !s.is_empty()) || trap.is_some() {
        notes.push(Note::Call {
            owner,
            guest,
            readings,
            store,
            trap,
        });
    }
}
