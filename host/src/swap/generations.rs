//! [`Generations`]: every loaded version of the guest, the instances serving each
//! (its [`Tenants`]), and the swap policy: how a new one takes over (drain, or a
//! handoff of the connections and the guest's state), when an old one is closed
//! (`--drain-timeout`), and when it is dropped. It is the one owner of "which generation serves which connection":
//! the serving generation is the last of its list, and nothing else records it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::SwapMode;
use super::reloader::Loaded;
use super::tenants::{Restored, Tenants};
use crate::runtime::component::Guest;
use crate::runtime::contracts::Contract;
use crate::runtime::engine::Runtime;
use crate::runtime::instance::Instance;
use crate::runtime::trap::describe;
use crate::shared::metrics::{Published, Serving, SwapCounters, millis};
use crate::shared::wit::Conn;
use crate::sockets::events::Event;
use crate::sockets::handler::CarriedGroup;
use crate::sockets::net::Net;
use crate::sockets::owners::Owner;

/// The most of a guest's reason for refusing a snapshot that is logged, in chars.
const MAX_REASON: usize = 200;

/// Why a generation is dropped after a batch or a drain timeout.
const LAST_CLOSED: &str = "its last connection has closed";

/// One loaded version of the guest.
pub(super) struct Generation {
    pub(super) number: u32,
    pub(super) guest: Arc<Guest>,
    /// When a newer generation took over new connections; `None` while serving.
    retired: Option<Instant>,
    /// Its one owner, with shared isolation (with an instance per connection, each
    /// connection has an owner of its own).
    pub(super) shared: Option<Owner>,
}

/// The generations, oldest first; the last one serves new connections.
pub struct Generations {
    list: Vec<Generation>,
    next: u32,
    mode: SwapMode,
    drain_timeout: Option<Duration>,
    /// What it counts for `/metrics`.
    pub(super) counters: SwapCounters,
    /// The list changed (a generation added, so another one serving, or one
    /// dropped) since it was last published.
    list_changed: bool,
    /// The instances serving every generation's connections.
    pub(super) tenants: Tenants,
}

impl Generations {
    /// Generation 1, serving `guest`, whose instance `first` has started on
    /// `runtime`.
    pub fn new(
        runtime: Arc<Runtime>,
        guest: Arc<Guest>,
        first: Instance,
        mode: SwapMode,
        drain_timeout: Option<Duration>,
    ) -> Self {
        let mut tenants = Tenants::new(runtime);
        let shared = tenants
            .shared()
            .then(|| tenants.insert(1, guest.clone(), Some(first)));
        let generations = Self {
            list: vec![Generation {
                number: 1,
                guest,
                retired: None,
                shared,
            }],
            next: 2,
            mode,
            drain_timeout,
            counters: SwapCounters::default(),
            list_changed: true,
            tenants,
        };
        generations.log_serving();
        generations
    }

    /// The runtime instances start on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        self.tenants.runtime()
    }

    /// Times guest calls, for `/metrics`.
    pub fn time_calls(&mut self) {
        self.tenants.time_calls();
    }

    /// The owner of a connection accepted now, or handed over to the serving
    /// generation at a swap: its shared owner, or a new one of its own.
    pub fn owner_for_new_connection(&mut self) -> Owner {
        let serving = self
            .list
            .last()
            .expect("there is always a serving generation");
        match serving.shared {
            Some(owner) => owner,
            None => self
                .tenants
                .insert(serving.number, serving.guest.clone(), None),
        }
    }

    /// Whether new connections can be served now (the serving instance is not
    /// backing off after traps).
    pub fn accepting(&mut self) -> bool {
        self.tenants.accepting()
    }

    /// Runs one owner's events (one call into its instance), and ends what that
    /// call left with nothing to serve. Answers whether store answers or messages
    /// are left for the instance's next call.
    pub fn run(&mut self, owner: Owner, events: &[Event], net: &mut Net) -> bool {
        let serving = self.serving_number();
        let mail_left = self.tenants.run(owner, events, serving, net);
        self.tenants.after_call(owner, serving, net);
        mail_left
    }

    /// The serving shared instance's snapshot, if it has an instance and exports
    /// `state`: a canary's shadows start from it.
    pub fn serving_snapshot(&mut self) -> Option<Vec<u8>> {
        let owner = self.serving().shared?;
        self.tenants.snapshot(owner)
    }

    /// The serving generation's shared instance, while it has one (a canary's
    /// trial records what it does with the store).
    pub fn serving_instance_mut(&mut self) -> Option<&mut Instance> {
        let owner = self.serving().shared?;
        self.tenants.instance_mut(owner)
    }

    /// Tells every live instance that the host is shutting down.
    pub fn shutdown(&mut self, net: &mut Net) {
        let serving = self.serving_number();
        self.tenants.shutdown(serving, net);
    }

    /// The loop has ended: what the tenants still have to say (summed-up traps).
    pub fn finish(&mut self) {
        self.tenants.finish();
    }

    /// The loop's tick: trap summaries and reports of dropped output that are due.
    pub fn tick(&mut self, now: Instant) {
        self.tenants.tick(now);
    }

    /// When the loop must tick for the generations next: a `--drain-timeout`, a
    /// trap summary or output report, the end of a back-off.
    pub fn next_tick(&self) -> Option<Instant> {
        [self.next_deadline(), self.tenants.next_tick()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Stores what it counted into the worker's published metrics: the counters,
    /// the connections each retired generation holds, and (after the list changed)
    /// which generation serves and how many live per contract version.
    pub fn publish(&mut self, to: &Published, net: &Net) {
        self.tenants.publish(to);
        let tenants = &self.tenants;
        let retired = self.list[..self.list.len() - 1]
            .iter()
            .map(|g| (g.number, tenants.connections_of(g.number, net)));
        to.swap(&self.counters, retired);
        if std::mem::take(&mut self.list_changed) {
            for (slot, contract) in to.generations_by_contract.iter().zip(Contract::ALL) {
                let live = self.list.iter().filter(|g| g.guest.contract == contract);
                slot.store(live.count() as u64, Ordering::Relaxed);
            }
            let serving = self.serving();
            to.set_serving(Serving {
                generation: serving.number,
                guest: serving.guest.name.to_string(),
                sha256: serving.guest.short_digest(),
                contract: serving.guest.contract.version(),
            });
        }
    }

    /// The guest of the generation serving new connections.
    pub fn serving_guest(&self) -> &Arc<Guest> {
        &self.serving().guest
    }

    /// The number of the generation serving new connections.
    pub fn serving_number(&self) -> u32 {
        self.serving().number
    }

    /// Whether older generations are still around (draining, or handing over).
    pub fn has_retired(&self) -> bool {
        self.list.len() > 1
    }

    /// Swaps in a newly loaded guest as the serving generation: it must start first;
    /// then older generations drain, or hand their connections over, as `--swap`
    /// says. Returns whether the swap happened (a guest that cannot start is refused,
    /// and the serving generation goes on).
    pub fn swap_in(&mut self, loaded: Loaded, net: &mut Net) -> bool {
        let digest = loaded.guest.short_digest();
        let first = match self.tenants.runtime().instantiate(&loaded.guest) {
            Ok(instance) => instance,
            Err(err) => {
                self.counters.refused += 1;
                warn!(
                    "reload refused: generation ({digest}) failed to start: {}",
                    describe(&err, false)
                );
                return false;
            }
        };
        // The generation whose baseline code this tier-up replaces, found before the
        // take-over, which may drop it.
        let baseline = loaded.tier_up.then(|| {
            self.list
                .iter()
                .rev()
                .find(|g| g.guest.digest == loaded.guest.digest)
                .map(|g| g.number)
        });
        let number = self.take_over(Arc::new(loaded.guest), first, self.mode, None, net);
        match baseline {
            Some(Some(baseline)) => info!(
                "tier-up: generation {number} runs the optimized code of generation {baseline}"
            ),
            Some(None) => info!("tier-up: generation {number} runs optimized code"),
            None => {}
        }
        let took = loaded.triggered.elapsed();
        // A tier-up is the second half of one reload, not a swap of its own: the
        // swap's count and time are those of the first half, trigger to serving.
        if !loaded.tier_up {
            self.counters.swaps += 1;
            self.counters.swap_seconds.observe(took.as_secs_f64());
        }
        info!(
            generation = number,
            sha256 = %digest,
            took_ms = millis(took),
            "swap to generation {number} ({digest}) done took={took:?}"
        );
        true
    }

    /// Makes `guest` (whose instance `first` has started) the serving generation;
    /// the older ones drain or hand their connections over, as `mode` says (a
    /// handoff takes the owners in `from`, or every older one). Returns its number.
    pub(super) fn take_over(
        &mut self,
        guest: Arc<Guest>,
        first: Instance,
        mode: SwapMode,
        from: Option<Vec<Owner>>,
        net: &mut Net,
    ) -> u32 {
        let now = Instant::now();
        for generation in &mut self.list {
            generation.retired.get_or_insert(now);
        }
        let number = self.next;
        self.next += 1;
        // With an instance per connection, `first` only proved that the guest starts.
        let shared = self
            .tenants
            .shared()
            .then(|| self.tenants.insert(number, guest.clone(), Some(first)));
        self.tenants.forget_backoff();
        self.list.push(Generation {
            number,
            guest,
            retired: None,
            shared,
        });
        self.log_serving();
        let why = match mode {
            SwapMode::Drain => {
                self.log_draining(net);
                "it held no connection"
            }
            SwapMode::Handoff => {
                let from = from.unwrap_or_else(|| self.tenants.owners_not_of(number));
                self.hand_over(number, from, net);
                "its connections were handed over"
            }
        };
        self.tenants.end_idle_retired(number, net);
        self.drop_drained(why);
        self.list_changed = true;
        number
    }

    /// Closes what retired generations still hold past `--drain-timeout`.
    pub fn enforce_drain_timeout(&mut self, now: Instant, net: &mut Net) {
        let Some(timeout) = self.drain_timeout else {
            return;
        };
        if !self.has_retired() {
            return;
        }
        let serving = self.serving_number();
        let tenants = &mut self.tenants;
        let expired = self
            .list
            .iter()
            .filter(|g| g.retired.is_some_and(|at| now >= at + timeout));
        for generation in expired {
            let number = generation.number;
            let closed: usize = tenants
                .owners_of(number)
                .into_iter()
                .map(|owner| tenants.end(owner, serving, net))
                .sum();
            if closed > 0 {
                warn!(
                    "generation {number}: --drain-timeout reached; closed its last {closed} connection(s)"
                );
            }
        }
        self.drop_drained(LAST_CLOSED);
    }

    /// When the next `--drain-timeout` runs out, if one will.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.drain_timeout?;
        self.list
            .iter()
            .filter_map(|g| g.retired)
            .min()
            .map(|at| at + timeout)
    }

    /// After a batch: drops the retired generations whose last connection closed.
    pub fn drop_closed(&mut self) {
        if self.has_retired() {
            self.drop_drained(LAST_CLOSED);
        }
    }

    /// Drops the retired generations that no owner belongs to any more, saying `why`.
    fn drop_drained(&mut self, why: &str) {
        let tenants = &self.tenants;
        let before = self.list.len();
        self.list.retain(|generation| {
            let drained = generation.retired.is_some() && !tenants.holds(generation.number);
            if drained {
                info!(
                    generation = generation.number,
                    "generation {} dropped: {why}", generation.number
                );
            }
            !drained
        });
        self.list_changed |= self.list.len() != before;
    }

    pub(super) fn serving(&self) -> &Generation {
        self.list
            .last()
            .expect("there is always a serving generation")
    }

    fn log_serving(&self) {
        let generation = self.serving();
        info!(
            guest = &*generation.guest.name,
            generation = generation.number,
            sha256 = %generation.guest.short_digest(),
            keeps_state = generation.guest.keeps_state(),
            contract = generation.guest.contract.version(),
            optimized = generation.guest.optimized,
            "generation {} ({}) serving",
            generation.number,
            generation.guest.short_digest()
        );
    }

    fn log_draining(&self, net: &Net) {
        for generation in &self.list[..self.list.len() - 1] {
            let held: usize = self
                .tenants
                .owners_of(generation.number)
                .into_iter()
                .map(|owner| net.owned_by(owner))
                .sum();
            // One that holds none is dropped at once, and says so.
            if held > 0 {
                info!(
                    generation = generation.number,
                    "generation {} drains {held} connection(s)", generation.number
                );
            }
        }
    }

    /// Moves every connection of older generations to generation `number`: each old
    /// instance's snapshot goes to its new owner's restore, then each connection is
    /// announced with `adopted`. The host's bytes for each stay where they are.
    fn hand_over(&mut self, number: u32, from: Vec<Owner>, net: &mut Net) {
        let mut handed = 0;
        let mut refused = 0;
        for old in from {
            let state = self.tenants.snapshot(old);
            let target = self.owner_for_new_connection();
            let conns = net.hand_over(old, target);
            self.tenants.end(old, number, net);
            handed += conns.len();
            self.take_in(target, state, &conns, &mut refused, net);
        }
        self.log_refused(refused, "at this swap");
        info!("handed {handed} connection(s) over to generation {number}");
    }

    /// For an upgrade: the state of each owner in `owners` that an upgrade carries
    /// to the new process, and the serving instance's (added at the end, if it
    /// holds no connection, so that its state moves too and is restored last).
    pub fn carry_states(&mut self, owners: &mut Vec<Owner>) -> Vec<Option<Vec<u8>>> {
        if let Some(serving) = self.serving().shared {
            owners.retain(|&owner| owner != serving);
            owners.push(serving);
        }
        owners
            .iter()
            .map(|&owner| self.tenants.snapshot(owner))
            .collect()
    }

    /// In an upgrade's new process: what the old one's instances held, taken over
    /// by the serving generation as a handoff takes it (each group's state restored,
    /// then its connections adopted).
    pub fn adopt_carried(&mut self, groups: Vec<CarriedGroup>, net: &mut Net) {
        let number = self.serving_number();
        let mut refused = 0;
        let mut taken = 0;
        for (target, state, conns) in groups {
            taken += conns.len();
            self.take_in(target, state, &conns, &mut refused, net);
        }
        self.log_refused(refused, "from the old process");
        info!(
            generation = number,
            "generation {number} took over {taken} connection(s) from the old process"
        );
    }

    /// Gives `target` an old instance's `state`, then its connections `conns` with
    /// `adopted`; `refused` counts the snapshots the guest refused (only the first
    /// is logged in full).
    fn take_in(
        &mut self,
        target: Owner,
        state: Option<Vec<u8>>,
        conns: &[Conn],
        refused: &mut usize,
        net: &mut Net,
    ) {
        let number = self.serving_number();
        if let Some(state) = state {
            match self.tenants.restore(target, state, number, net) {
                Restored::Taken => {}
                Restored::Refused(why) => {
                    self.counters.snapshots_refused += 1;
                    *refused += 1;
                    // The guest's words, once per swap, on one line and short:
                    // with an instance per connection there is one per owner.
                    if *refused == 1 {
                        let why: String = why.chars().take(MAX_REASON).collect();
                        warn!(
                            generation = number,
                            "generation {number} refused the snapshot of the one before: \
                             {}; it goes on with a fresh state, and takes the connections",
                            why.escape_debug()
                        );
                    }
                }
                Restored::Trapped => return,
            }
        }
        if !conns.is_empty() {
            let adopted: Vec<Event> = conns.iter().map(|&c| Event::Adopted(c)).collect();
            self.tenants.run(target, &adopted, number, net);
        }
        self.tenants.after_call(target, number, net);
    }

    /// Says how many snapshots past the first were refused, `when`.
    fn log_refused(&self, refused: usize, when: &str) {
        if refused > 1 {
            let number = self.serving_number();
            warn!(
                generation = number,
                "generation {number} refused {} more snapshot(s) {when}",
                refused - 1
            );
        }
    }
}
