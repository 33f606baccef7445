//! Contract 0.1.0, as released with hot swap. What it promised that today's contract
//! does not:
//! - `io-error` has no `invalid-address`: `connect` to something that is not an
//!   `ip:port` answers `not-permitted` (0.1 said it matches no `--allow-connect`);
//! - `close` and `shutdown-write` answer `unknown-conn` for a handle they do not know;
//! - `set-timer` takes a 64-bit delay with no maximum (a delay past a year fires after
//!   a year, the host's timers' horizon);
//! - `state.restore` answers nothing: it cannot refuse a snapshot;
//! - no `tls`, no `log`.
//!
//! Its types are its own (an `io-error` of 7 cases), so each batch is converted, into
//! a buffer the instance keeps.

use super::super::imports::GuestState;
use crate::shared::wit::sandsock::net::io::Host as Today;
use crate::shared::wit::{self as today, Conn};

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "wit/0.1.0",
        world: "handler",
    });
}

pub use generated::sandsock::net::{io, types};
pub use generated::{Handler, HandlerIndices};

/// Today's error in 0.1's words.
fn error(error: today::IoError) -> types::IoError {
    use types::IoError;
    match error {
        today::IoError::Closed => IoError::Closed,
        today::IoError::Reset => IoError::Reset,
        today::IoError::UnknownConn => IoError::UnknownConn,
        today::IoError::NotPermitted | today::IoError::InvalidAddress => IoError::NotPermitted,
        today::IoError::LimitExceeded => IoError::LimitExceeded,
        today::IoError::Refused => IoError::Refused,
        today::IoError::Unreachable => IoError::Unreachable,
    }
}

older_types!();
older_io!(max_timer_ms: u64::MAX,);
