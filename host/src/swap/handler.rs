//! [`WasmHandler`]: a wasm guest as the loop's [`EventHandler`]. It puts hot swap's
//! parts together: the [`Generations`] (which instance serves which connection), the
//! worker's [`SwapInbox`] (where new guests arrive), the canary's [`Pilot`] and
//! [`Recycling`]. Each worker has one, with instances of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::SwapMode;
use super::canary::{CanaryConfig, Pilot, report};
use super::generations::Generations;
use super::recorder::Recorder;
use super::recycle::{Recycle, Recycling};
use super::reloader::SwapInbox;
use crate::runtime::component::Guest;
use crate::runtime::engine::Runtime;
use crate::runtime::store_session::SHADOW_OWNER;
use crate::shared::metrics::{Published, StoreCounters};
use crate::sockets::batch::Batch;
use crate::sockets::events::Event;
use crate::sockets::handler::{CarriedGroup, EventHandler};
use crate::sockets::net::Net;
use crate::sockets::owners::Owner;
use crate::store::{Delivery, Outcome, StoreLink};

/// An [`EventHandler`] running a wasm guest under `--isolation` and `--swap`: one
/// instance shared by every connection, or one instance per connection, in as many
/// generations as hot swaps have left draining.
pub struct WasmHandler {
    generations: Generations,
    inbox: Option<SwapInbox>,
    recycling: Recycling,
    /// With `--swap canary`, the trials of new guests.
    canary: Pilot,
    /// The worker's store: where its instances' answers and messages arrive.
    store: Option<StoreLink>,
    /// The deliveries of one turn, kept so that a turn allocates nothing.
    mail: Vec<Delivery>,
    /// What the answers and messages add up to, for `/metrics`.
    store_counters: StoreCounters,
    /// Owners whose last call left answers or messages for the next (a call takes
    /// about `MAX_CALL_INPUT` of them): they get an `Event::Mail` next turn.
    mail_left: Vec<Owner>,
    /// With `--record`: each instance's tape.
    recorder: Option<Recorder>,
}

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
        let generations =
            Generations::new(runtime, Arc::new(guest), first, swap_mode, drain_timeout);
        Ok(Self {
            generations,
            inbox: None,
            recycling: Recycling::new(recycle),
            canary: Pilot::new(canary_config),
            store: None,
            mail: Vec::new(),
            store_counters: StoreCounters::default(),
            mail_left: Vec::new(),
            recorder: None,
        })
    }

    /// Records every instance's tape (`--record`).
    pub fn set_recorder(&mut self, recorder: Recorder) {
        self.generations.tenants.notes = Some(Vec::new());
        self.recorder = Some(recorder);
    }

    /// The worker's store, for its instances' `store` and `topics` calls.
    pub fn set_store(&mut self, link: StoreLink) {
        self.generations.tenants.set_store(link.clone());
        self.canary.set_store(link.clone());
        self.store = Some(link);
    }

    /// Times guest calls, for `/metrics`.
    pub fn time_calls(&mut self) {
        self.generations.time_calls();
    }

    /// Where new generations come from (`SIGHUP`, and file changes with `--watch`).
    pub fn set_swap_inbox(&mut self, inbox: SwapInbox) {
        self.inbox = Some(inbox);
    }
}

impl EventHandler for WasmHandler {
    fn owner_for_new_connection(&mut self) -> Owner {
        self.generations.owner_for_new_connection()
    }

    fn accepting(&mut self) -> bool {
        self.generations.accepting()
    }

    /// Hands each answer and message to its instance; an owner that had none
    /// waiting gets an `Event::Mail`, where its next call lowers them. One for an
    /// instance that ended (or was replaced) is dropped.
    fn collect(&mut self, batch: &mut Batch) {
        let Some(link) = &self.store else {
            return;
        };
        for owner in self.mail_left.drain(..) {
            batch.push(owner, Event::Mail);
        }
        if !link.inbox().has_pending() {
            return;
        }
        link.inbox().take(&mut self.mail);
        for delivery in self.mail.drain(..) {
            count(&mut self.store_counters, &delivery);
            let owner = delivery.to().owner;
            if owner == SHADOW_OWNER {
                self.canary.deliver(delivery);
                continue;
            }
            let tenants = &mut self.generations.tenants;
            let first = tenants
                .instance_mut(owner)
                .and_then(|instance| instance.deliver(delivery));
            if first == Some(true) {
                batch.push(owner, Event::Mail);
            }
        }
    }

    fn has_pending(&self) -> bool {
        !self.mail_left.is_empty()
            || self
                .store
                .as_ref()
                .is_some_and(|link| link.inbox().has_pending())
    }

    fn handle(&mut self, batch: &Batch, net: &mut Net) {
        if let Some(recorder) = &mut self.recorder {
            recorder.before_batch(batch, net);
        }
        self.canary.sample(batch, net);
        for (owner, events) in batch.groups() {
            if self.generations.run(owner, events, net) {
                self.mail_left.push(owner);
            }
        }
        self.record(net);
        let inbox = self.inbox.as_ref();
        self.canary.after_batch(&mut self.generations, net, inbox);
        // Both have read the turn; what happens from here (a recycle's handover)
        // is the next turn's.
        if let Some(tapes) = net.tapes() {
            tapes.end_turn();
        }
        self.generations.drop_closed();
        self.recycling.after_batch(&mut self.generations, net);
    }

    fn shutdown(&mut self, net: &mut Net) {
        self.recycling.stop();
        let inbox = self.inbox.as_ref();
        self.canary.shutdown(&mut self.generations, net, inbox);
        self.generations.shutdown(net);
        // The shutdown's calls (closing idle connections, say) are a turn of their
        // own: no batch may follow them.
        self.record(net);
        if let Some(tapes) = net.tapes() {
            tapes.end_turn();
        }
    }

    fn finish(&mut self) {
        self.generations.finish();
        // The connections left at the shutdown have finished: every tape ends.
        if let Some(recorder) = &mut self.recorder {
            recorder.finish();
        }
    }

    fn on_wake(&mut self, net: &mut Net) {
        while let Some(loaded) = self.inbox.as_ref().and_then(SwapInbox::take) {
            let inbox = self.inbox.as_ref();
            if self.canary.enabled() {
                self.canary
                    .arrived(loaded, &mut self.generations, net, inbox);
                continue;
            }
            let digest = loaded.guest.digest;
            let swapped = self.generations.swap_in(loaded, net);
            report(inbox, digest, swapped);
        }
    }

    fn tick(&mut self, now: Instant, net: &mut Net) {
        self.generations.tick(now);
        let inbox = self.inbox.as_ref();
        self.canary.tick(&mut self.generations, net, inbox);
        self.generations.enforce_drain_timeout(now, net);
    }

    fn next_tick(&self) -> Option<Instant> {
        [self.generations.next_tick(), self.canary.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn owes(&self) -> bool {
        !self.mail_left.is_empty()
            || self
                .store
                .as_ref()
                .is_some_and(|link| link.inbox().has_pending())
            || self.generations.tenants.await_store()
    }

    fn carry_states(&mut self, owners: &mut Vec<Owner>) -> Vec<Option<Vec<u8>>> {
        self.generations.carry_states(owners)
    }

    fn adopt_carried(&mut self, groups: Vec<CarriedGroup>, net: &mut Net) {
        self.generations.adopt_carried(groups, net);
        self.record(net);
    }

    fn publish(&mut self, to: &Published, net: &Net) {
        self.generations.publish(to, net);
        self.canary.publish(to);
        to.store(&self.store_counters);
    }
}

impl WasmHandler {
    /// With `--record`: what the batch's calls gave and did, onto their tapes.
    fn record(&mut self, net: &mut Net) {
        let Some(recorder) = &mut self.recorder else {
            return;
        };
        let tenants = &mut self.generations.tenants;
        let mut notes = tenants.notes.take().unwrap_or_default();
        recorder.after_batch(net, &mut notes, |owner| tenants.guest_of(owner));
        tenants.notes = Some(notes);
    }
}

/// Counts one answer or message as it arrives.
fn count(counters: &mut StoreCounters, delivery: &Delivery) {
    match delivery {
        Delivery::Done {
            kind,
            outcome,
            submitted,
            ..
        } => {
            if let Some(ops) = counters.ops.get_mut(usize::from(*kind)) {
                *ops += 1;
            }
            if let Outcome::Failed(error) = outcome {
                counters.errors[error.index()] += 1;
            }
            counters.seconds.observe(submitted.elapsed().as_secs_f64());
        }
        Delivery::Message { .. } => counters.messages += 1,
        Delivery::Lost { count, .. } => counters.lost += count,
    }
}
