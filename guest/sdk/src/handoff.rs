//! The snapshot a [`serve!`](crate::serve) guest hands to its next generation at a
//! hot swap with `--swap handoff`: the handler's own bytes, wrapped together with
//! the SDK's per-connection state.
//!
//! The host moves the connections, with the bytes it holds for them; what the
//! guest holds must come through `state`, or it is lost. The handler's part is
//! whatever [`Handler::snapshot`](crate::Handler::snapshot) returns; the SDK's part
//! is what [`Io`] keeps per connection: bytes written but not yet taken by the
//! host (they go out after adoption, in order, before anything written later),
//! and the flags that decide reading and closing (end-of-stream seen, paused,
//! backpressure, auto-pause, still connecting, write side shut, failed, and a
//! write shutdown or close waiting for the queue), and the input the host read
//! while reading was paused, which the handler has not seen yet.
//!
//! Layout, version 3 (integers little-endian; `bytes` is a `u64` length, then
//! the bytes):
//!
//! ```text
//! magic     4 bytes   "SSDK"
//! version   u8        3, or 2 when no connection holds input (both are read: 2
//!                     is 3 with nothing held; and 1: it is 2 with bit 7 of the
//!                     flags always 0)
//! handler   bytes     the handler's snapshot, opaque here
//! count     u64       connections that follow
//! per connection:
//!   handle  u64
//!   flags   u8        bit 0 eof, 1 backpressure, 2 auto-pause, 3 paused,
//!                     4 connecting, 5 write side shut, 6 failed,
//!                     7 write interest asked for
//!   after   u8        once the queue is sent: 0 nothing, 1 shutdown-write, 2 close
//!   queue   bytes     written by the guest, not yet taken by the host
//!   held    bytes     read for the guest while reading was paused (from 3)
//!   held_eof u8       1 if the peer's end-of-stream came after them (from 3)
//! ```
//!
//! Nothing may follow. A snapshot that does not read exactly so is refused whole:
//! the new generation logs one line and starts fresh, keeping the connections (the
//! host's bytes for them are intact) but not what the old generation held.

use std::collections::HashMap;

use crate::conn_state::ConnState;
use crate::{BadSnapshot, Conn, Io, SnapshotReader, SnapshotWriter};

/// Tells an SDK snapshot from the bytes of a guest that does its own: a swap
/// between a raw stateful guest and an SDK one must not misread either.
const MAGIC: &[u8; 4] = b"SSDK";

/// The layout written by this build. A reader takes it and the ones before it
/// ([`READS`]) and refuses a later one: that would be a downgrade, which cannot
/// know what the newer fields meant.
const VERSION: u8 = 3;

/// The layouts this build reads.
const READS: [u8; 3] = [1, 2, 3];

/// Wraps the handler's snapshot and the SDK's connection state.
pub(crate) fn encode(handler: &[u8], io: &Io) -> Vec<u8> {
    let mut w = SnapshotWriter::new();
    for &byte in MAGIC {
        w.u8(byte);
    }
    // Layout 2 while nothing is held, so that an SDK from before contract 1.0 can
    // take the snapshot up (a rollback loses no state then).
    let version = if io.holds_any() { VERSION } else { 2 };
    w.u8(version);
    w.bytes(handler);
    io.snapshot_conns(&mut w, version);
    w.into_bytes()
}

/// What [`decode`] read: all of it checked, none of it applied yet.
pub(crate) struct Restored<'a> {
    /// The handler's snapshot, for [`Handler::restore`](crate::Handler::restore).
    pub(crate) handler: &'a [u8],
    /// The SDK's state of each connection handed over.
    pub(crate) conns: HashMap<Conn, ConnState>,
}

/// Reads a snapshot written by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Restored<'_>, BadSnapshot> {
    let mut r = SnapshotReader::new(bytes);
    for &byte in MAGIC {
        if r.u8()? != byte {
            return Err(BadSnapshot::new("not a sandsock-sdk snapshot"));
        }
    }
    let version = r.u8()?;
    if !READS.contains(&version) {
        return Err(BadSnapshot::new("unknown sandsock-sdk snapshot version"));
    }
    let handler = r.bytes()?;
    let conns = Io::decode_conns(&mut r, version)?;
    r.finish()?;
    Ok(Restored { handler, conns })
}
