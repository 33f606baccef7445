//! Hot swap: replacing the guest of a running server without dropping a connection.
//!
//! - [`reloader`]: the triggers (`--watch`, `SIGHUP`) and the loader thread, which
//!   reads, compiles and checks a new guest off the loop thread.
//! - [`generations`]: every loaded version, and the policy: how a new one takes
//!   over ([`SwapMode`]), when an old one's connections are closed
//!   (`--drain-timeout`), and when it is dropped; and recycling ([`Recycle`]): a
//!   fresh instance of the same code taking over from a leaking one.
//! - [`canary`]: `--swap canary`, a new generation tried as a shadow on live
//!   traffic and promoted only if it answers what the serving one answers
//!   (compared by [`diff`]).

pub mod canary;
pub mod diff;
pub mod generations;
pub mod reloader;

pub use canary::{Canary, CanaryConfig, Verdict};
pub use generations::Generations;
pub use reloader::{Loaded, ReloadHandle, Reloader, SwapInbox};

/// When the serving generation's shared instance is replaced by a fresh one of the
/// same code (`--recycle-at-memory`, `--recycle-after`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recycle {
    /// Its linear memory reaches this many bytes.
    pub at_memory: usize,
    /// It has served this many calls.
    pub after_calls: Option<u32>,
}

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
