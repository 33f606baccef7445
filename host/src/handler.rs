//! What the event loop calls once per batch: a wasm guest, or (for the benchmark's
//! baseline) the same logic compiled natively.

use crate::net::Net;
use crate::wit::Event;

/// Handles one batch of events, doing its I/O through `net`.
///
/// The loop makes exactly one call per turn with every event of that turn. A handler
/// deals with its own faults (a guest trap is logged and recovered from inside): the
/// loop goes on whatever happens.
pub trait EventHandler {
    /// Handles `batch`, in order.
    fn handle(&mut self, batch: &[Event], net: &mut Net);
}
