//! What the event loop calls once per batch: a wasm guest, or (for the benchmark's
//! baseline) the same logic compiled natively.

use std::time::Instant;

use crate::connection::Owner;
use crate::net::Net;
use crate::wit::Event;

/// The events of one turn, each with the guest instance it belongs to.
///
/// With one shared instance the owners are all the same and a handler passes
/// `events()` straight through; with an instance per connection they say where each
/// event goes (a `hangup`'s connection is already gone from the table by then).
#[derive(Debug, Default)]
pub struct Batch {
    events: Vec<Event>,
    owners: Vec<Owner>,
}

impl Batch {
    /// Adds an event for `owner`.
    pub fn push(&mut self, owner: Owner, event: Event) {
        self.events.push(event);
        self.owners.push(owner);
    }

    /// The events, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Each event with its owner, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Owner, &Event)> {
        self.owners.iter().copied().zip(&self.events)
    }

    /// Whether there is nothing to deliver.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empties it, keeping its memory for the next turn.
    pub fn clear(&mut self) {
        self.events.clear();
        self.owners.clear();
    }
}

/// Handles one batch of events, doing its I/O through `net`.
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

    /// Handles `batch`, in order.
    fn handle(&mut self, batch: &Batch, net: &mut Net);

    /// The host is shutting down: tell every guest instance, once.
    fn shutdown(&mut self, net: &mut Net);

    /// `SIGHUP`: reload the guest.
    fn reload(&mut self) {}

    /// The loop's waker fired (a new guest is ready, say).
    fn on_wake(&mut self, _net: &mut Net) {}

    /// Called once per turn, for work due at a time rather than on an event (a
    /// drain timeout); `next_tick` says when the loop should wake for it.
    fn tick(&mut self, _now: Instant, _net: &mut Net) {}

    /// When `tick` next has something to do, if ever.
    fn next_tick(&self) -> Option<Instant> {
        None
    }
}
