//! [`WasmHandler`]: a wasm guest as the loop's [`EventHandler`]. It puts the guest
//! side's [`Tenants`] (which instance serves which connections, and traps) together
//! with hot swap's [`Generations`] and the worker's [`SwapInbox`]. Each worker has
//! one, with instances of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::metrics::{CanaryCounters, Published};
use crate::runtime::component::Guest;
use crate::runtime::digest::Digest;
use crate::runtime::engine::Runtime;
use crate::runtime::tenants::Tenants;
use crate::sockets::batch::Batch;
use crate::sockets::handler::EventHandler;
use crate::sockets::net::Net;
use crate::sockets::owners::Owner;
use crate::swap::{
    Canary, CanaryConfig, Generations, Loaded, Recycle, SwapInbox, SwapMode, Verdict,
};
use crate::wit::Event;

/// An [`EventHandler`] running a wasm guest under `--isolation` and `--swap`: one
/// instance shared by every connection, or one instance per connection, in as many
/// generations as hot swaps have left draining.
pub struct WasmHandler {
    tenants: Tenants,
    generations: Generations,
    inbox: Option<SwapInbox>,
    recycle: Recycle,
    /// Off once the host is shutting down: a fresh instance would never hear it.
    recycling: bool,
    /// After a fresh instance failed to start: no recycling before this.
    recycle_retry: Option<Instant>,
    /// With `--swap canary`: how new guests are tried.
    canary_config: Option<CanaryConfig>,
    /// The candidate on trial, if one is.
    canary: Option<Canary>,
    /// The candidate last rejected: its tier-up, arriving later, is dropped too.
    rejected: Option<Digest>,
    /// Connections compared when progress was last logged.
    progress_logged: u32,
    canary_counters: CanaryCounters,
}

/// After a recycle failed (a fresh instance did not start), the next attempt waits
/// this long: no instantiation per batch.
const RECYCLE_RETRY: Duration = Duration::from_secs(10);

impl WasmHandler {
    /// Starts serving `guest` as generation 1. An instance starts now, so that a
    /// guest that cannot start is an error at start-up, where the user sees it.
    pub fn new(
        runtime: Arc<Runtime>,
        guest: Guest,
        swap_mode: SwapMode,
        drain_timeout: Option<Duration>,
        recycle: Recycle,
        canary_config: Option<CanaryConfig>,
    ) -> Result<Self> {
        let first = runtime
            .instantiate(&guest)
            .with_context(|| format!("guest `{}` failed to start", guest.name))?;
        let guest = Arc::new(guest);
        let generations = Generations::new(guest.clone(), swap_mode, drain_timeout);
        let tenants = Tenants::new(runtime, generations.serving_number(), guest, first);
        Ok(Self {
            tenants,
            generations,
            inbox: None,
            recycle,
            recycling: true,
            recycle_retry: None,
            canary_config,
            canary: None,
            rejected: None,
            progress_logged: 0,
            canary_counters: CanaryCounters::default(),
        })
    }

    /// A new guest with `--swap canary`: a trial, or (for the optimized code of a
    /// guest already serving or on trial) what it replaces.
    fn try_canary(&mut self, config: CanaryConfig, loaded: Loaded, net: &mut Net) {
        let digest = loaded.guest.digest;
        if loaded.tier_up {
            match &mut self.canary {
                // The candidate's optimized code: promoted instead of the baseline
                // code on trial, as the swap itself (not a tier-up of its own).
                Some(canary) if canary.candidate() == digest => {
                    let on_trial = canary.loaded_mut();
                    on_trial.guest = loaded.guest;
                }
                _ if self.rejected == Some(digest) => {}
                _ => {
                    let swapped = self.generations.swap_in(loaded, &mut self.tenants, net);
                    self.report(digest, swapped);
                }
            }
            return;
        }
        if self.canary.is_some() {
            self.conclude(
                Verdict::Reject("a newer guest arrived before the verdict".into()),
                net,
            );
        }
        let short = loaded.guest.short_digest();
        self.rejected = None;
        let serving = self.generations.serving_guest().clone();
        let seed = self.tenants.serving_snapshot();
        let runtime = self.tenants.runtime().clone();
        match Canary::start(config, loaded, serving, seed, runtime, net) {
            Ok(canary) => {
                info!(
                    candidate = %short,
                    "canary: trying the new guest ({short}) as a shadow of generation {} on {} % of new connections; promoted after {} agree",
                    self.generations.serving_number(),
                    config.sample_percent,
                    config.connections
                );
                self.progress_logged = 0;
                self.canary = Some(canary);
            }
            Err(why) => {
                self.canary_counters.rejections += 1;
                warn!(candidate = %short, "canary rejected the new guest ({short}): {why}; the serving generation goes on");
                self.rejected = Some(digest);
                self.report(digest, false);
            }
        }
    }

    /// Acts on where the trial stands: logs progress, promotes, or rejects.
    fn conclude(&mut self, verdict: Verdict, net: &mut Net) {
        let Some(canary) = &self.canary else { return };
        let (compared, inconclusive, spent) = canary.progress();
        let short = canary.digest();
        let spent_ms = crate::metrics::millis(spent);
        match verdict {
            Verdict::Running => {
                let step = self
                    .canary_config
                    .map_or(10, |c| (c.connections / 10).max(1));
                if compared >= self.progress_logged + step {
                    self.progress_logged = compared;
                    info!(candidate = %short, compared, inconclusive, shadow_ms = spent_ms, "canary: {compared} connection(s) compared, no divergence ({inconclusive} inconclusive)");
                }
            }
            Verdict::Promote => {
                let canary = self.canary.take().expect("on trial");
                let loaded = canary.finish(net);
                let digest = loaded.guest.digest;
                info!(
                    candidate = %short,
                    compared,
                    shadow_ms = spent_ms,
                    "canary: the new guest ({short}) answered as generation {} did on {compared} connection(s); promoted (shadow calls took {spent_ms:.1} ms)",
                    self.generations.serving_number()
                );
                let swapped = self.generations.swap_in(loaded, &mut self.tenants, net);
                self.canary_counters.promotions += u64::from(swapped);
                self.report(digest, swapped);
            }
            Verdict::Reject(why) => {
                self.canary_counters.rejections += 1;
                let canary = self.canary.take().expect("on trial");
                let digest = canary.finish(net).guest.digest;
                warn!(
                    candidate = %short,
                    compared,
                    shadow_ms = spent_ms,
                    "canary rejected the new guest ({short}): {why}; generation {} goes on serving (shadow calls took {spent_ms:.1} ms)",
                    self.generations.serving_number()
                );
                self.rejected = Some(digest);
                self.report(digest, false);
            }
        }
    }

    /// Tells the loader how the guest with `digest` ended in this worker.
    fn report(&self, digest: Digest, serving: bool) {
        if let Some(inbox) = &self.inbox {
            inbox.report(digest, serving);
        }
    }

    /// Times guest calls, for `/metrics`.
    pub fn time_calls(&mut self) {
        self.tenants.time_calls();
    }

    /// Where new generations come from (`SIGHUP`, and file changes with `--watch`).
    pub fn set_swap_inbox(&mut self, inbox: SwapInbox) {
        self.inbox = Some(inbox);
    }
}

impl EventHandler for WasmHandler {
    fn owner_for_new_connection(&mut self) -> Owner {
        self.tenants.owner_for_new_connection()
    }

    fn accepting(&mut self) -> bool {
        self.tenants.accepting()
    }

    fn handle(&mut self, batch: &Batch, net: &mut Net) {
        if let Some(canary) = &mut self.canary {
            // Only the serving generation accepts: these are the connections to sample.
            for (_, events) in batch.groups() {
                for event in events {
                    if let Event::Accepted(conn) = event {
                        canary.accepted(*conn, net);
                    }
                }
            }
        }
        for (owner, events) in batch.groups() {
            self.tenants.run(owner, events, net);
            self.tenants.after_call(owner, net);
        }
        if let Some(canary) = &mut self.canary {
            let verdict = canary.after_batch(net, &mut self.canary_counters);
            self.conclude(verdict, net);
        }
        if self.generations.has_retired() {
            self.generations.drop_closed(&self.tenants);
        }
        let Recycle {
            at_memory,
            after_calls,
        } = self.recycle;
        // The clock is read only while a retry waits.
        if self.recycling
            && self.recycle_retry.is_none_or(|at| at <= Instant::now())
            && let Some(why) = self.tenants.recycle_due(at_memory, after_calls)
        {
            let recycled = self.generations.recycle(&why, &mut self.tenants, net);
            self.recycle_retry = (!recycled).then(|| Instant::now() + RECYCLE_RETRY);
        }
    }

    fn shutdown(&mut self, net: &mut Net) {
        self.recycling = false;
        if self.canary.is_some() {
            self.conclude(Verdict::Reject("the host is shutting down".into()), net);
        }
        self.tenants.shutdown(net);
    }

    fn on_wake(&mut self, net: &mut Net) {
        while let Some(loaded) = self.inbox.as_ref().and_then(SwapInbox::take) {
            if let Some(config) = self.canary_config {
                self.try_canary(config, loaded, net);
                continue;
            }
            let digest = loaded.guest.digest;
            let swapped = self.generations.swap_in(loaded, &mut self.tenants, net);
            self.report(digest, swapped);
        }
    }

    fn tick(&mut self, now: Instant, net: &mut Net) {
        self.tenants.tick(now);
        if let Some(canary) = &mut self.canary {
            let verdict = canary.tick(&mut self.canary_counters);
            self.conclude(verdict, net);
        }
        if self.generations.has_retired() {
            self.generations
                .enforce_drain_timeout(now, &mut self.tenants, net);
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        let deadlines = [
            self.generations.next_deadline(),
            self.tenants.next_tick(),
            self.canary.as_ref().and_then(Canary::next_deadline),
        ];
        deadlines.into_iter().flatten().min()
    }

    fn publish(&mut self, to: &Published, net: &Net) {
        self.tenants.publish(to);
        self.generations.publish(to, &self.tenants, net);
        to.canary(&self.canary_counters);
    }
}
