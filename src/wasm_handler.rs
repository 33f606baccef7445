//! [`WasmHandler`]: a wasm guest as the loop's [`EventHandler`]. It puts the guest
//! side's [`Tenants`] (which instance serves which connections, and traps) together
//! with hot swap's [`Generations`] and the worker's [`SwapInbox`]. Each worker has
//! one, with instances of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::metrics::Published;
use crate::runtime::component::Guest;
use crate::runtime::engine::Runtime;
use crate::runtime::tenants::Tenants;
use crate::sockets::batch::Batch;
use crate::sockets::handler::EventHandler;
use crate::sockets::net::Net;
use crate::sockets::owners::Owner;
use crate::swap::{Generations, Recycle, SwapInbox, SwapMode};

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
        })
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
        for (owner, events) in batch.groups() {
            self.tenants.run(owner, events, net);
            self.tenants.after_call(owner, net);
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
        self.tenants.shutdown(net);
    }

    fn on_wake(&mut self, net: &mut Net) {
        let Some(inbox) = &self.inbox else {
            return;
        };
        while let Some(loaded) = inbox.take() {
            let digest = loaded.guest.digest;
            let swapped = self.generations.swap_in(loaded, &mut self.tenants, net);
            inbox.report(digest, swapped);
        }
    }

    fn tick(&mut self, now: Instant, net: &mut Net) {
        self.tenants.tick(now);
        if self.generations.has_retired() {
            self.generations
                .enforce_drain_timeout(now, &mut self.tenants, net);
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        let deadlines = [self.generations.next_deadline(), self.tenants.next_tick()];
        deadlines.into_iter().flatten().min()
    }

    fn publish(&mut self, to: &Published, net: &Net) {
        self.tenants.publish(to);
        self.generations.publish(to, &self.tenants, net);
    }
}
