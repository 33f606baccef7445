//! A property test of `Net` (host/src/sockets/net/), the host's side of the guest's `io`
//! interface in wit/handler.wit, driven against real TCP socket pairs on 127.0.0.1.
//!
//! Each case builds a `Net` with small random limits, hands it a few accepted
//! connections, and applies a random sequence of
//! - guest calls: `read`, `write`, `set-interest`, `shutdown-write`, `close`, `peer`,
//!   `set-timer`, `cancel-timer`, `connect` (to a listener, to a closed port, to a
//!   denied address), and every call on a handle that is dead, never existed, or
//!   belongs to another guest instance;
//! - peer actions: write, read what has arrived, shut down its write side, reset
//!   (`SO_LINGER` 0, then close);
//! - turns of the event loop, in the loop's own order: `prune` (the end of the
//!   previous guest call), `poll`, `on_socket_event` for every edge, `collect`.
//!
//! Every answer and every batch is checked against a model of what the contract
//! allows. At the end every connection still open is closed, and the loop runs while
//! the peers drain what they were sent. A passing run shows, for the sequences tried:
//! - no call panics, on live, failing, closed, foreign or made-up handles;
//! - a handle is dead for good after `close` or `hangup`: every call answers
//!   `unknown-conn`, no event names it again, `hangup` comes at most once and never
//!   after the guest's own `close`; a peer reset (unless both sides had sent their
//!   FIN) and a refused connect bring exactly one `hangup`, with no help from the
//!   guest, and a call that failed brings it in the very next batch;
//! - `write` answers `accepted(1..=len)` (0 only for an empty write), `would-block`
//!   only when the buffer is full, `closed` after `shutdown-write`; `buffered` never
//!   exceeds `max_buffer`, and never holds more than was accepted and not yet received;
//! - `read` answers 1..=min(max, 64 KiB) bytes (none only for `max` 0), exactly the
//!   bytes the peer sent, in order; `eof` only after the peer's FIN and every byte
//!   before it, and `eof` again after that;
//! - level-triggered readiness: a connection left readable (the guest read a full
//!   `max`, or was told `readable` and did not read) is reported `readable` in the
//!   next batch; one with write interest (or owed a `writable` after a short write)
//!   and room in its buffer is reported `writable` in every batch; neither is
//!   reported without interest, after `eof`/`shutdown-write`, or before `connected`;
//! - no event is reported twice in one batch; timers fire once, not early, in the
//!   first batch after they are due, and never after `cancel-timer`;
//! - the peer receives exactly the bytes the host accepted, in order, then a clean
//!   end-of-stream (no loss, reordering, duplication or reset), even when the guest
//!   closed with bytes still buffered; and everything is released: `Net` holds no
//!   connection, no guest owns one, no wake-up is left, and every socket `Net` was
//!   given is closed while the peers' sockets are untouched (no double close).
//!
//! Two bugs this test found in `Net` have deterministic regression tests at the end
//! of this file: a reset that beat the host to an outbound connect's completion was
//! reported `unreachable`; and input reaching a socket after `Net` closed it made
//! the kernel reset the connection and drop accepted bytes not yet sent (fixed by a
//! lingering close: `Net` now lets a closed socket go only after the peer's end).
//!
//! Not checked: that a `readable` is never spurious (an edge can outlive the bytes
//! it announced), how soon a peer's bytes are reported (the kernel decides), and
//! the deadlines of `Limits` (connect 10 s, linger 30 s: too slow for a case).
//! Why: `Net` turns mio's edge-triggered readiness into the level-triggered contract
//! guests rely on, with a bounded buffer per connection and a handle lifecycle the
//! guest cannot look inside. Those are properties of *orders* of calls and socket
//! events, which example-based tests sample at a few points only; random sequences
//! checked against a model find the orders nobody thought of, and proptest shrinks a
//! failure to a short list of ops.
//!
//! `PROPTEST_CASES=N` runs more (or fewer) cases than the default.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use common::reset;
use mio::{Events, Poll};
use proptest::prelude::*;
use proptest::sample::Index;
use sandsock::shared::limits::{Limits, MAX_READ_CHUNK, MAX_TIMER_DELAY_MS};
use sandsock::shared::wit::{Conn, IoError, WriteResult};
use sandsock::sockets::{AllowList, AllowRule, Batch, Capacity, Lingering, Net, Phase};
use sandsock::sockets::{Event, HangupInfo, ReadResult};

/// Connections `Net` may hold at once in these tests.
const MAX_CONNECTIONS: usize = 8;
/// How long a turn waits for the kernel when nothing is ready.
const TURN_WAIT: Duration = Duration::from_millis(5);
/// `SO_SNDBUF` / `SO_RCVBUF`, set before the handshake, in cases that shrink the
/// kernel's buffers so that sockets fill up and `Net`'s own buffer does the work.
const SMALL_KERNEL_BUFFER: libc::c_int = 4096;
/// Turns allowed for the hangups that peer resets must bring.
const SETTLE_TURNS: usize = 100;
/// Turns, and wall time, allowed for the final flush.
const FINAL_TURNS: usize = 400;
const FINAL_TIME: Duration = Duration::from_secs(3);
/// The guest whose calls these are; and another one, whose calls must see nothing.
const GUEST: u32 = 0;
const OTHER_GUEST: u32 = 1;
/// Addresses `connect` must refuse as `not-permitted` (only 127.0.0.1 is allowed).
static DENIED: [&str; 5] = ["127.0.0.2:9", "[::1]:9", "localhost:9", "127.0.0.1", ""];

// ---- the operations ------------------------------------------------------------------

/// Where a `connect` goes.
#[derive(Clone, Debug)]
enum Target {
    /// The test's listener: the connection completes.
    Listener,
    /// A loopback port nobody listens on: `refused`.
    ClosedPort,
    /// An address the allow-list does not match, or no address at all.
    Denied(&'static str),
}

/// One step of a case. `conn` picks one of the connections made so far (dead ones
/// included: calls on them must answer `unknown-conn`).
#[derive(Clone, Debug)]
enum Op {
    Read {
        conn: Index,
        max: u32,
    },
    /// `write` up to `times` times, as a guest with more to send does, stopping at
    /// the first that is not taken whole.
    Write {
        conn: Index,
        len: usize,
        times: usize,
    },
    SetInterest {
        conn: Index,
        readable: bool,
        writable: bool,
    },
    ShutdownWrite {
        conn: Index,
    },
    Close {
        conn: Index,
    },
    Peer {
        conn: Index,
    },
    SetTimer {
        id: u64,
        after_ms: u64,
    },
    CancelTimer {
        id: u64,
    },
    /// Every call on a made-up handle, or (with `None`) on a dead one.
    Unknown {
        handle: Option<u64>,
        dead: Index,
    },
    /// Every call on a live handle, made by another guest instance.
    Foreign {
        conn: Index,
    },
    ClientWrite {
        conn: Index,
        len: usize,
    },
    ClientRead {
        conn: Index,
    },
    ClientShutdown {
        conn: Index,
    },
    ClientReset {
        conn: Index,
    },
    /// A new client connects; the loop takes it in at the next turn.
    Accept,
    Connect {
        target: Target,
    },
    Turn,
}

#[derive(Clone, Debug)]
struct Case {
    max_buffer: usize,
    clients: usize,
    small_kernel_buffers: bool,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    let idx = any::<Index>;
    let read_max = prop_oneof![Just(0u32), 1u32..64, 0u32..100_000];
    prop_oneof![
        6 => Just(Op::Turn),
        4 => (idx(), read_max).prop_map(|(conn, max)| Op::Read { conn, max }),
        4 => (idx(), 0usize..20_000, 1usize..=8)
            .prop_map(|(conn, len, times)| Op::Write { conn, len, times }),
        2 => (idx(), any::<bool>(), any::<bool>())
            .prop_map(|(conn, readable, writable)| Op::SetInterest { conn, readable, writable }),
        1 => idx().prop_map(|conn| Op::ShutdownWrite { conn }),
        1 => idx().prop_map(|conn| Op::Close { conn }),
        1 => idx().prop_map(|conn| Op::Peer { conn }),
        1 => (0u64..4, 0u64..5).prop_map(|(id, after_ms)| Op::SetTimer { id, after_ms }),
        1 => (0u64..4).prop_map(|id| Op::CancelTimer { id }),
        1 => (proptest::option::of(any::<u64>()), idx())
            .prop_map(|(handle, dead)| Op::Unknown { handle, dead }),
        1 => idx().prop_map(|conn| Op::Foreign { conn }),
        3 => (idx(), 0usize..20_000).prop_map(|(conn, len)| Op::ClientWrite { conn, len }),
        3 => idx().prop_map(|conn| Op::ClientRead { conn }),
        1 => idx().prop_map(|conn| Op::ClientShutdown { conn }),
        1 => idx().prop_map(|conn| Op::ClientReset { conn }),
        1 => Just(Op::Accept),
        1 => prop_oneof![
            3 => Just(Target::Listener),
            1 => Just(Target::ClosedPort),
            1 => proptest::sample::select(&DENIED[..]).prop_map(Target::Denied),
        ]
        .prop_map(|target| Op::Connect { target }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        4096usize..=65_536,
        1usize..=4,
        any::<bool>(),
        proptest::collection::vec(op(), 0..=60),
    )
        .prop_map(|(max_buffer, clients, small_kernel_buffers, ops)| Case {
            max_buffer,
            clients,
            small_kernel_buffers,
            ops,
        })
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn net_keeps_the_io_contract_under_random_calls_and_peers(case in case()) {
        run(&case);
    }
}

fn run(case: &Case) {
    let mut harness = Harness::new(case);
    for (step, op) in case.ops.iter().enumerate() {
        harness.step = step;
        harness.apply(op);
        harness.assert_invariants();
    }
    harness.step = case.ops.len();
    harness.finish();
}

// ---- the model -------------------------------------------------------------------

/// How a connection came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Accepted by the loop (inserted `Open`).
    Inbound,
    /// The guest's `connect` to the test listener.
    Outbound,
    /// The guest's `connect` to a closed port: it can only fail.
    Refused,
}

/// What the test knows about one connection, from both ends.
struct Model {
    handle: Conn,
    kind: Kind,
    /// What `peer` must answer.
    peer: SocketAddr,
    /// The far end; `None` for a refused connect, or once the peer reset it.
    client: Option<TcpStream>,
    /// The far end's fd and inode, to see that `Net` never closes it.
    client_socket: Option<(RawFd, u64)>,
    /// The socket handed to `Net` (inbound only), to see that it ends up closed.
    server_socket: Option<(RawFd, u64)>,
    /// Every byte the host accepted from `write`, in order.
    accepted: Vec<u8>,
    /// Every byte the peer has received.
    received: Vec<u8>,
    /// Every byte the peer's kernel took from it.
    sent: Vec<u8>,
    /// Every byte `read` returned.
    host_read: Vec<u8>,
    guest_closed: bool,
    hangup: bool,
    shut_write: bool,
    /// `read` answered `eof`.
    eof_read: bool,
    client_shut: bool,
    client_reset: bool,
    client_eof: bool,
    client_error: Option<io::ErrorKind>,
    want_read: bool,
    want_write: bool,
    /// A `write` took less than it was given: one `writable` is owed.
    owed_writable: bool,
    /// The socket is known to be still readable for `Net`: it was reported
    /// `readable`, or the last read filled the whole `max`, and no read since said
    /// otherwise.
    still_readable: bool,
    /// `connected` was reported (inbound connections start connected).
    connected: bool,
    /// A call failed on it: its `hangup` is due in the next batch.
    hangup_due: bool,
}

impl Model {
    fn new(
        handle: Conn,
        kind: Kind,
        peer: SocketAddr,
        client: Option<TcpStream>,
        server_socket: Option<(RawFd, u64)>,
    ) -> Self {
        let client_socket = client.as_ref().map(|c| socket_identity(c.as_raw_fd()));
        Self {
            handle,
            kind,
            peer,
            client,
            client_socket,
            server_socket,
            accepted: Vec::new(),
            received: Vec::new(),
            sent: Vec::new(),
            host_read: Vec::new(),
            guest_closed: false,
            hangup: false,
            shut_write: false,
            eof_read: false,
            client_shut: false,
            client_reset: false,
            client_eof: false,
            client_error: None,
            // The WIT: "Its interest starts as readable only."
            want_read: true,
            want_write: false,
            owed_writable: false,
            still_readable: false,
            connected: kind == Kind::Inbound,
            hangup_due: false,
        }
    }

    /// The guest still holds the handle.
    fn live(&self) -> bool {
        !self.guest_closed && !self.hangup
    }

    /// The connection failed (or will) and the guest did not close it: a `hangup`
    /// must come. A reset after both sides sent their FIN fails nothing, so it is
    /// not counted.
    fn hangup_expected(&self) -> bool {
        self.live()
            && (self.kind == Kind::Refused
                || (self.client_reset && !(self.client_shut && self.shut_write)))
    }
}

/// An armed timer: it may not fire before `earliest`, and must fire in the first
/// batch collected after `latest`.
struct TimerModel {
    earliest: Instant,
    latest: Instant,
}

/// What the next batch must contain, worked out before it is looked at.
struct Expected {
    readable: Vec<usize>,
    writable: Vec<usize>,
    timers: Vec<u64>,
}

/// A connection the listener accepted, not yet handed to `Net`.
struct Inbound {
    server: TcpStream,
    peer: SocketAddr,
    client: TcpStream,
}

// ---- the harness -----------------------------------------------------------------

struct Harness {
    poll: Poll,
    events: Events,
    net: Net,
    batch: Batch,
    listener: TcpListener,
    listen_addr: SocketAddr,
    closed_port: SocketAddr,
    max_buffer: usize,
    small_kernel_buffers: bool,
    conns: Vec<Model>,
    pending: Vec<Inbound>,
    timers: HashMap<u64, TimerModel>,
    step: usize,
}

impl Harness {
    fn new(case: &Case) -> Self {
        let poll = Poll::new().expect("create an epoll instance");
        let registry = poll.registry().try_clone().expect("clone the registry");
        let listener = listen_on_loopback(case.small_kernel_buffers);
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listen_addr = listener.local_addr().expect("listener address");
        let closed_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port"); // the listener is dropped: nobody listens there
        let limits = Limits {
            max_buffer: case.max_buffer,
            max_connections: MAX_CONNECTIONS,
            ..Limits::default()
        };
        let allow = AllowList::new(vec![AllowRule::parse("127.0.0.1:*").expect("rule")]);
        let capacity = Capacity::new(limits.max_connections);
        let mut net = Net::new(limits, allow, registry, capacity);
        // The model holds the host to delivering every accepted byte whatever the
        // peer sends when: the promise of a lingering close after every close.
        net.set_lingering(Lingering::Always);
        net.set_caller(GUEST);
        let mut harness = Self {
            poll,
            events: Events::with_capacity(256),
            net,
            batch: Batch::default(),
            listener,
            listen_addr,
            closed_port,
            max_buffer: case.max_buffer,
            small_kernel_buffers: case.small_kernel_buffers,
            conns: Vec::new(),
            pending: Vec::new(),
            timers: HashMap::new(),
            step: 0,
        };
        for _ in 0..case.clients {
            let inbound = harness.open_inbound();
            harness.insert_inbound(inbound);
        }
        harness
    }

    fn at(&self, i: usize) -> String {
        let c = &self.conns[i];
        format!(
            "op {}, conn {i} ({:?}, handle {:#x})",
            self.step, c.kind, c.handle
        )
    }

    fn apply(&mut self, op: &Op) {
        let n = self.conns.len();
        match op {
            Op::Read { conn, max } => self.host_read(conn.index(n), *max),
            Op::Write { conn, len, times } => {
                let i = conn.index(n);
                for _ in 0..*times {
                    if !self.host_write(i, *len) {
                        break;
                    }
                }
            }
            Op::SetInterest {
                conn,
                readable,
                writable,
            } => {
                let i = conn.index(n);
                self.net
                    .set_interest(self.conns[i].handle, *readable, *writable);
                let c = &mut self.conns[i];
                if c.live() {
                    c.want_read = *readable;
                    c.want_write = *writable;
                }
            }
            Op::ShutdownWrite { conn } => self.host_shutdown_write(conn.index(n)),
            Op::Close { conn } => self.host_close(conn.index(n)),
            Op::Peer { conn } => {
                let i = conn.index(n);
                let answer = self.net.peer(self.conns[i].handle);
                let c = &self.conns[i];
                let want = c.live().then(|| c.peer.to_string());
                assert_eq!(answer, want, "{}: `peer`", self.at(i));
            }
            Op::SetTimer { id, after_ms } => {
                let before = Instant::now();
                let result = self.net.set_timer(*id, *after_ms, MAX_TIMER_DELAY_MS);
                let after = Instant::now();
                assert!(
                    result.is_ok(),
                    "op {}: set-timer {id}: {result:?}",
                    self.step
                );
                let after_ms = Duration::from_millis(*after_ms);
                self.timers.insert(
                    *id,
                    TimerModel {
                        earliest: before + after_ms,
                        latest: after + after_ms,
                    },
                );
            }
            Op::CancelTimer { id } => {
                self.net.cancel_timer(*id);
                self.timers.remove(id);
            }
            Op::Unknown { handle, dead: pick } => {
                let handle = match handle {
                    Some(h) => *h,
                    None => {
                        let dead: Vec<Conn> = self
                            .conns
                            .iter()
                            .filter(|c| !c.live())
                            .map(|c| c.handle)
                            .collect();
                        if dead.is_empty() {
                            return;
                        }
                        dead[pick.index(dead.len())]
                    }
                };
                if self.conns.iter().any(|c| c.live() && c.handle == handle) {
                    return; // a made-up number that happens to be live
                }
                let what = format!("op {}: handle {handle:#x}", self.step);
                assert_unknown_everywhere(&mut self.net, handle, &what);
            }
            Op::Foreign { conn } => {
                let i = conn.index(n);
                let c = &self.conns[i];
                if !c.live() {
                    return;
                }
                let (handle, flipped) = (c.handle, (!c.want_read, !c.want_write));
                let what = format!("{}, called by another guest", self.at(i));
                self.net.set_caller(OTHER_GUEST);
                assert_unknown_everywhere(&mut self.net, handle, &what);
                // Must change nothing: the batch checks would see flipped interest.
                self.net.set_interest(handle, flipped.0, flipped.1);
                self.net.set_caller(GUEST);
            }
            Op::ClientWrite { conn, len } => self.client_write(conn.index(n), *len),
            Op::ClientRead { conn } => self.drain_client(conn.index(n)),
            Op::ClientShutdown { conn } => {
                let i = conn.index(n);
                let at = self.at(i);
                let c = &mut self.conns[i];
                let Some(client) = &c.client else { return };
                if c.client_shut {
                    return;
                }
                if let Err(e) = client.shutdown(Shutdown::Write) {
                    assert!(
                        c.guest_closed,
                        "{at}: the peer's shutdown failed on an open connection: {e}"
                    );
                    c.client_error = Some(e.kind());
                }
                c.client_shut = true;
            }
            Op::ClientReset { conn } => {
                let c = &mut self.conns[conn.index(n)];
                if let Some(client) = c.client.take() {
                    reset(client);
                    c.client_reset = true;
                }
            }
            Op::Accept => {
                if self.net.len() + self.pending.len() < MAX_CONNECTIONS {
                    let inbound = self.open_inbound();
                    self.pending.push(inbound);
                }
            }
            Op::Connect { target } => self.connect(target),
            Op::Turn => self.turn(),
        }
    }

    // ---- guest calls -------------------------------------------------------------

    fn host_read(&mut self, i: usize, max: u32) {
        let at = self.at(i);
        let result = self.net.read(self.conns[i].handle, max);
        let c = &mut self.conns[i];
        if !c.live() {
            assert!(
                matches!(result, ReadResult::Failed(IoError::UnknownConn)),
                "{at}: read on a dead handle answered {result:?}"
            );
            return;
        }
        let want = (max as usize).min(MAX_READ_CHUNK);
        match result {
            ReadResult::Data(bytes) => {
                assert!(!c.eof_read, "{at}: read answered data after eof");
                if want == 0 {
                    assert!(bytes.is_empty(), "{at}: read with max 0 returned bytes");
                } else {
                    assert!(
                        (1..=want).contains(&bytes.len()),
                        "{at}: read(max {max}) returned {} bytes",
                        bytes.len()
                    );
                    c.still_readable = bytes.len() == want;
                }
                c.host_read.extend_from_slice(&bytes);
                assert_prefix(&c.host_read, &c.sent, &format!("{at}: bytes read"));
            }
            ReadResult::WouldBlock => {
                assert!(!c.eof_read, "{at}: read answered would-block after eof");
                c.still_readable = false;
            }
            ReadResult::Eof => {
                assert!(
                    c.client_shut || c.client_reset,
                    "{at}: eof, but the peer neither shut down nor reset"
                );
                if !c.client_reset {
                    assert_eq!(
                        c.host_read.len(),
                        c.sent.len(),
                        "{at}: eof before every byte the peer sent was read"
                    );
                }
                c.eof_read = true;
                c.still_readable = false;
            }
            ReadResult::Failed(error) => {
                assert_failure_is_explained(c, error, &at, "read");
                c.hangup_due = true;
                c.still_readable = false;
            }
        }
    }

    /// One `write` of `len` bytes; whether it was taken whole.
    fn host_write(&mut self, i: usize, len: usize) -> bool {
        let at = self.at(i);
        let c = &self.conns[i];
        let data = stream_bytes(c.handle, 0, c.accepted.len(), len);
        let handle = c.handle;
        let result = self.net.write(handle, &data);
        let buffered = self.net.buffered(handle);
        let c = &mut self.conns[i];
        if !c.live() {
            assert!(
                matches!(result, WriteResult::Failed(IoError::UnknownConn)),
                "{at}: write on a dead handle answered {result:?}"
            );
            return false;
        }
        match result {
            WriteResult::Accepted(n) => {
                let n = n as usize;
                assert!(!c.shut_write, "{at}: write accepted after shutdown-write");
                if len == 0 {
                    assert_eq!(n, 0, "{at}: an empty write accepted bytes");
                } else {
                    assert!((1..=len).contains(&n), "{at}: write({len}) accepted {n}");
                }
                c.accepted.extend_from_slice(&data[..n]);
                if n < len {
                    c.owed_writable = true;
                }
                n == len
            }
            WriteResult::WouldBlock => {
                assert!(!c.shut_write, "{at}: would-block after shutdown-write");
                assert!(len > 0, "{at}: an empty write answered would-block");
                assert_eq!(
                    buffered,
                    Some(self.max_buffer),
                    "{at}: would-block while the buffer has room"
                );
                c.owed_writable = true;
                false
            }
            WriteResult::Failed(IoError::Closed) => {
                assert!(
                    c.shut_write,
                    "{at}: closed, but shutdown-write was not called"
                );
                false
            }
            WriteResult::Failed(error) => {
                assert_failure_is_explained(c, error, &at, "write");
                c.hangup_due = true;
                false
            }
        }
    }

    fn host_shutdown_write(&mut self, i: usize) {
        let at = self.at(i);
        let result = self.net.shutdown_write(self.conns[i].handle);
        let c = &mut self.conns[i];
        match (c.live(), result) {
            (false, Err(IoError::UnknownConn)) => {}
            (false, other) => panic!("{at}: shutdown-write on a dead handle: {other:?}"),
            (true, Ok(())) => c.shut_write = true,
            (true, Err(error)) => {
                assert_failure_is_explained(c, error, &at, "shutdown-write");
                c.hangup_due = true;
            }
        }
    }

    fn host_close(&mut self, i: usize) {
        let at = self.at(i);
        let result = self.net.close(self.conns[i].handle);
        let c = &mut self.conns[i];
        match (c.live(), result) {
            (true, Ok(())) => {
                c.guest_closed = true;
            }
            (false, Err(IoError::UnknownConn)) => {}
            (live, other) => panic!("{at}: close (live: {live}) answered {other:?}"),
        }
    }

    fn connect(&mut self, target: &Target) {
        let full = self.net.len() >= MAX_CONNECTIONS;
        let (addr, kind) = match target {
            Target::Denied(addr) => {
                let result = self.net.connect(addr);
                // An address that is not `ip:port` is its own error; a good one no
                // rule allows is not permitted.
                let expected = if addr.parse::<SocketAddr>().is_ok() {
                    IoError::NotPermitted
                } else {
                    IoError::InvalidAddress
                };
                assert!(
                    matches!(result, Err(e) if e == expected),
                    "op {}: connect({addr:?}) should answer {expected:?}, yet answered {result:?}",
                    self.step
                );
                return;
            }
            Target::Listener => (self.listen_addr, Kind::Outbound),
            Target::ClosedPort => (self.closed_port, Kind::Refused),
        };
        let result = self.net.connect(&addr.to_string());
        if full {
            assert!(
                matches!(result, Err(IoError::LimitExceeded)),
                "op {}: connect with {} connections held answered {result:?}",
                self.step,
                self.net.len()
            );
            return;
        }
        let handle = match (kind, result) {
            (_, Ok(handle)) => handle,
            (Kind::Refused, Err(IoError::Refused)) => return,
            (_, Err(e)) => panic!("op {}: connect to {addr} ({kind:?}): {e:?}", self.step),
        };
        assert!(
            self.conns.iter().all(|c| c.handle != handle),
            "op {}: connect reused handle {handle:#x}",
            self.step
        );
        let client = (kind == Kind::Outbound).then(|| {
            let (far, _) = self.accept_from_listener(None);
            self.prepare(&far);
            far
        });
        self.conns
            .push(Model::new(handle, kind, addr, client, None));
    }

    // ---- the peers ---------------------------------------------------------------

    fn client_write(&mut self, i: usize, len: usize) {
        let at = self.at(i);
        let c = &mut self.conns[i];
        if c.client_shut {
            return;
        }
        let Some(client) = c.client.as_mut() else {
            return;
        };
        let data = stream_bytes(c.handle, 1, c.sent.len(), len);
        match client.write(&data) {
            Ok(n) => c.sent.extend_from_slice(&data[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                assert!(
                    c.guest_closed,
                    "{at}: the peer's write failed on an open connection: {e}"
                );
                // The write took the pending ECONNRESET: reads now end with 0, not
                // with the error, so remember it here.
                c.client_error = Some(e.kind());
            }
        }
    }

    /// The peer reads everything that has arrived, and checks it as it goes.
    fn drain_client(&mut self, i: usize) {
        let at = self.at(i);
        let c = &mut self.conns[i];
        if c.client_eof || c.client_error.is_some() {
            return;
        }
        let Some(client) = c.client.as_mut() else {
            return;
        };
        let mut buf = vec![0; 64 * 1024];
        loop {
            match client.read(&mut buf) {
                Ok(0) => {
                    c.client_eof = true;
                    assert!(
                        c.shut_write || c.guest_closed,
                        "{at}: the peer saw end-of-stream, but the guest neither shut \
                         down nor closed"
                    );
                    assert_same_bytes(
                        &c.received,
                        &c.accepted,
                        &format!("{at}: bytes before the FIN"),
                    );
                    return;
                }
                Ok(n) => {
                    c.received.extend_from_slice(&buf[..n]);
                    assert_prefix(&c.received, &c.accepted, &format!("{at}: bytes received"));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.client_error = Some(e.kind());
                    return;
                }
            }
        }
    }

    // ---- connections -------------------------------------------------------------

    /// A client connected to the listener, and the accepted far side.
    fn open_inbound(&mut self) -> Inbound {
        let client = connect_to(self.listen_addr, self.small_kernel_buffers);
        let (server, peer) = self.accept_from_listener(client.local_addr().ok());
        self.prepare(&client);
        self.prepare(&server);
        Inbound {
            server,
            peer,
            client,
        }
    }

    /// `insert`, as the loop does for an accepted connection.
    fn insert_inbound(&mut self, inbound: Inbound) {
        let Inbound {
            server,
            peer,
            client,
        } = inbound;
        let server_socket = socket_identity(server.as_raw_fd());
        let stream = mio::net::TcpStream::from_std(server);
        // The loop takes a place first; the model only inserts below the limit.
        let place = self.net.capacity().take().expect("a place below the limit");
        let handle = self
            .net
            .insert(stream, peer, GUEST, Phase::Open, place)
            .expect("insert an accepted connection");
        assert!(
            self.conns.iter().all(|c| c.handle != handle),
            "op {}: insert reused handle {handle:#x}",
            self.step
        );
        self.conns.push(Model::new(
            handle,
            Kind::Inbound,
            peer,
            Some(client),
            Some(server_socket),
        ));
    }

    fn accept_from_listener(&mut self, expect: Option<SocketAddr>) -> (TcpStream, SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    assert!(
                        expect.is_none_or(|e| e == peer),
                        "accepted {peer}, expected {expect:?}"
                    );
                    return (stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "nothing to accept after 2 s");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    fn prepare(&self, stream: &TcpStream) {
        stream.set_nonblocking(true).expect("non-blocking socket");
    }

    // ---- the loop ----------------------------------------------------------------

    /// One turn, in the loop's order: the end of the previous guest call (`prune`),
    /// the wait, new connections, the edges, deadlines, and one batch.
    fn turn(&mut self) {
        self.net.prune();
        let wait = if self.net.has_ready() {
            Duration::ZERO
        } else {
            TURN_WAIT
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
            self.events.clear();
        }
        for inbound in std::mem::take(&mut self.pending) {
            if self.net.len() < MAX_CONNECTIONS {
                self.insert_inbound(inbound);
            } // else dropped, as the loop closes what it cannot take
        }
        for event in self.events.iter() {
            self.net.on_socket_event(event.token().0, event);
        }
        self.net.sweep_deadlines(Instant::now());

        let before = Instant::now();
        self.net.collect(&mut self.batch);
        let after = Instant::now();
        let expected = self.expected_reports(before);
        self.check_batch(after);
        self.assert_expected_reports_came(&expected);
        self.batch.clear();
        self.assert_client_sockets_intact();
    }

    /// What level-triggered readiness and timers promise for this batch, from the
    /// model as it stood before it (and `buffered` after this turn's flushes).
    fn expected_reports(&mut self, collected_at: Instant) -> Expected {
        let mut expected = Expected {
            readable: Vec::new(),
            writable: Vec::new(),
            timers: Vec::new(),
        };
        let half = self.max_buffer / 2;
        for (i, c) in self.conns.iter().enumerate() {
            if !c.live() || !c.connected {
                continue;
            }
            if c.still_readable && c.want_read && !c.eof_read {
                expected.readable.push(i);
            }
            let room = self.net.buffered(c.handle).is_some_and(|b| b <= half);
            if (c.want_write || c.owed_writable) && !c.shut_write && room {
                expected.writable.push(i);
            }
        }
        for (id, timer) in &self.timers {
            if timer.latest <= collected_at {
                expected.timers.push(*id);
            }
        }
        expected
    }

    /// Every event of the batch is one the contract allows now; the model follows.
    fn check_batch(&mut self, collected_at: Instant) {
        let events: Vec<(u32, Event)> = self
            .batch
            .groups()
            .flat_map(|(owner, events)| events.iter().map(move |&event| (owner, event)))
            .collect();
        let mut seen = HashSet::new();
        for (owner, event) in events {
            assert_eq!(
                owner, GUEST,
                "op {}: {event:?} for another guest",
                self.step
            );
            let key = format!("{event:?}");
            assert!(
                seen.insert(key),
                "op {}: {event:?} twice in one batch",
                self.step
            );
            match event {
                Event::Readable(handle) => {
                    let i = self.live_conn_named_by(handle, "readable");
                    let at = self.at(i);
                    let c = &mut self.conns[i];
                    assert!(c.want_read, "{at}: readable without read interest");
                    assert!(!c.eof_read, "{at}: readable after eof was read");
                    assert!(c.connected, "{at}: readable before connected");
                    c.still_readable = true;
                }
                Event::Writable(handle) => {
                    let i = self.live_conn_named_by(handle, "writable");
                    let at = self.at(i);
                    let c = &mut self.conns[i];
                    assert!(
                        c.want_write || c.owed_writable,
                        "{at}: writable without write interest or a short write"
                    );
                    assert!(!c.shut_write, "{at}: writable after shutdown-write");
                    assert!(c.connected, "{at}: writable before connected");
                    c.owed_writable = false;
                }
                Event::Connected(handle) => {
                    let i = self.live_conn_named_by(handle, "connected");
                    let at = self.at(i);
                    let c = &mut self.conns[i];
                    assert_eq!(c.kind, Kind::Outbound, "{at}: connected");
                    assert!(!c.connected, "{at}: connected twice");
                    c.connected = true;
                }
                Event::Hangup(HangupInfo { conn, error }) => {
                    let i = self.live_conn_named_by(conn, "hangup");
                    let at = self.at(i);
                    let c = &mut self.conns[i];
                    let explained = match c.kind {
                        Kind::Refused => error == IoError::Refused,
                        Kind::Inbound => error == IoError::Reset && c.client_reset,
                        Kind::Outbound => c.client_reset && error == IoError::Reset,
                    };
                    assert!(
                        explained,
                        "{at}: hangup({error:?}), peer reset: {}",
                        c.client_reset
                    );
                    c.hangup = true;
                }
                Event::Timer(id) => {
                    let timer = self.timers.remove(&id).unwrap_or_else(|| {
                        panic!("op {}: timer {id} fired, but it is not armed", self.step)
                    });
                    assert!(
                        collected_at >= timer.earliest,
                        "op {}: timer {id} fired early",
                        self.step
                    );
                }
                other => panic!("op {}: Net reported {other:?}", self.step),
            }
        }
    }

    /// The connection an event names, which must be one the guest still holds.
    fn live_conn_named_by(&self, handle: Conn, what: &str) -> usize {
        let i = self
            .conns
            .iter()
            .position(|c| c.handle == handle)
            .unwrap_or_else(|| {
                panic!(
                    "op {}: {what} for handle {handle:#x}, never given out",
                    self.step
                )
            });
        let c = &self.conns[i];
        assert!(
            c.live(),
            "{}: {what} for a dead handle (closed by the guest: {}, hung up: {})",
            self.at(i),
            c.guest_closed,
            c.hangup
        );
        i
    }

    fn assert_expected_reports_came(&mut self, expected: &Expected) {
        for &i in &expected.readable {
            let c = &self.conns[i];
            assert!(
                c.hangup || self.reported(Event::Readable(c.handle)),
                "{}: still readable with read interest, but not reported readable \
                 (level-triggered readiness lost)",
                self.at(i)
            );
        }
        for &i in &expected.writable {
            let c = &self.conns[i];
            assert!(
                c.hangup || self.reported(Event::Writable(c.handle)),
                "{}: write interest (or a short write) and room in the buffer, but not \
                 reported writable",
                self.at(i)
            );
        }
        for id in &expected.timers {
            assert!(
                !self.timers.contains_key(id),
                "op {}: timer {id} was due before the batch, but did not fire",
                self.step
            );
        }
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            let due = std::mem::take(&mut c.hangup_due);
            assert!(
                !(due && c.live()),
                "{}: a call failed, but no hangup came in the next batch",
                self.at(i)
            );
        }
    }

    fn reported(&self, event: Event) -> bool {
        let wanted = format!("{event:?}");
        self.batch.events().any(|e| format!("{e:?}") == wanted)
    }

    // ---- invariants --------------------------------------------------------------

    /// Checked after every op.
    fn assert_invariants(&mut self) {
        self.assert_buffers_within_bound();
        let live = self.conns.iter().filter(|c| c.live()).count();
        assert_eq!(
            self.net.owned_by(GUEST),
            live,
            "op {}: Net counts a different number of connections held by the guest",
            self.step
        );
        assert_eq!(self.net.owned_by(OTHER_GUEST), 0, "op {}", self.step);
        assert!(
            self.net.len() <= MAX_CONNECTIONS,
            "op {}: {} connections held",
            self.step,
            self.net.len()
        );
    }

    /// `buffered` is within `max_buffer`, and never more than was accepted and not
    /// yet received (a byte buffered twice, or kept after it was sent, would show).
    fn assert_buffers_within_bound(&mut self) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let buffered = self.net.buffered(c.handle);
            if !c.live() {
                assert_eq!(buffered, None, "{}: buffered on a dead handle", self.at(i));
                continue;
            }
            let buffered = buffered
                .unwrap_or_else(|| panic!("{}: buffered is None on a live handle", self.at(i)));
            assert!(
                buffered <= self.max_buffer,
                "{}: {buffered} bytes buffered, bound {}",
                self.at(i),
                self.max_buffer
            );
            assert!(
                c.received.len() + buffered <= c.accepted.len(),
                "{}: {buffered} buffered + {} received > {} accepted",
                self.at(i),
                c.received.len(),
                c.accepted.len()
            );
        }
    }

    /// `Net` never closed a socket that is not its own (a double close would hit
    /// whatever reused the number).
    fn assert_client_sockets_intact(&self) {
        for (i, c) in self.conns.iter().enumerate() {
            if let (Some(_), Some((fd, inode))) = (&c.client, c.client_socket) {
                assert_eq!(
                    inode_of(fd),
                    Some(inode),
                    "{}: the peer's socket (fd {fd}) was closed or replaced under it",
                    self.at(i)
                );
            }
        }
    }

    /// Every socket handed to `Net` is closed (its fd is gone, or now names another
    /// socket).
    fn assert_server_sockets_closed(&self) {
        for (i, c) in self.conns.iter().enumerate() {
            if let Some((fd, inode)) = c.server_socket {
                assert_ne!(
                    inode_of(fd),
                    Some(inode),
                    "{}: Net still has the socket open (fd {fd})",
                    self.at(i)
                );
            }
        }
    }

    // ---- the end of a case -------------------------------------------------------

    fn finish(&mut self) {
        // Connections accepted by the last ops are taken in by a turn.
        self.turn();
        // Hangups that peer resets (and refused connects) must bring, with no
        // further call from the guest: the kernel's edge alone must do.
        for _ in 0..SETTLE_TURNS {
            if !self.conns.iter().any(Model::hangup_expected) {
                break;
            }
            self.turn();
        }
        for i in 0..self.conns.len() {
            assert!(
                !self.conns[i].hangup_expected(),
                "{}: the connection failed, but no hangup came in {SETTLE_TURNS} turns",
                self.at(i)
            );
        }

        // Close every connection, then let the peers drain.
        for i in 0..self.conns.len() {
            if self.conns[i].live() {
                self.host_close(i);
            }
        }
        self.assert_invariants();
        let start = Instant::now();
        for _ in 0..FINAL_TURNS {
            for i in 0..self.conns.len() {
                self.drain_client(i);
                self.end_client_once_ended(i);
            }
            if self.everything_delivered() || start.elapsed() > FINAL_TIME {
                break;
            }
            self.turn();
        }

        let armed: Vec<&u64> = self.timers.keys().collect();
        assert!(armed.is_empty(), "timers armed but never fired: {armed:?}");
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.client.is_none() {
                continue; // reset by the peer, or a refused connect
            }
            let at = self.at(i);
            assert!(
                c.client_eof || c.client_error.is_some(),
                "{at}: the peer never saw the connection end ({} of {} bytes received, \
                 Net holds {} connections)",
                c.received.len(),
                c.accepted.len(),
                self.net.len()
            );
            assert_eq!(
                c.client_error,
                None,
                "{at}: the peer's connection was reset by the host; it received {} of \
                 {} accepted bytes; the guest read {} of the {} bytes the peer sent",
                c.received.len(),
                c.accepted.len(),
                c.host_read.len(),
                c.sent.len()
            );
            assert_same_bytes(&c.received, &c.accepted, &format!("{at}: delivered"));
        }
        assert_eq!(
            self.net.len(),
            0,
            "connections still held after every one was closed and every peer drained"
        );
        assert_eq!(self.net.owned_by(GUEST), 0);
        assert_eq!(
            self.net.next_wake(Instant::now()),
            None,
            "no timer and no connection left, yet Net asks to be woken"
        );
        self.assert_server_sockets_closed();
    }

    /// A peer that has seen the end of the stream ends its side too, as a real
    /// client does: `Net` lingers on a closed connection until then.
    fn end_client_once_ended(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.client_eof
            && !c.client_shut
            && let Some(client) = &c.client
        {
            let _ = client.shutdown(Shutdown::Write);
            c.client_shut = true;
        }
    }

    fn everything_delivered(&self) -> bool {
        self.net.is_empty()
            && self.timers.is_empty()
            && self
                .conns
                .iter()
                .all(|c| c.client.is_none() || c.client_eof || c.client_error.is_some())
    }
}

// ---- assertions ----------------------------------------------------------------------

/// A call failed: only a peer reset (or, for a connect to a closed port, `refused`)
/// explains it.
fn assert_failure_is_explained(c: &Model, error: IoError, at: &str, call: &str) {
    let explained = match (c.kind, error) {
        (Kind::Refused, IoError::Refused) => true,
        (Kind::Inbound | Kind::Outbound, IoError::Reset) => c.client_reset,
        _ => false,
    };
    assert!(
        explained,
        "{at}: {call} failed with {error:?} on a live connection (peer reset: {})",
        c.client_reset
    );
}

/// Every call on `handle` answers as for a handle that does not exist.
fn assert_unknown_everywhere(net: &mut Net, handle: Conn, what: &str) {
    let read = net.read(handle, 100);
    assert!(
        matches!(read, ReadResult::Failed(IoError::UnknownConn)),
        "{what}: read answered {read:?}"
    );
    for data in [&b""[..], &b"x"[..]] {
        let write = net.write(handle, data);
        assert!(
            matches!(write, WriteResult::Failed(IoError::UnknownConn)),
            "{what}: write({} bytes) answered {write:?}",
            data.len()
        );
    }
    assert_eq!(
        net.shutdown_write(handle),
        Err(IoError::UnknownConn),
        "{what}: shutdown-write"
    );
    assert_eq!(
        net.close(handle),
        Err(IoError::UnknownConn),
        "{what}: close"
    );
    assert_eq!(net.peer(handle), None, "{what}: peer");
    assert_eq!(net.buffered(handle), None, "{what}: buffered");
}

/// `got` is `want`, or the start of it.
fn assert_prefix(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got.len() <= want.len(),
        "{what}: {} bytes, but only {} were sent",
        got.len(),
        want.len()
    );
    if let Some(at) = first_difference(got, want) {
        panic!(
            "{what}: byte {at} differs ({} bytes so far, {} sent): lost, reordered or \
             duplicated bytes",
            got.len(),
            want.len()
        );
    }
}

/// `got` is exactly `want`.
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_prefix(got, want, what);
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} of {} bytes arrived",
        got.len(),
        want.len()
    );
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

// ---- helpers -------------------------------------------------------------------------

/// `len` bytes of a pseudo-random stream, from `offset` on. The stream depends on
/// the connection and the direction, and each byte on its position, so that a lost,
/// repeated or reordered chunk cannot go unseen (even once shrinking has made every
/// op alike).
fn stream_bytes(handle: Conn, direction: u64, offset: usize, len: usize) -> Vec<u8> {
    let salt =
        handle.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ direction.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (offset..offset + len)
        .map(|p| (splitmix64(salt ^ p as u64) >> 56) as u8)
        .collect()
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn set_int_option(fd: RawFd, option: libc::c_int, value: libc::c_int) {
    // SAFETY: `value` outlives the call and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// The inode of the file `fd` names, or `None` when `fd` is not open.
fn inode_of(fd: RawFd) -> Option<u64> {
    // SAFETY: all-zero bytes are a valid `stat` (plain integers).
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fstat` only writes into `stat`; a closed fd is answered EBADF.
    let rc = unsafe { libc::fstat(fd, &mut stat) };
    (rc == 0).then_some(stat.st_ino)
}

fn socket_identity(fd: RawFd) -> (RawFd, u64) {
    (fd, inode_of(fd).expect("fstat a fresh socket"))
}

// ---- regressions: the bugs this test found, reproduced deterministically ------------

/// An outbound connection that completes and is reset by the other end
/// before the host has seen it complete is reported `hangup(unreachable)`, not
/// `hangup(reset)`. The WIT keeps `unreachable` for "no route, or did not complete in
/// time"; this one completed (the listener accepted it). `connect_outcome` in
/// net.rs used to map any pending socket error (here ECONNRESET) to `unreachable`.
#[test]

fn connect_then_reset_before_the_host_notices_is_reported_as_reset() {
    let (mut poll, mut net, listener) = bare_net(Limits::default());
    let addr = listener.local_addr().unwrap();
    let handle = net.connect(&addr.to_string()).expect("connect is allowed");
    listener.set_nonblocking(false).unwrap();
    let (far, _) = listener.accept().expect("the handshake completed");
    reset(far);
    let events = turns_until(&mut poll, &mut net, Duration::from_secs(2), |e| {
        matches!(e, Event::Hangup(_))
    });
    let error = events.iter().find_map(|e| match e {
        Event::Hangup(HangupInfo { conn, error }) if *conn == handle => Some(*error),
        _ => None,
    });
    assert_eq!(
        error,
        Some(IoError::Reset),
        "established, then reset by the peer (events: {events:?})"
    );
}

/// `close` could lose bytes `write` accepted: `finish_closing` closed the socket as
/// soon as `Net`'s own buffer was in the kernel, although the kernel may
/// still be sending those bytes (the peer's receive window is full). Any input that
/// reaches the closed socket after that makes the kernel answer with a reset and
/// discard what it had not sent: the peer gets ECONNRESET instead of the rest of the
/// answer and a FIN. The WIT promises accepted bytes "are sent in order, even if the
/// guest closes the connection right after".
///
/// Here the late input is a byte the peer sends after the close (a pipelined request,
/// say). The property test also met it with input sent *before* the close: a peer's
/// byte held back by Nagle until the host's final flush carried its ACK arrived just
/// after the socket was closed (shrunk: peer writes 1 byte, guest writes 3648, turn,
/// peer writes 1, guest writes 4097, peer writes 1; close; the peer got 7744 of 7745).
/// The fix is a lingering close: after the FIN, `Net` reads and discards until the
/// peer's own FIN (or the linger deadline), and only then closes the socket.
///
/// `--lingering-close auto` must pass it too: the byte arrives while the answer is
/// still going out, so it is pending when the close is decided.
#[test]
fn close_delivers_every_accepted_byte_even_if_the_peer_sends_more() {
    for lingering in [Lingering::Always, Lingering::Auto] {
        close_delivers_every_accepted_byte_when(lingering);
    }
}

fn close_delivers_every_accepted_byte_when(lingering: Lingering) {
    let limits = Limits {
        max_buffer: 64 * 1024,
        ..Limits::default()
    };
    let (mut poll, mut net, listener) = bare_net(limits);
    net.set_lingering(lingering);
    // The peer's receive window is small, so that the answer queues in the host.
    let mut client = connect_to(listener.local_addr().unwrap(), true);
    listener.set_nonblocking(false).unwrap();
    let (server, peer) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    client.set_nonblocking(true).unwrap();
    let handle = net
        .insert(
            mio::net::TcpStream::from_std(server),
            peer,
            GUEST,
            Phase::Open,
            net.capacity().take().unwrap(),
        )
        .unwrap();

    // The guest answers and closes at once.
    let answer = stream_bytes(handle, 0, 0, 64 * 1024);
    let accepted = match net.write(handle, &answer) {
        WriteResult::Accepted(n) => n as usize,
        other => panic!("write: {other:?}"),
    };
    net.close(handle).unwrap();

    // The peer reads slowly while the loop turns, and sends a byte (a pipelined
    // request, say) once it has some of the answer: input after the close.
    let mut received = Vec::new();
    let mut buf = vec![0; 4096];
    let mut sent_more = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    let end = loop {
        assert!(Instant::now() < deadline, "the peer saw no end in 3 s");
        turns_until(&mut poll, &mut net, Duration::ZERO, |_| false);
        match client.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => break Err(e),
        }
        if !sent_more && !received.is_empty() {
            client.write_all(b"x").expect("peer write");
            sent_more = true;
        }
    };
    assert!(
        end.is_ok() && received.len() == accepted,
        "the peer got {} of the {accepted} bytes write accepted, then {end:?}",
        received.len()
    );
    // Once the peer ends its side too, Net lets the socket go.
    client.shutdown(Shutdown::Write).unwrap();
    turn_until_released(&mut poll, &mut net);
    assert_same_bytes(&received, &answer[..accepted], "the answer");
}

/// An accepted connection in `net` (as the loop inserts one) and its peer.
fn accepted(net: &mut Net, listener: &TcpListener) -> (Conn, TcpStream) {
    let client = connect_to(listener.local_addr().unwrap(), false);
    listener.set_nonblocking(false).unwrap();
    let (server, peer) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let place = net.capacity().take().unwrap();
    let handle = net
        .insert(
            mio::net::TcpStream::from_std(server),
            peer,
            GUEST,
            Phase::Open,
            place,
        )
        .unwrap();
    (handle, client)
}

/// Reads until end-of-stream, failing on a reset or after 3 s.
fn read_answer(client: &mut TcpStream) -> Vec<u8> {
    client.set_nonblocking(false).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .expect("the whole answer, then end-of-stream, not a reset");
    answer
}

/// `--lingering-close auto`: with nothing pending, a closed connection leaves the
/// table at once (no FIN-and-wait, no extra turn), and the peer still gets every
/// byte, then end-of-stream.
#[test]
fn auto_lingering_closes_at_once_when_nothing_is_pending() {
    let (mut poll, mut net, listener) = bare_net(Limits::default());
    net.set_lingering(Lingering::Auto);
    let (handle, mut client) = accepted(&mut net, &listener);
    turns_until(&mut poll, &mut net, Duration::from_millis(20), |_| false);
    assert!(matches!(
        net.write(handle, b"bye\n"),
        WriteResult::Accepted(4)
    ));
    net.close(handle).unwrap();
    assert!(net.is_empty(), "closed at once");
    assert_eq!(read_answer(&mut client), b"bye\n");
}

/// `--lingering-close auto`: input the guest left unread is pending at the close,
/// so the host lingers; bytes the peer sends afterwards do not reset the answer.
#[test]
fn auto_lingering_lingers_when_input_is_pending() {
    let (mut poll, mut net, listener) = bare_net(Limits::default());
    net.set_lingering(Lingering::Auto);
    let (handle, mut client) = accepted(&mut net, &listener);
    client.write_all(b"unread request").unwrap();
    turns_until(&mut poll, &mut net, Duration::from_millis(50), |e| {
        matches!(e, Event::Readable(_))
    });
    assert!(matches!(
        net.write(handle, b"answer\n"),
        WriteResult::Accepted(7)
    ));
    net.close(handle).unwrap();
    assert!(!net.is_empty(), "lingering");
    client.write_all(b"more, late").unwrap();
    turns_until(&mut poll, &mut net, Duration::from_millis(50), |_| false);
    let mut answer = vec![0; 7];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(answer, b"answer\n");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_answer(&mut client), b"", "then end-of-stream");
    turn_until_released(&mut poll, &mut net);
}

/// A `Net` allowed to connect to 127.0.0.1, with its poll and a listener, lingering
/// after every close (`set_lingering` to change it).
fn bare_net(limits: Limits) -> (Poll, Net, TcpListener) {
    let poll = Poll::new().unwrap();
    let allow = AllowList::new(vec![AllowRule::parse("127.0.0.1:*").unwrap()]);
    let capacity = Capacity::new(limits.max_connections);
    let mut net = Net::new(
        limits,
        allow,
        poll.registry().try_clone().unwrap(),
        capacity,
    );
    net.set_lingering(Lingering::Always);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    (poll, net, listener)
}

/// Runs turns (prune, poll, edges, collect) until an event matches `stop` or `limit`
/// has passed (at least one turn), and returns every event seen.
/// Turns until `net` lets its last socket go (the peer has ended its side), for 3 s
/// at most.
fn turn_until_released(poll: &mut Poll, net: &mut Net) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !net.is_empty() {
        assert!(
            Instant::now() < deadline,
            "Net kept the connection after the peer's end"
        );
        turns_until(poll, net, Duration::ZERO, |_| false);
    }
}

fn turns_until(
    poll: &mut Poll,
    net: &mut Net,
    limit: Duration,
    mut stop: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut events = Events::with_capacity(64);
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    loop {
        net.prune();
        let _ = poll.poll(&mut events, Some(TURN_WAIT));
        for event in events.iter() {
            net.on_socket_event(event.token().0, event);
        }
        let mut batch = Batch::default();
        net.collect(&mut batch);
        let done = batch.events().any(&mut stop);
        seen.extend(batch.events().copied());
        if done || Instant::now() >= deadline {
            return seen;
        }
    }
}

/// A listener on 127.0.0.1 (any port); with `small_buffers`, its connections get
/// small kernel buffers from the start.
fn listen_on_loopback(small_buffers: bool) -> TcpListener {
    if !small_buffers {
        return TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    }
    let socket = small_buffer_socket();
    let addr = sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    // SAFETY: `addr` is a valid `sockaddr_in` for the length given.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
    // SAFETY: a bound socket.
    let rc = unsafe { libc::listen(socket.as_raw_fd(), 128) };
    assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
    TcpListener::from(socket)
}

/// A blocking connection to `addr`; with `small_buffers`, its buffers are set small
/// before the handshake.
fn connect_to(addr: SocketAddr, small_buffers: bool) -> TcpStream {
    if !small_buffers {
        return TcpStream::connect(addr).expect("connect");
    }
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}")
    };
    let socket = small_buffer_socket();
    let addr = sockaddr_in(v4);
    // SAFETY: `addr` is a valid `sockaddr_in` for the length given.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", io::Error::last_os_error());
    TcpStream::from(socket)
}

/// A TCP socket with `SO_SNDBUF` and `SO_RCVBUF` set small before it connects or
/// listens. Set later, on a connection, they would shrink a window already
/// advertised: the kernel then drops segments the peer sent in good faith, and with
/// them the ACKs they carry, and both sides can stall in retransmission back-off for
/// many seconds (seen on Linux 6.18), which is no fault of `Net`'s.
fn small_buffer_socket() -> OwnedFd {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: a fresh fd, owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_option(socket.as_raw_fd(), libc::SO_SNDBUF, SMALL_KERNEL_BUFFER);
    set_int_option(socket.as_raw_fd(), libc::SO_RCVBUF, SMALL_KERNEL_BUFFER);
    socket
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}
