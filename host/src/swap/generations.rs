//! [`Generations`]: every loaded version of the guest, and the swap policy: how a new
//! one takes over (drain or handoff), when an old one is closed (`--drain-timeout`),
//! and when it is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::SwapMode;
use super::reloader::Loaded;
use crate::metrics::{Published, Serving, SwapCounters, millis};
use crate::runtime::component::Guest;
use crate::runtime::tenants::{Restored, Tenants};
use crate::runtime::trap::describe;
use crate::sockets::net::Net;
use crate::wit::Event;

/// The most of a guest's reason for refusing a snapshot that is logged, in chars.
const MAX_REASON: usize = 200;

/// Why a generation is dropped after a batch or a drain timeout.
const LAST_CLOSED: &str = "its last connection has closed";

/// One loaded version of the guest.
struct Generation {
    number: u32,
    guest: Arc<Guest>,
    /// When a newer generation took over new connections; `None` while serving.
    retired: Option<Instant>,
}

/// The generations, oldest first; the last one serves new connections.
pub struct Generations {
    list: Vec<Generation>,
    next: u32,
    mode: SwapMode,
    drain_timeout: Option<Duration>,
    /// What it counts for `/metrics`.
    counters: SwapCounters,
    /// The serving generation changed since it was last published.
    serving_changed: bool,
}

impl Generations {
    /// Generation 1, serving `guest`.
    pub fn new(guest: Arc<Guest>, mode: SwapMode, drain_timeout: Option<Duration>) -> Self {
        let generations = Self {
            list: vec![Generation {
                number: 1,
                guest,
                retired: None,
            }],
            next: 2,
            mode,
            drain_timeout,
            counters: SwapCounters::default(),
            serving_changed: true,
        };
        generations.log_serving();
        generations
    }

    /// Stores what it counted into the worker's published metrics: the counters,
    /// the connections each retired generation holds, and (after a swap) which
    /// generation serves.
    pub fn publish(&mut self, to: &Published, tenants: &Tenants, net: &Net) {
        let retired = self.list[..self.list.len() - 1]
            .iter()
            .map(|g| (g.number, tenants.connections_of(g.number, net)));
        to.swap(&self.counters, retired);
        if std::mem::take(&mut self.serving_changed) {
            let serving = self.serving();
            to.set_serving(Serving {
                generation: serving.number,
                guest: serving.guest.name.to_string(),
                sha256: serving.guest.short_digest(),
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
    pub fn swap_in(&mut self, loaded: Loaded, tenants: &mut Tenants, net: &mut Net) -> bool {
        let digest = loaded.guest.short_digest();
        let first = match tenants.runtime().instantiate(&loaded.guest) {
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
        let number = self.take_over(Arc::new(loaded.guest), first, self.mode, None, tenants, net);
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

    /// Replaces the serving generation's shared instance with a fresh one of the
    /// same compiled code, as a generation of its own (`why` says what was due): its
    /// connections move to the fresh instance with its state when the guest keeps
    /// state (the handoff path), and otherwise finish on the old one (drain). Nothing
    /// is closed. Returns whether it happened (a fresh instance that cannot start
    /// leaves the old one serving).
    pub fn recycle(&mut self, why: &str, tenants: &mut Tenants, net: &mut Net) -> bool {
        let guest = self.serving().guest.clone();
        let old = self.serving().number;
        let first = match tenants.runtime().instantiate(&guest) {
            Ok(instance) => instance,
            Err(err) => {
                warn!(
                    "recycling generation {old} failed: a fresh instance did not start: {}",
                    describe(&err, false)
                );
                return false;
            }
        };
        // Not --swap: a recycled instance is the same code, so a guest that keeps
        // state takes its connections over (draining would leave every keep-alive
        // connection on the instance that leaks, until it runs out); one without
        // state can only drain.
        let mode = if guest.keeps_state() {
            SwapMode::Handoff
        } else {
            SwapMode::Drain
        };
        info!(
            generation = old,
            "recycling generation {old}: {why}; a fresh instance of the same code takes over"
        );
        self.counters.recycles += 1;
        let from = tenants.owners_of(old);
        self.take_over(guest, first, mode, Some(from), tenants, net);
        tenants.rebase_serving();
        true
    }

    /// Makes `guest` (whose instance `first` has started) the serving generation;
    /// the older ones drain or hand their connections over, as `mode` says (a
    /// handoff takes the owners in `from`, or every older one). Returns its number.
    fn take_over(
        &mut self,
        guest: Arc<Guest>,
        first: crate::runtime::instance::Instance,
        mode: SwapMode,
        from: Option<Vec<crate::sockets::owners::Owner>>,
        tenants: &mut Tenants,
        net: &mut Net,
    ) -> u32 {
        let now = Instant::now();
        for generation in &mut self.list {
            generation.retired.get_or_insert(now);
        }
        let number = self.next;
        self.next += 1;
        tenants.serve(number, guest.clone(), first);
        self.list.push(Generation {
            number,
            guest,
            retired: None,
        });
        self.log_serving();
        let why = match mode {
            SwapMode::Drain => {
                self.log_draining(tenants, net);
                "it held no connection"
            }
            SwapMode::Handoff => {
                let from = from.unwrap_or_else(|| tenants.owners_not_of(number));
                self.hand_over(number, from, tenants, net);
                "its connections were handed over"
            }
        };
        tenants.end_idle_retired(net);
        self.drop_drained(tenants, why);
        self.serving_changed = true;
        number
    }

    /// Closes what retired generations still hold past `--drain-timeout`.
    pub fn enforce_drain_timeout(&mut self, now: Instant, tenants: &mut Tenants, net: &mut Net) {
        let Some(timeout) = self.drain_timeout else {
            return;
        };
        let expired = self
            .list
            .iter()
            .filter(|g| g.retired.is_some_and(|at| now >= at + timeout));
        for generation in expired {
            let number = generation.number;
            let closed: usize = tenants
                .owners_of(number)
                .into_iter()
                .map(|owner| tenants.end(owner, net))
                .sum();
            if closed > 0 {
                warn!(
                    "generation {number}: --drain-timeout reached; closed its last {closed} connection(s)"
                );
            }
        }
        self.drop_drained(tenants, LAST_CLOSED);
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
    pub fn drop_closed(&mut self, tenants: &Tenants) {
        self.drop_drained(tenants, LAST_CLOSED);
    }

    /// Drops the retired generations that no owner belongs to any more, saying `why`.
    fn drop_drained(&mut self, tenants: &Tenants, why: &str) {
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
    }

    fn serving(&self) -> &Generation {
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
            optimized = generation.guest.optimized,
            "generation {} ({}) serving",
            generation.number,
            generation.guest.short_digest()
        );
    }

    fn log_draining(&self, tenants: &Tenants, net: &Net) {
        for generation in &self.list[..self.list.len() - 1] {
            let held: usize = tenants
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
    fn hand_over(
        &mut self,
        number: u32,
        from: Vec<crate::sockets::owners::Owner>,
        tenants: &mut Tenants,
        net: &mut Net,
    ) {
        let mut handed = 0;
        let mut refused = 0;
        for old in from {
            let state = tenants.snapshot(old);
            let target = tenants.owner_for_new_connection();
            let conns = net.hand_over(old, target);
            tenants.end(old, net);
            handed += conns.len();
            if let Some(state) = state {
                match tenants.restore(target, state, net) {
                    Restored::Taken => {}
                    Restored::Refused(why) => {
                        self.counters.snapshots_refused += 1;
                        refused += 1;
                        // The guest's words, once per swap, on one line and short:
                        // with an instance per connection there is one per owner.
                        if refused == 1 {
                            let why: String = why.chars().take(MAX_REASON).collect();
                            warn!(
                                generation = number,
                                "generation {number} refused the snapshot of the one before: \
                                 {}; it goes on with a fresh state, and takes the connections",
                                why.escape_debug()
                            );
                        }
                    }
                    Restored::Trapped => continue,
                }
            }
            if !conns.is_empty() {
                let adopted: Vec<Event> = conns.iter().map(|&c| Event::Adopted(c)).collect();
                tenants.run(target, &adopted, net);
            }
            tenants.after_call(target, net);
        }
        if refused > 1 {
            warn!(
                generation = number,
                "generation {number} refused {} more snapshot(s) at this swap",
                refused - 1
            );
        }
        info!("handed {handed} connection(s) over to generation {number}");
    }
}
