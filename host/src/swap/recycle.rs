//! Recycling (`--recycle-at-memory`, `--recycle-after`): the serving generation's
//! shared instance replaced by a fresh one of the same code before a guest that
//! leaks runs out of memory. It is a swap to a generation of its own, with nothing
//! closed: a guest that keeps state hands its connections over, one that keeps none
//! lets them drain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::SwapMode;
use super::generations::Generations;
use crate::runtime::trap::describe;
use crate::sockets::net::Net;

/// The least growth that makes an instance past `--recycle-at-memory` due for
/// recycling: one wasm page.
const MIN_RECYCLE_GROWTH: usize = 64 * 1024;

/// After a recycle failed (a fresh instance did not start), the next attempt waits
/// this long: no instantiation per batch.
const RECYCLE_RETRY: Duration = Duration::from_secs(10);

/// When the serving generation's shared instance is replaced by a fresh one of the
/// same code (`--recycle-at-memory`, `--recycle-after`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recycle {
    /// Its linear memory reaches this many bytes.
    pub at_memory: usize,
    /// It has served this many calls.
    pub after_calls: Option<u32>,
}

/// A worker's recycling: when it is due, and whether it may happen now.
#[derive(Debug)]
pub struct Recycling {
    config: Recycle,
    /// Off once the host is shutting down: a fresh instance would never hear it.
    on: bool,
    /// After a fresh instance failed to start: no recycling before this.
    retry: Option<Instant>,
}

impl Recycling {
    /// Recycling as `config` says, from now on.
    pub fn new(config: Recycle) -> Self {
        Self {
            config,
            on: true,
            retry: None,
        }
    }

    /// After a batch: recycles the serving instance if that is due.
    pub fn after_batch(&mut self, generations: &mut Generations, net: &mut Net) {
        // The clock is read only while a retry waits.
        if !self.on || self.retry.is_some_and(|at| at > Instant::now()) {
            return;
        }
        if let Some(why) = generations.recycle_due(self.config) {
            let recycled = generations.recycle(&why, net);
            self.retry = (!recycled).then(|| Instant::now() + RECYCLE_RETRY);
        }
    }

    /// No more recycling: the host is shutting down.
    pub fn stop(&mut self) {
        self.on = false;
    }
}

impl Generations {
    /// Why the serving generation's shared instance should be replaced by a fresh
    /// one (it grew to `at_memory` bytes, or served `after_calls` calls), if it
    /// should: a guest that leaks is recycled before it runs out of memory. Never
    /// with an instance per connection, which ends with its connection anyway.
    fn recycle_due(&self, config: Recycle) -> Option<String> {
        let Recycle {
            at_memory,
            after_calls,
        } = config;
        let owner = self.serving().shared?;
        let instance = self.tenants.instance_of(owner)?;
        let memory = instance.memory();
        // Past the mark, and grown by an eighth of it since the instance started (or
        // took over a recycled one's state): a guest whose live state alone is past
        // the mark is not recycled again and again.
        if memory >= at_memory && instance.grown() >= (at_memory / 8).max(MIN_RECYCLE_GROWTH) {
            return Some(format!(
                "its memory grew to {} KiB (--recycle-at-memory {} KiB)",
                memory / 1024,
                at_memory / 1024
            ));
        }
        let calls = self.tenants.calls_of(owner);
        match after_calls {
            Some(after) if calls >= after => {
                Some(format!("it served {calls} calls (--recycle-after {after})"))
            }
            _ => None,
        }
    }

    /// Replaces the serving generation's shared instance with a fresh one of the
    /// same compiled code, as a generation of its own (`why` says what was due): its
    /// connections move to the fresh instance with its state when the guest keeps
    /// state (the handoff path), and otherwise finish on the old one (drain). Nothing
    /// is closed. Returns whether it happened (a fresh instance that cannot start
    /// leaves the old one serving).
    fn recycle(&mut self, why: &str, net: &mut Net) -> bool {
        let guest = Arc::clone(&self.serving().guest);
        let old = self.serving().number;
        let first = match self.runtime().instantiate(&guest) {
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
        let from = self.tenants.owners_of(old);
        self.take_over(guest, first, mode, Some(from), net);
        // The fresh instance's memory now is where its growth counts from: what it
        // took over is not a leak.
        if let Some(instance) = self
            .serving()
            .shared
            .and_then(|owner| self.tenants.instance_mut(owner))
        {
            instance.rebase();
        }
        true
    }
}
