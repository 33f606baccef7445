//! `traps_always`: panics (so traps) in every `handle` call, from the first.
//!
//! It exists for the crash-loop test: each trap makes the host replace the
//! instance, and the replacement traps again at once. The host must stay up,
//! keep accepting (and closing) connections, and count the traps rather than
//! spin or grow.
//!
//! Written against the raw interface: it needs nothing of the buffered layer.

use sandsock_sdk::raw::{self, Event};

struct TrapsAlways;

impl raw::Guest for TrapsAlways {
    fn handle(events: Vec<Event>, _input: Vec<u8>) {
        panic!(
            "traps_always: trapping on a batch of {} events",
            events.len()
        );
    }
}

sandsock_sdk::export_raw!(TrapsAlways);
