//! [`EventHandler`]: what the event loop calls once per turn.

use std::time::Instant;

use super::batch::Batch;
use super::events::Event;
use super::net::Net;
use super::owners::Owner;
use crate::shared::metrics::Published;
use crate::shared::wit::Conn;

/// Connections an upgrade's old process handed over, from one of its guest
/// instances: their owner here, that instance's snapshot, their handles.
pub type CarriedGroup = (Owner, Option<Vec<u8>>, Vec<Conn>);

/// Handles one batch of events, doing its I/O through `net`: a wasm guest, or (for
/// the benchmark's baseline) the same logic compiled natively.
///
/// The loop makes one call per turn with every event of that turn. A handler deals
/// with its own faults (a guest trap is logged and recovered from inside): the loop
/// goes on whatever happens.
pub trait EventHandler {
    /// The guest instance that will own a connection accepted now.
    fn owner_for_new_connection(&mut self) -> Owner {
        0
    }

    /// Whether new connections can be served now; while not (a crashing guest backs
    /// off), the loop accepts and closes them at once.
    fn accepting(&mut self) -> bool {
        true
    }

    /// Adds what came from outside the loop since the last turn (the store's
    /// answers, topic messages) to `batch`, after the loop's own events.
    fn collect(&mut self, _batch: &mut Batch) {}

    /// Whether something from outside the loop waits for `collect`: the loop does
    /// not sleep while it does. Called every turn: one atomic load, no lock.
    fn has_pending(&self) -> bool {
        false
    }

    /// Handles `batch`: each owner's events, in order.
    fn handle(&mut self, batch: &Batch, net: &mut Net);

    /// The host is shutting down: tell every guest instance, once.
    fn shutdown(&mut self, net: &mut Net);

    /// The loop has ended (its shutdown is complete): write out what is still
    /// pending, such as log lines that sum up what happened since the last.
    fn finish(&mut self) {}

    /// The loop's waker fired: look for what another thread left (a new guest).
    fn on_wake(&mut self, _net: &mut Net) {}

    /// Called once per turn, for work due at a time rather than on an event (a
    /// drain timeout); `next_tick` says when the loop should wake for it.
    fn tick(&mut self, _now: Instant, _net: &mut Net) {}

    /// When `tick` next has something to do, if ever.
    fn next_tick(&self) -> Option<Instant> {
        None
    }

    /// Whether a guest waits for something from outside the loop that would be
    /// lost with this process (a store answer on its way, or one not yet given to
    /// it): an upgrade's handover waits until none does.
    fn owes(&self) -> bool {
        false
    }

    /// An upgrade carries the connections of `owners` to a new process: each one's
    /// state, in order. A handler whose serving instance must carry its state even
    /// with no connection adds it (at the end: its state is restored last). None
    /// for a handler that keeps no state.
    fn carry_states(&mut self, owners: &mut Vec<Owner>) -> Vec<Option<Vec<u8>>> {
        vec![None; owners.len()]
    }

    /// Takes over what an upgrade's old process handed over: each group's state,
    /// then an `adopted` event for each of its connections.
    fn adopt_carried(&mut self, groups: Vec<CarriedGroup>, net: &mut Net) {
        let mut batch = Batch::default();
        for (owner, _, conns) in groups {
            for conn in conns {
                batch.push(owner, Event::Adopted(conn));
            }
        }
        if !batch.is_empty() {
            self.handle(&batch, net);
        }
    }

    /// Stores what the handler counts into the worker's published metrics (once per
    /// turn, with `--admin`).
    fn publish(&mut self, _to: &Published, _net: &Net) {}
}
