//! Hot swap: replacing the guest of a running server without dropping a connection,
//! and everything that decides which generation of the guest serves which
//! connection.
//!
//! - [`handler`]: [`WasmHandler`], the guest as the event loop's handler: it puts
//!   the parts below together.
//! - [`generations`]: every loaded version and the instances serving it
//!   ([`tenants`]): how a new one takes over ([`SwapMode`]), when an old one's
//!   connections are closed (`--drain-timeout`), when it is dropped, and a handoff:
//!   connections and the guest's state moved to the new generation.
//! - [`recycle`]: a fresh instance of the same code taking over from a leaking one.
//! - [`reloader`]: the triggers (`--watch`, `SIGHUP`) and the loader thread, which
//!   reads, compiles and checks a new guest off the loop thread.
//! - [`canary`]: `--swap canary`, a new guest tried as a shadow on live traffic and
//!   promoted only if it answers what the serving one answers.
//! - [`recorder`]: `--record`, each instance's tape: what the world gave it and
//!   what it sent, turn by turn.

pub mod canary;
pub mod generations;
pub mod handler;
pub mod recorder;
pub mod recycle;
pub mod reloader;
pub mod tenants;

pub use canary::{Canary, CanaryConfig, Verdict};
pub use generations::Generations;
pub use handler::WasmHandler;
pub use recycle::Recycle;
pub use reloader::{Loaded, ReloadHandle, Reloader, SwapInbox};

/// What happens to open connections when a new generation takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SwapMode {
    /// Open connections stay with the generation that accepted them until they
    /// close; only new ones go to the new generation.
    Drain,
    /// Open connections move to the new generation at once (`adopted`), with the
    /// guest's state handed over through its optional `state` interface.
    Handoff,
}

/// How a reload's new generation takes over (`--swap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SwapPolicy {
    /// At once; open connections stay with the generation that accepted them.
    Drain,
    /// At once; open connections move to the new generation with the guest's state.
    Handoff,
    /// First as a shadow on live traffic, compared with the serving generation;
    /// promoted (with `--canary-then`) only if it answers the same.
    Canary,
}
