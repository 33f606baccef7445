//! [`Connection`]: one connection, accepted or outbound: its socket (and TLS session,
//! if any), what the socket is known to be ready for, and what the guest asked for.
//!
//! mio reports readiness edge-triggered: an event says "something changed", once. The
//! flags here remember the edge until a syscall answers `WouldBlock`, which is what lets
//! the host present *level-triggered* readiness to the guest without a syscall per
//! check: a connection is reported again for as long as its flag is set and the guest
//! still wants it.

use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::capacity::Place;
use super::owners::Owner;
use super::tls::Tls;
use super::write_buffer::WriteBuffer;
use crate::shared::wit::{Conn, IoError};

/// Where a connection is in its life, as the host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// An accepted TLS connection whose handshake the host is running; it belongs to
    /// the host until then, and is closed at `deadline` if the handshake is not done.
    Handshaking {
        /// When the host gives up on the handshake.
        deadline: Instant,
    },
    /// An outbound connection the guest asked for, not yet established; it fails as
    /// `unreachable` at `deadline`.
    Connecting {
        /// When the host gives up on the handshake.
        deadline: Instant,
    },
    /// The guest owns it and may do I/O on it.
    Open,
    /// The socket failed; the guest still holds the handle until it is told `hangup`
    /// with this reason.
    Failed(IoError),
    /// The guest closed it; the host is sending its last buffered bytes, until
    /// `deadline` at the latest. The handle is dead for the guest.
    Closing {
        /// When the host gives up on a peer that does not read.
        deadline: Instant,
    },
}

/// One connection: accepted from a listener, or opened by the guest with `connect`.
#[derive(Debug)]
pub struct Connection {
    /// The guest's handle for it.
    pub id: Conn,
    /// The socket, registered once for readable and writable edges.
    pub stream: TcpStream,
    /// The peer's address, for `peer` and for logs.
    pub peer: SocketAddr,
    /// The guest instance it belongs to.
    pub owner: Owner,
    /// Where it is in its life.
    pub phase: Phase,
    /// The socket may have bytes (or end-of-stream) to read.
    pub readable: bool,
    /// The peer has shut down its side; a short read does not mean "drained" then,
    /// because no new edge will come for the end-of-stream already queued.
    pub peer_closed: bool,
    /// The guest was answered `eof`; the read side has nothing more to report.
    pub eof_seen: bool,
    /// The socket may take more bytes.
    pub writable: bool,
    /// Guest interest in `readable` events.
    pub want_read: bool,
    /// Guest interest in `writable` events.
    pub want_write: bool,
    /// A `write` answered `would-block`: report `writable` once when there is room.
    pub notify_writable: bool,
    /// The guest called `shutdown-write`; the FIN goes out once `out` is empty.
    pub write_shut: bool,
    /// The FIN was sent.
    pub fin_sent: bool,
    /// Bytes the guest wrote that the socket has not taken yet.
    pub out: WriteBuffer,
    /// An outbound connection completed and the guest has not been told yet.
    pub announce_connected: bool,
    /// A byte of its client's (or the end) was read from it; true until adoption
    /// for a connection the guest does not have yet (outbound, or a TLS one in its
    /// handshake). A shutdown waits for accepted connections to be heard before the
    /// guest is told, so that a request on its way is not taken for an idle one.
    pub heard: bool,
    /// It is in the loop's list of connections to look at before the next batch.
    pub queued: bool,
    /// Its TLS session, for a connection from a `--listen-tls` listener: boxed, so
    /// that a plain connection pays a pointer for it.
    pub tls: Option<Box<Tls>>,
    /// Its I/O on the loop's io_uring, when it is there (`--io uring`).
    pub ring: RingIo,
    /// Its place under `--max-connections`, given back when the record is dropped.
    _place: Place,
}

/// A connection's side of `--io uring` (see [`crate::sockets::ring`]). On the
/// ring, a connection is not in epoll: its bytes come in completions, ahead of the
/// guest's reads, and go out in sends the kernel completes later.
#[derive(Debug, Default)]
pub struct RingIo {
    /// Its I/O goes through the loop's ring.
    pub on: bool,
    /// Its multishot receive is armed (until the receive's last completion).
    pub receiving: bool,
    /// A cancel of its receive is on its way.
    pub cancelling: bool,
    /// Bytes received that the guest has not read yet; allocated only while some
    /// wait.
    pub unread: Vec<u8>,
    /// The bytes of the send in flight: they stay put until it completes.
    pub sending: Vec<u8>,
    /// How many of `sending` the kernel took so far.
    pub sent: usize,
    /// It is in the loop's list of connections with bytes to send.
    pub send_queued: bool,
}

impl RingIo {
    /// Bytes of the send in flight that the kernel has not taken yet.
    pub fn in_flight(&self) -> usize {
        self.sending.len() - self.sent
    }
}

impl Connection {
    /// A connection in `phase` (`Open` when accepted, `Connecting` when outbound):
    /// readable interest only, as the WIT promises. An accepted one starts writable,
    /// as a new socket is, which saves a buffered copy of the first answer.
    pub fn new(
        id: Conn,
        stream: TcpStream,
        peer: SocketAddr,
        owner: Owner,
        phase: Phase,
        place: Place,
    ) -> Self {
        Self {
            id,
            stream,
            peer,
            owner,
            phase,
            readable: false,
            peer_closed: false,
            eof_seen: false,
            writable: phase == Phase::Open,
            want_read: true,
            want_write: false,
            notify_writable: false,
            write_shut: false,
            fin_sent: false,
            out: WriteBuffer::default(),
            announce_connected: false,
            heard: phase != Phase::Open,
            queued: false,
            tls: None,
            ring: RingIo::default(),
            _place: place,
        }
    }

    /// Whether the guest should hear `readable` for it now.
    pub fn read_ready(&self) -> bool {
        self.phase == Phase::Open && self.want_read && !self.eof_seen && self.has_input()
    }

    /// Whether a read may find something: the socket's edge, or (with TLS) bytes
    /// decrypted already or the end.
    fn has_input(&self) -> bool {
        self.readable || self.tls.as_ref().is_some_and(|tls| tls.has_input())
    }

    /// Whether the guest should hear `writable` for it now. "Room" starts at half
    /// the bound, so a guest refilling a buffer writes in large pieces, not in
    /// bytes.
    pub fn write_ready(&self, max_buffer: usize) -> bool {
        self.phase == Phase::Open
            && !self.write_shut
            && (self.want_write || self.notify_writable)
            && self.unsent() <= max_buffer / 2
    }

    /// Bytes the guest wrote that the kernel has not taken: buffered, or in a send
    /// in flight.
    pub fn unsent(&self) -> usize {
        self.out.len() + self.ring.in_flight()
    }

    /// Whether the loop has something to tell the guest about it.
    pub fn reportable(&self, max_buffer: usize) -> bool {
        matches!(self.phase, Phase::Failed(_))
            || self.announce_connected
            || self.read_ready()
            || self.write_ready(max_buffer)
    }

    /// Whether its phase carries a deadline (the sweep enforces it).
    pub fn has_deadline(&self) -> bool {
        matches!(
            self.phase,
            Phase::Handshaking { .. } | Phase::Connecting { .. } | Phase::Closing { .. }
        )
    }

    /// Its socket, the record gone (its place given back).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Whether the calling guest instance may see it: its own, and not closed.
    pub fn visible_to(&self, caller: Owner) -> bool {
        self.owner == caller && !self.is_closing()
    }

    /// Whether the host, not the guest, now drives it to its end.
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }
}
