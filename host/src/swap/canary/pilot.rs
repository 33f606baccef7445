//! [`Pilot`]: a worker's `--swap canary` as the loop drives it: a new guest starts a
//! trial (or, as optimized code of one on trial or serving, replaces it), the
//! serving generation's new connections are sampled, the trial's verdict promotes
//! the candidate through a normal swap or rejects it, and each step is logged once.

use tracing::{info, warn};

use super::{Canary, CanaryConfig, Verdict};
use crate::runtime::digest::Digest;
use crate::shared::metrics::{CanaryCounters, Published, millis};
use crate::sockets::batch::Batch;
use crate::sockets::events::Event;
use crate::sockets::net::Net;
use crate::store::{Delivery, StoreLink};
use crate::swap::generations::Generations;
use crate::swap::reloader::{Loaded, SwapInbox};

/// A worker's canary: its configuration (none without `--swap canary`), the
/// candidate on trial, and what it counts.
#[derive(Default)]
pub struct Pilot {
    config: Option<CanaryConfig>,
    /// The candidate on trial, if one is.
    canary: Option<Canary>,
    /// The candidate last rejected: its tier-up, arriving later, is dropped too.
    rejected: Option<Digest>,
    /// Connections compared when progress was last logged.
    progress_logged: u32,
    counters: CanaryCounters,
    /// The worker's store: the shadows read through to it, and never write.
    store: Option<StoreLink>,
}

/// Tells the loader how the guest with `digest` ended in this worker.
pub fn report(inbox: Option<&SwapInbox>, digest: Digest, serving: bool) {
    if let Some(inbox) = inbox {
        inbox.report(digest, serving);
    }
}

impl Pilot {
    /// New guests are tried as `config` says; with `None` they are swapped in at
    /// once, and the pilot only publishes zeros.
    pub fn new(config: Option<CanaryConfig>) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The worker's store, for the shadows' reads.
    pub fn set_store(&mut self, link: StoreLink) {
        self.store = Some(link);
    }

    /// An answer the store gave a shadow.
    pub fn deliver(&mut self, delivery: Delivery) {
        if let Some(canary) = &mut self.canary {
            canary.deliver(delivery);
        }
    }

    /// Whether new guests go through a trial (`--swap canary`).
    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// A new guest with `--swap canary`: a trial, or (for the optimized code of a
    /// guest already serving or on trial) what it replaces.
    pub fn arrived(
        &mut self,
        loaded: Loaded,
        generations: &mut Generations,
        net: &mut Net,
        inbox: Option<&SwapInbox>,
    ) {
        let Some(config) = self.config else {
            return;
        };
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
                    let swapped = generations.swap_in(loaded, net);
                    report(inbox, digest, swapped);
                }
            }
            return;
        }
        if self.canary.is_some() {
            self.conclude(
                Verdict::Reject("a newer guest arrived before the verdict".into()),
                generations,
                net,
                inbox,
            );
        }
        let short = loaded.guest.short_digest();
        self.rejected = None;
        let serving = generations.serving_guest().clone();
        let seed = generations.serving_snapshot();
        let runtime = generations.runtime().clone();
        match Canary::start(
            config,
            loaded,
            serving,
            seed,
            runtime,
            self.store.clone(),
            net,
        ) {
            Ok(canary) => {
                if let Some(instance) = generations.serving_instance_mut() {
                    instance.record_store(true);
                }
                info!(
                    candidate = %short,
                    "canary: trying the new guest ({short}) as a shadow of generation {} on {} % of new connections; promoted after {} agree",
                    generations.serving_number(),
                    config.sample_percent,
                    config.connections
                );
                self.progress_logged = 0;
                self.canary = Some(canary);
            }
            Err(why) => {
                self.counters.rejections += 1;
                warn!(candidate = %short, "canary rejected the new guest ({short}): {why}; the serving generation goes on");
                self.rejected = Some(digest);
                report(inbox, digest, false);
            }
        }
    }

    /// Before the batch runs: the connections the serving generation accepts in it
    /// (only it accepts) are the ones a trial samples.
    pub fn sample(&mut self, batch: &Batch, net: &mut Net) {
        let Some(canary) = &mut self.canary else {
            return;
        };
        for (_, events) in batch.groups() {
            for event in events {
                if let Event::Accepted(conn) = event {
                    canary.accepted(*conn, net);
                }
            }
        }
    }

    /// After the batch: the shadows hear what the serving generation read, and the
    /// trial's verdict is acted on.
    pub fn after_batch(
        &mut self,
        generations: &mut Generations,
        net: &mut Net,
        inbox: Option<&SwapInbox>,
    ) {
        if let Some(canary) = &mut self.canary {
            // The serving instance records from the trial's start, and so does one
            // that replaced it (after a trap or a recycle).
            let recording = generations.serving_instance_mut().and_then(|instance| {
                instance.record_store(true);
                instance.take_store_recording()
            });
            let verdict = canary.after_batch(net, recording.as_ref(), &mut self.counters);
            self.conclude(verdict, generations, net, inbox);
        }
    }

    /// The loop's tick: a shadow call if one has work, and the trial's verdict.
    pub fn tick(
        &mut self,
        generations: &mut Generations,
        net: &mut Net,
        inbox: Option<&SwapInbox>,
    ) {
        if let Some(canary) = &mut self.canary {
            let verdict = canary.tick(&mut self.counters);
            self.conclude(verdict, generations, net, inbox);
        }
    }

    /// At shutdown: a trial under way is rejected.
    pub fn shutdown(
        &mut self,
        generations: &mut Generations,
        net: &mut Net,
        inbox: Option<&SwapInbox>,
    ) {
        if self.canary.is_some() {
            let why = Verdict::Reject("the host is shutting down".into());
            self.conclude(why, generations, net, inbox);
        }
    }

    /// When the trial next needs the loop.
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        self.canary.as_ref().and_then(Canary::next_deadline)
    }

    /// Stores what it counted into the worker's published metrics.
    pub fn publish(&self, to: &Published) {
        to.canary(&self.counters);
    }

    /// Acts on where the trial stands: logs progress, promotes, or rejects.
    fn conclude(
        &mut self,
        verdict: Verdict,
        generations: &mut Generations,
        net: &mut Net,
        inbox: Option<&SwapInbox>,
    ) {
        let Some(canary) = &self.canary else { return };
        let (compared, inconclusive, spent) = canary.progress();
        if !matches!(verdict, Verdict::Running)
            && let Some(instance) = generations.serving_instance_mut()
        {
            instance.record_store(false);
        }
        let short = canary.digest();
        let spent_ms = millis(spent);
        match verdict {
            Verdict::Running => {
                let step = self.config.map_or(10, |c| (c.connections / 10).max(1));
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
                    generations.serving_number()
                );
                let swapped = generations.swap_in(loaded, net);
                self.counters.promotions += u64::from(swapped);
                report(inbox, digest, swapped);
            }
            Verdict::Reject(why) => {
                self.counters.rejections += 1;
                let canary = self.canary.take().expect("on trial");
                let digest = canary.finish(net).guest.digest;
                warn!(
                    candidate = %short,
                    compared,
                    shadow_ms = spent_ms,
                    "canary rejected the new guest ({short}): {why}; generation {} goes on serving (shadow calls took {spent_ms:.1} ms)",
                    generations.serving_number()
                );
                self.rejected = Some(digest);
                report(inbox, digest, false);
            }
        }
    }
}
