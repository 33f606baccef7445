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
//!    refused); Go + the memory store ─────────►  open the store, start the loops
//!                                  ◄──────────── Serving
//!    finish open connections as at SIGTERM;
//!    exit                                         serves on
//! ```
//!
//! Until `Serving`, the old process can take everything back: if the new one fails
//! to start, cannot load the guest, dies or says nothing in time, the old one
//! accepts again and says why.
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
