//! What the loop reports to a guest instance, in the host's own words: each
//! contract version turns these into its own types (`runtime::contracts`), so the
//! sockets side speaks no version of the contract's events.

use crate::shared::wit::{Conn, IoError};

/// Something that happened to one owner's connections or timers since its last call.
///
/// Readiness is reported, not input: a contract that hands the guest its bytes (1.x)
/// reads the `Readable` connections just before the call, one read each, and one
/// that lets the guest read (0.x) passes `Readable` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new connection, handed to the owner; its interest starts as readable only.
    Accepted(Conn),
    /// An outbound connection made with `connect` completed.
    Connected(Conn),
    /// The connection has bytes to read, or the peer's end-of-stream, and the owner
    /// wants to read.
    Readable(Conn),
    /// The connection can take more writes.
    Writable(Conn),
    /// The connection failed and the host released it.
    Hangup(HangupInfo),
    /// The owner's timer with this id fired.
    Timer(u64),
    /// A connection an earlier generation held is the owner's now (`--swap handoff`).
    Adopted(Conn),
    /// The host is shutting down.
    Shutdown,
    /// Answers from the store, or topic messages, wait for the owner: the handler
    /// has put them with its instance, which lowers them where this event stands
    /// (contract 1.1; an older guest never makes the calls that bring them).
    Mail,
}

/// Why a connection ended without its owner closing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HangupInfo {
    /// The connection; its handle is dead from now on.
    pub conn: Conn,
    /// `reset`, or `refused`/`unreachable` for an outbound connection.
    pub error: IoError,
}

/// What one read of a connection found, its bytes in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// This many bytes (0 only when 0 were asked for).
    Data(usize),
    /// Nothing now; the connection is reported `Readable` when there is.
    WouldBlock,
    /// The peer's end-of-stream, after every byte it sent was read.
    Eof,
    /// The read failed: an unknown handle, or a connection that failed (a `Hangup`
    /// follows for it).
    Failed(IoError),
}

/// What one read of a connection found, with its bytes: the answer of the older
/// contracts' `read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// The bytes read.
    Data(Vec<u8>),
    /// Nothing now.
    WouldBlock,
    /// The peer's end-of-stream.
    Eof,
    /// The read failed.
    Failed(IoError),
}

impl ReadResult {
    /// `read`'s answer, from a read into `buf`.
    pub fn of(read: Read, buf: &[u8]) -> Self {
        match read {
            Read::Data(n) => Self::Data(buf[..n].to_vec()),
            Read::WouldBlock => Self::WouldBlock,
            Read::Eof => Self::Eof,
            Read::Failed(error) => Self::Failed(error),
        }
    }
}
