//! Upgrading the host binary without a restart, as nginx does at `SIGUSR2`; and
//! systemd's socket activation, the other way a process gets sockets it did not bind.
//!
//! ```text
//!  old process (supervisor)                      new process (same arguments)
//!  SIGUSR2 / POST /upgrade
//!    spawn binary, link on fd 3 ──────────────►  check the link's peer: parent, same uid
//!    Handover: listening sockets (SCM_RIGHTS) ─►  take them instead of binding
//!    (goes on serving)                            load the guest (cache or compile)
//!                                  ◄──────────── Ready
//!    stop accepting (queues fill, nothing is
//!    refused)
//!  --upgrade handover (the default):
//!    each loop settles (no input to the
//!    guests until no store answer is owed),
//!    packs its plain connections and the
//!    guests' snapshots, and waits, frozen
//!    Go + the memory store, then a parcel
//!    per worker (Conns + Fds) ────────────────►  open the store; check the connections,
//!                                                put them in the loops' tables (untouched)
//!                                  ◄──────────── Taken
//!    Released ────────────────────────────────►  restore each snapshot, adopt the
//!    the loops let them go (TLS ones finish       connections, start the loops
//!    here); exit once those have
//!  --upgrade drain:
//!    Go + the memory store ───────────────────►  open the store, start the loops
//!                                  ◄──────────── Serving
//!    finish open connections as at SIGTERM;
//!    exit                                         serves on
//! ```
//!
//! Until `Go`, the old process can take everything back: if the new one fails to
//! start, cannot load the guest, dies or says nothing in time, it is stopped, and
//! the old one accepts again and says why.
//!
//! With a handover, that holds until `Released`: the old process's loops hold every
//! connection unchanged (the new process touches none before it, and accepts
//! nothing), so a new process that fails, dies, or says nothing in time is killed
//! and leaves them where they were. `Released` is the one step the old process
//! cannot take back, and it takes it alone, in its supervisor. The loops stay
//! frozen from packing to `Released`, the memory store's snapshot and its passage
//! included: milliseconds for small stores, more for one of hundreds of MiB.
//!
//! With a drain, the new process may accept as soon as it has `Go`: if it does
//! not say `Serving` in time, the old one accepts again and asks it to finish what
//! it took (SIGTERM) rather than killing it.
//!
//! The new process is started with `fork` and `exec` (std's spawn, with a
//! `pre_exec` that puts the link on fd 3): the fork copies the page tables of a
//! process whose guests' memory may be large, a stall of milliseconds for the
//! supervisor's thread, not for the loops.
//!
//! - [`link`]: the socket pair and its frames.
//! - [`binary`]: the file and arguments an upgrade runs, and who may write it.
//! - [`held`]: the listening sockets a process holds, as handed over.
//! - [`hand_over`]: the old process's side ([`Upgrader`]).
//! - [`take_over`]: the new process's side ([`Predecessor`]).
//! - [`systemd`]: socket activation and `sd_notify`.

pub mod binary;
pub mod hand_over;
pub mod held;
pub mod link;
pub mod systemd;
pub mod take_over;

pub use hand_over::{UpgradeHandle, UpgradeStats, Upgrader};
pub use take_over::Predecessor;

/// What an upgrade does with the open connections (`--upgrade`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UpgradeMode {
    /// They finish on the old process, as at `SIGTERM`, within `--shutdown-timeout`
    /// (and `--drain-timeout`, if set).
    Drain,
    /// Plain ones move to the new process with the guests' state; TLS ones drain.
    Handover,
}
