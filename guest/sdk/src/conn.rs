//! [`Conn`], the handle of one connection.

use std::fmt;

/// One connection, as the host hands it to the guest.
///
/// A `Copy` newtype over the host's `u64` handle, so that a connection cannot be
/// mixed up with a timer id or a byte count. The host never reuses a handle within
/// one process, so a `Conn` kept after the connection is gone refers to nothing:
/// every [`Io`](crate::Io) call on it is a harmless no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Conn(u64);

impl Conn {
    /// Wraps a raw handle, for guests that mix this SDK with [`raw`](crate::raw) calls.
    pub const fn from_raw(handle: u64) -> Self {
        Self(handle)
    }

    /// The host's handle, for [`raw`](crate::raw) calls and for logging.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

/// Prints `#handle`, short enough for log lines.
impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
