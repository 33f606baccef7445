//! [`Conn`], the handle of one connection.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

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

/// A map keyed by connection, with a hasher made for handles.
///
/// The standard map hashes with SipHash to resist keys an attacker picks; handles
/// are picked by the host, and SipHash in wasm costs more than the rest of a
/// lookup, several times per request. A multiplicative hash spreads the handles
/// (a slot in the low bits, a generation above) well enough.
pub type ConnMap<V> = HashMap<Conn, V, BuildHasherDefault<ConnHasher>>;

/// The [`ConnMap`] hasher: Fibonacci hashing of the handle.
#[derive(Default, Clone, Copy, Debug)]
pub struct ConnHasher(u64);

impl Hasher for ConnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, handle: u64) {
        self.0 = (self.0 ^ handle).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    /// Only handles are hashed with it; any other key still works, just slower.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
}
