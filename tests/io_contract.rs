//! The io contract, written once as data in `wit/io-cases.json`, run against the
//! host's two implementations of it: `Net` (the real one, over real sockets on
//! 127.0.0.1, turned the way the event loop turns it) and the canary's `ShadowIo`
//! (what a shadow instance sees). The SDKs' fake hosts run the same table in their
//! own unit tests (guest/sdk, guest/python/tests, guest/js/test).
//!
//! A last test runs the table against `Net` with one answer broken on purpose and
//! requires the runner to name exactly the cases that break: a runner that cannot
//! fail proves nothing.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use serde_json::{Value, json};

use sandsock::runtime::contracts::{self, Contract};
use sandsock::runtime::imports::GuestState;
use sandsock::runtime::shadow::ShadowIo;
use sandsock::shared::limits::{Limits, MAX_TIMER_DELAY_MS};
use sandsock::shared::wit::sandsock::net::io as today;
use sandsock::shared::wit::{Conn, IoError, WriteResult, kind};
use sandsock::sockets::conn_table::slot_of;
use sandsock::sockets::{AllowList, AllowRule, Batch, Capacity, Net, Owner, Phase};
use sandsock::sockets::{Event, Read as Ahead, ReadResult};

/// The table, as the other runners read it too.
const TABLE: &str = include_str!("../wit/io-cases.json");

/// The guest instance whose calls the cases make, and another one.
const GUEST: Owner = 1;
const OTHER: Owner = 2;
/// A handle no one was ever given.
const NEVER: Conn = 1 << 50;
/// How long a step may wait for the kernel to show what a peer did.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a turn expected to report nothing watches for late events.
const QUIET: Duration = Duration::from_millis(50);
/// `Net`'s write bound in a case that gives a connection `room`: the room is what
/// is left of it after the host buffered the rest.
const ROOM_BOUND: usize = 4096;

// ---- the table -----------------------------------------------------------------------

/// A guest call's answer, in the table's words.
#[derive(Debug)]
enum Answer {
    Data(Vec<u8>),
    WouldBlock,
    Eof,
    Failed(IoError),
    Accepted(u32),
    /// A call that answers nothing, or an `option` that is none.
    Nothing,
    Some(String),
    Ok,
    Err(IoError),
}

/// The table's name of an io-error.
fn error_name(error: IoError) -> &'static str {
    match error {
        IoError::Closed => "closed",
        IoError::Reset => "reset",
        IoError::UnknownConn => "unknown-conn",
        IoError::NotPermitted => "not-permitted",
        IoError::LimitExceeded => "limit-exceeded",
        IoError::Refused => "refused",
        IoError::Unreachable => "unreachable",
        IoError::InvalidAddress => "invalid-address",
    }
}

/// Whether `got` is what `expect` says.
fn matches(expect: &Value, got: &Answer) -> bool {
    let field = |name: &str| expect.get(name);
    match got {
        Answer::Nothing => expect.is_null(),
        Answer::WouldBlock => expect == "would-block",
        Answer::Eof => expect == "eof",
        Answer::Ok => expect == "ok",
        Answer::Some(text) => expect == "ip:port" && text.parse::<SocketAddr>().is_ok(),
        Answer::Data(bytes) => match (field("data"), field("data_len")) {
            (Some(text), _) => text.as_str().is_some_and(|t| t.as_bytes() == bytes),
            (_, Some(len)) => len.as_u64() == Some(bytes.len() as u64),
            _ => false,
        },
        Answer::Accepted(n) => field("accepted").and_then(Value::as_u64) == Some(u64::from(*n)),
        Answer::Failed(e) => field("failed").and_then(Value::as_str) == Some(error_name(*e)),
        Answer::Err(e) => field("err").and_then(Value::as_str) == Some(error_name(*e)),
    }
}

/// What an implementation is asked to do: set a case up, act as the peer, answer
/// the guest's calls, turn its loop.
trait Host {
    /// The peer of `conn` acts (`send`, `shutdown`, `reset`, `drain`), or what it
    /// received is checked (`received`, `eof`): an error says what differs.
    fn peer(&mut self, conn: &str, step: &Value) -> Result<(), String>;
    /// One guest call, as the step gives it.
    fn call(&mut self, step: &Value) -> Answer;
    /// One turn of the loop after `wait`: its events in the table's notation. A
    /// turn expected to report something may look again until it has (the kernel
    /// decides when an edge arrives), never past a few seconds.
    fn turn(&mut self, wait: Duration, expected: &[Value]) -> Vec<Value>;
}

/// The cases `name` takes part in, per the table's `capabilities` and `except`.
fn cases_for<'t>(table: &'t Value, name: &str) -> (Vec<&'t Value>, usize) {
    let can = &table["capabilities"][name];
    assert!(
        can.is_object(),
        "the table has no capabilities for `{name}`"
    );
    let mut skipped = 0;
    let cases = table["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|case| {
            let steps = case["steps"].as_array().expect("steps");
            let needs_events = steps.iter().any(|s| s.get("turn").is_some());
            let needs_room = case["conns"]
                .as_object()
                .is_some_and(|c| c.values().any(|c| c.get("room").is_some()));
            let needs_connect = steps
                .iter()
                .any(|s| s["call"] == "connect" && s["expect"] == "ok");
            let runs = case["except"].get(name).is_none()
                && (!needs_events || can["events"] == true)
                && (!needs_room || can["room"] == true)
                && (!needs_connect || can["connect"] == true);
            skipped += usize::from(!runs);
            runs
        })
        .collect();
    (cases, skipped)
}

/// Runs one case on `host`: every difference, as a line naming the step.
fn run_case(case: &Value, host: &mut dyn Host) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
        if let Some(conn) = step.get("peer").and_then(Value::as_str) {
            if let Err(why) = host.peer(conn, step) {
                failures.push(format!("step {i} {step}: {why}"));
            }
        } else if step.get("call").is_some() {
            let got = host.call(step);
            if !matches(&step["expect"], &got) {
                failures.push(format!(
                    "step {i} {}: expected {}, got {got:?}",
                    step["call"], step["expect"]
                ));
            }
        } else if step.get("turn").is_some() {
            let expected = step["events"].as_array().expect("events");
            let wait = Duration::from_millis(step["wait_ms"].as_u64().unwrap_or(0));
            let got = host.turn(wait, expected);
            let want: BTreeSet<String> = expected.iter().map(Value::to_string).collect();
            let have: BTreeSet<String> = got.iter().map(Value::to_string).collect();
            if want != have {
                failures.push(format!("step {i} turn: expected {want:?}, got {have:?}"));
            }
        } else {
            panic!(
                "step {i} of `{}` is neither peer, call nor turn",
                case["name"]
            );
        }
    }
    failures
}

/// Runs every case `name` takes part in, each on a fresh host from `make`; answers
/// how many ran and the names of those that failed, and prints every failure.
fn run_table(name: &str, make: &dyn Fn(&Value) -> Box<dyn Host>) -> (usize, Vec<String>) {
    let table: Value = serde_json::from_str(TABLE).expect("wit/io-cases.json is JSON");
    let (cases, skipped) = cases_for(&table, name);
    let mut failed = Vec::new();
    for case in &cases {
        let failures = run_case(case, &mut *make(case));
        if !failures.is_empty() {
            let case_name = case["name"].as_str().expect("a name").to_string();
            eprintln!("{name}: `{case_name}`:\n  {}", failures.join("\n  "));
            failed.push(case_name);
        }
    }
    eprintln!("{name}: {} case(s) run, {skipped} skipped", cases.len());
    (cases.len(), failed)
}

/// The handle names every case may use beside its own.
fn is_reserved(name: &str) -> bool {
    name == "never" || name == "other"
}

fn bytes_of(step: &Value, text: &str, len: &str) -> Vec<u8> {
    match (step.get(text), step.get(len)) {
        (Some(t), _) => t.as_str().expect("text").as_bytes().to_vec(),
        (_, Some(n)) => vec![b'x'; n.as_u64().expect("a length") as usize],
        _ => panic!("step {step} has neither `{text}` nor `{len}`"),
    }
}

fn conn_arg(step: &Value) -> &str {
    step["conn"].as_str().expect("conn")
}

fn u64_arg(step: &Value, name: &str) -> u64 {
    step[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {step}"))
}

fn bool_arg(step: &Value, name: &str) -> bool {
    step[name]
        .as_bool()
        .unwrap_or_else(|| panic!("{name} in {step}"))
}

fn read_answer(result: ReadResult) -> Answer {
    match result {
        ReadResult::Data(bytes) => Answer::Data(bytes),
        ReadResult::WouldBlock => Answer::WouldBlock,
        ReadResult::Eof => Answer::Eof,
        ReadResult::Failed(e) => Answer::Failed(e),
    }
}

fn write_answer(result: WriteResult) -> Answer {
    match result {
        WriteResult::Accepted(n) => Answer::Accepted(n),
        WriteResult::WouldBlock => Answer::WouldBlock,
        WriteResult::Failed(e) => Answer::Failed(e),
    }
}

fn unit_answer(result: Result<(), IoError>) -> Answer {
    result.map_or_else(Answer::Err, |()| Answer::Ok)
}

fn option_answer(text: Option<String>) -> Answer {
    text.map_or(Answer::Nothing, Answer::Some)
}

/// The WIT's `io` calls, as both implementations here answer them; `Net`'s own
/// results for `close` and `shutdown-write` only say whether the handle was known,
/// which the guest never sees.
trait Io {
    fn read(&mut self, c: Conn, max: u32) -> ReadResult;
    fn write(&mut self, c: Conn, data: &[u8]) -> WriteResult;
    fn set_interest(&mut self, c: Conn, readable: bool, writable: bool);
    fn shutdown_write(&mut self, c: Conn);
    fn close(&mut self, c: Conn);
    fn peer(&mut self, c: Conn) -> Option<String>;
    fn tls_version(&mut self, c: Conn) -> Option<String>;
    fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), IoError>;
    fn cancel_timer(&mut self, id: u64);
    fn connect(&mut self, addr: &str) -> Result<Conn, IoError>;
}

impl Io for Net {
    fn read(&mut self, c: Conn, max: u32) -> ReadResult {
        Net::read(self, c, max)
    }
    fn write(&mut self, c: Conn, data: &[u8]) -> WriteResult {
        Net::write(self, c, data)
    }
    fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
        Net::set_interest(self, c, readable, writable);
    }
    fn shutdown_write(&mut self, c: Conn) {
        let _ = Net::shutdown_write(self, c);
    }
    fn close(&mut self, c: Conn) {
        let _ = Net::close_as_guest(self, c);
    }
    fn peer(&mut self, c: Conn) -> Option<String> {
        Net::peer(self, c)
    }
    fn tls_version(&mut self, c: Conn) -> Option<String> {
        Net::tls(self, c).map(|info| info.version)
    }
    fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), IoError> {
        Net::set_timer(self, id, after_ms, MAX_TIMER_DELAY_MS)
    }
    fn cancel_timer(&mut self, id: u64) {
        Net::cancel_timer(self, id);
    }
    fn connect(&mut self, addr: &str) -> Result<Conn, IoError> {
        Net::connect(self, addr)
    }
}

impl Io for ShadowIo {
    fn read(&mut self, c: Conn, max: u32) -> ReadResult {
        ShadowIo::read(self, c, max)
    }
    fn write(&mut self, c: Conn, data: &[u8]) -> WriteResult {
        ShadowIo::write(self, c, data)
    }
    fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
        ShadowIo::set_interest(self, c, readable, writable);
    }
    fn shutdown_write(&mut self, c: Conn) {
        let _ = ShadowIo::shutdown_write(self, c);
    }
    fn close(&mut self, c: Conn) {
        let _ = ShadowIo::close(self, c);
    }
    fn peer(&mut self, c: Conn) -> Option<String> {
        ShadowIo::peer(self, c)
    }
    fn tls_version(&mut self, c: Conn) -> Option<String> {
        ShadowIo::tls(self, c).map(|info| info.version)
    }
    fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), IoError> {
        ShadowIo::set_timer(self, id, after_ms, MAX_TIMER_DELAY_MS)
    }
    fn cancel_timer(&mut self, id: u64) {
        ShadowIo::cancel_timer(self, id);
    }
    fn connect(&mut self, _addr: &str) -> Result<Conn, IoError> {
        ShadowIo::connect(self)
    }
}

/// Today's io-error, from the name of an older contract's.
fn today_error(name: &str) -> IoError {
    [
        IoError::Closed,
        IoError::Reset,
        IoError::UnknownConn,
        IoError::NotPermitted,
        IoError::LimitExceeded,
        IoError::Refused,
        IoError::Unreachable,
        IoError::InvalidAddress,
    ]
    .into_iter()
    .find(|e| error_name(*e) == name)
    .unwrap_or_else(|| panic!("an io-error today's contract does not have: {name}"))
}

/// `Net` as a guest built for an older contract reaches it: through that version's
/// adapter (its own bindings' `io`), answers turned back into today's words for
/// the table.
macro_rules! adapted {
    ($name:ident, $version:ident, $($tls:tt)*) => {
        struct $name<'a>(&'a mut GuestState);

        impl Io for $name<'_> {
            fn read(&mut self, c: Conn, max: u32) -> ReadResult {
                use contracts::$version::{io::Host, types::ReadResult as Old};
                match Host::read(self.0, c, max) {
                    Old::Data(bytes) => ReadResult::Data(bytes),
                    Old::WouldBlock => ReadResult::WouldBlock,
                    Old::Eof => ReadResult::Eof,
                    Old::Failed(e) => ReadResult::Failed(today_error(e.name())),
                }
            }
            fn write(&mut self, c: Conn, data: &[u8]) -> WriteResult {
                use contracts::$version::{io::Host as _, types::WriteResult as Old};
                match self.0.write(c, data.to_vec()) {
                    Old::Accepted(n) => WriteResult::Accepted(n),
                    Old::WouldBlock => WriteResult::WouldBlock,
                    Old::Failed(e) => WriteResult::Failed(today_error(e.name())),
                }
            }
            fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
                use contracts::$version::io::Host as _;
                self.0.set_interest(c, readable, writable);
            }
            fn shutdown_write(&mut self, c: Conn) {
                use contracts::$version::io::Host as _;
                let _ = self.0.shutdown_write(c);
            }
            fn close(&mut self, c: Conn) {
                use contracts::$version::io::Host as _;
                let _ = self.0.close(c);
            }
            fn peer(&mut self, c: Conn) -> Option<String> {
                use contracts::$version::io::Host as _;
                self.0.peer(c)
            }
            $($tls)*
            fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), IoError> {
                use contracts::$version::io::Host as _;
                let after_ms = after_ms.try_into().unwrap_or_else(|_| u32::MAX.into());
                self.0.set_timer(id, after_ms).map_err(|e| today_error(e.name()))
            }
            fn cancel_timer(&mut self, id: u64) {
                use contracts::$version::io::Host as _;
                self.0.cancel_timer(id);
            }
            fn connect(&mut self, addr: &str) -> Result<Conn, IoError> {
                use contracts::$version::io::Host as _;
                self.0.connect(addr.to_owned()).map_err(|e| today_error(e.name()))
            }
        }
    };
}

// 0.1 and 0.2 have no `tls` (the table's `tls` case excepts them).
adapted!(
    V01,
    v0_1,
    fn tls_version(&mut self, _c: Conn) -> Option<String> {
        None
    }
);
adapted!(
    V02,
    v0_2,
    fn tls_version(&mut self, _c: Conn) -> Option<String> {
        None
    }
);
adapted!(
    V03,
    v0_3,
    fn tls_version(&mut self, c: Conn) -> Option<String> {
        use contracts::v0_3::io::Host as _;
        self.0.tls(c).map(|info| info.version)
    }
);

adapted!(
    V04,
    v0_4,
    fn tls_version(&mut self, c: Conn) -> Option<String> {
        use contracts::v0_4::io::Host as _;
        self.0.tls(c).map(|info| info.version)
    }
);

/// `Net` as a guest built for 1.x reaches it: its `io`, and no `read` but what the
/// host reads for it before a call. A `read` step is the event the next call would
/// carry for a readable connection: `data` (its bytes), `eof`, or none (which the
/// table calls would-block, or the failure that left no event: a `hangup` follows),
/// up to the case's `max` (the host reads less than a chunk when many connections
/// share a call).
struct V1x<'a>(&'a mut GuestState);

impl Io for V1x<'_> {
    fn read(&mut self, c: Conn, max: u32) -> ReadResult {
        let mut lowered = contracts::v1_0::Lowered::default();
        let read = lowered.read_ahead(self.0, c, max as usize, false);
        match (read, lowered.events.as_slice()) {
            (Ahead::WouldBlock, []) => ReadResult::WouldBlock,
            (Ahead::Failed(error), []) => ReadResult::Failed(error),
            (Ahead::Data(n), [event]) if event.kind == kind::DATA && event.conn == c => {
                let (start, len) = (event.start as usize, event.len as usize);
                assert_eq!(len, n, "the data event's length is what was read");
                ReadResult::Data(lowered.input()[start..start + len].to_vec())
            }
            (Ahead::Eof, [event]) if event.kind == kind::EOF && event.conn == c => ReadResult::Eof,
            other => panic!("a read of one connection lowered into {other:?}"),
        }
    }
    fn write(&mut self, c: Conn, data: &[u8]) -> WriteResult {
        today::Host::write(self.0, c, data.to_vec())
    }
    fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
        today::Host::set_interest(self.0, c, readable, writable);
    }
    fn shutdown_write(&mut self, c: Conn) {
        today::Host::shutdown_write(self.0, c);
    }
    fn close(&mut self, c: Conn) {
        today::Host::close(self.0, c);
    }
    fn peer(&mut self, c: Conn) -> Option<String> {
        today::Host::peer(self.0, c)
    }
    fn tls_version(&mut self, c: Conn) -> Option<String> {
        today::Host::tls(self.0, c).map(|info| info.version)
    }
    fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), IoError> {
        let after_ms = u32::try_from(after_ms).unwrap_or(u32::MAX);
        today::Host::set_timer(self.0, id, after_ms)
    }
    fn cancel_timer(&mut self, id: u64) {
        today::Host::cancel_timer(self.0, id);
    }
    fn connect(&mut self, addr: &str) -> Result<Conn, IoError> {
        today::Host::connect(self.0, addr.to_owned())
    }
}

/// Makes the call `step` names on `io`, on the connection `conn` (for the calls that
/// take one; `connect` goes to `addr`), and answers in the table's words.
fn call_io(io: &mut impl Io, step: &Value, conn: Conn, addr: &str) -> (Answer, Option<Conn>) {
    let answer = match step["call"].as_str().expect("call") {
        "read" => read_answer(io.read(conn, u64_arg(step, "max") as u32)),
        "write" => write_answer(io.write(conn, &bytes_of(step, "data", "data_len"))),
        "set-interest" => {
            io.set_interest(conn, bool_arg(step, "readable"), bool_arg(step, "writable"));
            Answer::Nothing
        }
        "shutdown-write" => {
            io.shutdown_write(conn);
            Answer::Nothing
        }
        "close" => {
            io.close(conn);
            Answer::Nothing
        }
        "peer" => option_answer(io.peer(conn)),
        "tls" => option_answer(io.tls_version(conn)),
        "set-timer" => unit_answer(io.set_timer(u64_arg(step, "id"), u64_arg(step, "after_ms"))),
        "cancel-timer" => {
            io.cancel_timer(u64_arg(step, "id"));
            Answer::Nothing
        }
        "connect" => {
            return match io.connect(addr) {
                Ok(handle) => (Answer::Ok, Some(handle)),
                Err(e) => (Answer::Err(e), None),
            };
        }
        other => panic!("unknown call {other}"),
    };
    (answer, None)
}

/// An event in the table's notation, handles named by `name`.
fn event_value(event: &Event, name: impl Fn(Conn) -> String) -> Value {
    match event {
        Event::Readable(c) => json!({ "readable": name(*c) }),
        Event::Writable(c) => json!({ "writable": name(*c) }),
        Event::Connected(c) => json!({ "connected": name(*c) }),
        Event::Accepted(c) => json!({ "accepted": name(*c) }),
        Event::Adopted(c) => json!({ "adopted": name(*c) }),
        Event::Hangup(info) => {
            json!({ "hangup": name(info.conn), "error": error_name(info.error) })
        }
        Event::Timer(id) => json!({ "timer": id }),
        Event::Shutdown => json!("shutdown"),
        // The store's, not `io`'s: `Net` never reports it.
        Event::Mail => json!("mail"),
    }
}

// ---- Net -----------------------------------------------------------------------------

/// One connection of a case, as `Net` holds it and as its peer sees it.
struct NetConn {
    handle: Conn,
    /// The peer's socket (for an outbound one, accepted once needed).
    peer: Option<TcpStream>,
    /// Bytes the host sent before the case began (to make `room`): not the guest's.
    prefill: usize,
    /// Everything the peer received, prefill included.
    received: Vec<u8>,
    /// The peer saw the host's end-of-stream.
    eof: bool,
    /// The guest closed it: the kernel may report nothing more for it.
    closed: bool,
}

impl NetConn {
    /// An outbound connection, whose peer is accepted once a step needs it.
    fn outbound(handle: Conn) -> Self {
        Self {
            handle,
            peer: None,
            prefill: 0,
            received: Vec::new(),
            eof: false,
            closed: false,
        }
    }
}

/// `Net` over real sockets, with the loop's turn done by hand.
struct NetHost {
    poll: Poll,
    events: Events,
    net: Net,
    conns: HashMap<String, NetConn>,
    /// Where `$listening` connects go; the peer of an outbound connection is
    /// accepted from it.
    listening: TcpListener,
    /// An address where nothing listens.
    closed: SocketAddr,
    /// The connection `other` names, which another instance holds.
    other: Conn,
    /// Its peer, kept open so that it has nothing to report.
    _other_peer: Option<TcpStream>,
    /// `"eof"` reads answer would-block instead: the runner's own check.
    broken: bool,
    /// The contract whose `io` the guest's calls go through, or none for `Net`'s own
    /// calls.
    contract: Option<Contract>,
    /// Slots whose socket reported a readable edge, or the peer's end-of-stream,
    /// since a peer step began.
    readable_edges: HashSet<usize>,
    closed_edges: HashSet<usize>,
}

impl NetHost {
    fn new(case: &Value) -> Self {
        let room = case["conns"]
            .as_object()
            .and_then(|c| c.values().find_map(|c| c.get("room")?.as_u64()));
        let limits = Limits {
            max_timers: case["max_timers"].as_u64().map_or(1024, |n| n as usize),
            max_buffer: if room.is_some() {
                ROOM_BOUND
            } else {
                Limits::default().max_buffer
            },
            ..Limits::default()
        };
        let rules = if case["allow_connect"] == true {
            vec![AllowRule::parse("127.0.0.1:*").expect("a rule")]
        } else {
            Vec::new()
        };
        let poll = Poll::new().expect("a poll");
        let registry = poll.registry().try_clone().expect("a registry");
        let capacity = Capacity::new(limits.max_connections);
        let net = Net::new(limits, AllowList::new(rules), registry, capacity);
        let listening = TcpListener::bind("127.0.0.1:0").expect("bind");
        listening.set_nonblocking(true).expect("non-blocking");
        let closed = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut host = Self {
            poll,
            events: Events::with_capacity(64),
            net,
            conns: HashMap::new(),
            listening,
            closed,
            other: NEVER,
            _other_peer: None,
            broken: false,
            contract: None,
            readable_edges: HashSet::new(),
            closed_edges: HashSet::new(),
        };
        let other = host.accept(OTHER, None);
        host.other = other.handle;
        host._other_peer = other.peer;
        for (name, conn) in case["conns"].as_object().expect("conns") {
            assert!(!is_reserved(name), "`{name}` is reserved");
            let room = conn.get("room").and_then(Value::as_u64);
            let conn = host.accept(GUEST, room.map(|r| r as usize));
            host.conns.insert(name.clone(), conn);
        }
        host.pump(Duration::from_millis(10));
        host
    }

    /// A connection accepted for `owner`, as the loop inserts one; with `room`, the
    /// kernel's buffers are full and the host's holds all but `room` bytes.
    fn accept(&mut self, owner: Owner, room: Option<usize>) -> NetConn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let peer = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut server, addr) = listener.accept().expect("accept");
        server.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let mut prefill = 0;
        if room.is_some() {
            let junk = vec![b'-'; 64 * 1024];
            loop {
                match server.write(&junk) {
                    Ok(n) => prefill += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("prefill: {e}"),
                }
            }
        }
        let place = self.net.capacity().take().expect("a place");
        let stream = mio::net::TcpStream::from_std(server);
        let handle = self
            .net
            .insert(stream, addr, owner, Phase::Open, place)
            .expect("insert");
        if let Some(room) = room {
            let junk = vec![b'-'; ROOM_BOUND - room];
            self.net.set_caller(owner);
            match self.net.write(handle, &junk) {
                WriteResult::Accepted(n) if n as usize == junk.len() => prefill += junk.len(),
                other => panic!("filling the host's buffer: {other:?}"),
            }
        }
        NetConn {
            handle,
            peer: Some(peer),
            prefill,
            received: Vec::new(),
            eof: false,
            closed: false,
        }
    }

    /// Polls once (waiting up to `wait`) and records every edge, as the loop does
    /// before it collects; answers whether there was one.
    fn poll_once(&mut self, wait: Duration) -> bool {
        self.poll.poll(&mut self.events, Some(wait)).expect("poll");
        let mut any = false;
        for event in self.events.iter() {
            let slot = event.token().0;
            self.net.on_socket_event(slot, event);
            if event.is_readable() {
                self.readable_edges.insert(slot);
            }
            if event.is_read_closed() {
                self.closed_edges.insert(slot);
            }
            any = true;
        }
        any
    }

    /// Records edges until none comes for `quiet`.
    fn pump(&mut self, quiet: Duration) {
        let deadline = Instant::now() + SETTLE;
        while self.poll_once(quiet) && Instant::now() < deadline {}
    }

    /// Records edges until `done` or [`SETTLE`] has passed; answers `done`.
    fn pump_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = Instant::now() + SETTLE;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.poll_once(Duration::from_millis(5));
        }
    }

    fn handle(&self, name: &str) -> Conn {
        match name {
            "never" => NEVER,
            "other" => self.other,
            _ => self.conns.get(name).map_or(NEVER, |c| c.handle),
        }
    }

    fn name(&self, handle: Conn) -> String {
        self.conns
            .iter()
            .find(|(_, c)| c.handle == handle)
            .map_or_else(|| handle.to_string(), |(name, _)| name.clone())
    }

    /// The peer socket of `name`, accepting an outbound connection's on first use.
    fn peer_socket(&mut self, name: &str) -> Result<&mut TcpStream, String> {
        let listening = &self.listening;
        let conn = self
            .conns
            .get_mut(name)
            .ok_or_else(|| format!("no connection `{name}`"))?;
        if conn.peer.is_none() {
            let deadline = Instant::now() + SETTLE;
            let stream = loop {
                match listening.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return Err("the outbound connection never arrived".into());
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(format!("accept: {e}")),
                }
            };
            stream.set_nonblocking(true).unwrap();
            conn.peer = Some(stream);
        }
        Ok(conn.peer.as_mut().expect("set above"))
    }

    /// Reads what reached the peer of `name` (until would-block), while the host
    /// flushes.
    fn receive(&mut self, name: &str) -> Result<(), String> {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let result = self.peer_socket(name)?.read(&mut buf);
            let conn = self.conns.get_mut(name).expect("checked");
            match result {
                Ok(0) => {
                    conn.eof = true;
                    return Ok(());
                }
                Ok(n) => conn.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("the peer's read failed: {e}")),
            }
        }
    }
}

impl Host for NetHost {
    fn peer(&mut self, name: &str, step: &Value) -> Result<(), String> {
        // The edges a step waits for are those that come after it.
        let slot = slot_of(self.handle(name));
        self.readable_edges.remove(&slot);
        self.closed_edges.remove(&slot);
        if step.get("send").is_some() || step.get("send_len").is_some() {
            let bytes = bytes_of(step, "send", "send_len");
            self.peer_socket(name)?
                .write_all(&bytes)
                .map_err(|e| format!("the peer's write failed: {e}"))?;
            // Settled once the kernel holds all of it for the host and `Net` has
            // seen the edge.
            let fd = {
                use std::os::fd::AsRawFd;
                self.peer_socket(name)?.as_raw_fd()
            };
            let all_sent = self.pump_until(|_| unsent_by(fd) == 0);
            let seen = self.pump_until(|host| host.readable_edges.contains(&slot));
            return if all_sent && seen {
                Ok(())
            } else {
                Err("the peer's bytes never reached Net".into())
            };
        }
        if step.get("shutdown").is_some() {
            self.peer_socket(name)?
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            // Settled once `Net` has seen the end-of-stream's edge.
            return if self.pump_until(|host| host.closed_edges.contains(&slot)) {
                Ok(())
            } else {
                Err("Net never saw the peer's end-of-stream".into())
            };
        }
        if step.get("reset").is_some() {
            let closed = self.conns.get(name).is_some_and(|c| c.closed);
            let peer = self
                .conns
                .get_mut(name)
                .and_then(|c| c.peer.take())
                .ok_or_else(|| format!("no peer socket for `{name}`"))?;
            common::reset(peer);
            let handle = self.handle(name);
            if closed {
                // The host let the socket go (or lingers): nothing to wait for.
                self.pump(Duration::from_millis(20));
                return Ok(());
            }
            // Settled once `Net` knows: every call on it fails.
            let known = self.pump_until(|host| {
                host.net.set_caller(GUEST);
                host.net.peer(handle).is_none()
                    || matches!(host.net.write(handle, b""), WriteResult::Failed(_))
            });
            return if known {
                Ok(())
            } else {
                Err("Net never saw the reset".into())
            };
        }
        if step.get("drain").is_some() {
            let mut quiet_rounds = 0;
            while quiet_rounds < 3 {
                let before = self.conns[name].received.len();
                self.receive(name)?;
                self.pump(Duration::from_millis(5));
                let grew = self.conns[name].received.len() > before;
                quiet_rounds = if grew { 0 } else { quiet_rounds + 1 };
            }
            return Ok(());
        }
        if let Some(want) = step.get("received") {
            let want = want.as_str().expect("text").as_bytes().to_vec();
            let want_eof = step["eof"] == true;
            let mut failure = None;
            self.pump_until(|host| {
                if let Err(why) = host.receive(name) {
                    failure = Some(why);
                    return true;
                }
                let conn = &host.conns[name];
                let got = conn.received.len() - conn.prefill.min(conn.received.len());
                got >= want.len() && (conn.eof || !want_eof)
            });
            if let Some(why) = failure {
                return Err(why);
            }
            let conn = &self.conns[name];
            let got = &conn.received[conn.prefill.min(conn.received.len())..];
            if got != want.as_slice() || conn.eof != want_eof {
                return Err(format!(
                    "the peer got {:?} (end-of-stream: {}), expected {:?} (end-of-stream: {want_eof})",
                    String::from_utf8_lossy(got),
                    conn.eof,
                    String::from_utf8_lossy(&want),
                ));
            }
            return Ok(());
        }
        panic!("unknown peer step {step}");
    }

    fn call(&mut self, step: &Value) -> Answer {
        self.net.set_caller(GUEST);
        let conn = step
            .get("conn")
            .map_or(NEVER, |_| self.handle(conn_arg(step)));
        let addr = match step["addr"].as_str() {
            Some("$listening") => self.listening.local_addr().unwrap().to_string(),
            Some("$closed") => self.closed.to_string(),
            other => other.unwrap_or_default().to_string(),
        };
        let (answer, connected) = match self.contract {
            None => call_io(&mut self.net, step, conn, &addr),
            Some(contract) => {
                // As an instance's call does: the loop's `Net` lent to the store.
                let mut state = GuestState::lending(std::mem::take(&mut self.net));
                let answer = match contract {
                    Contract::V0_1 => call_io(&mut V01(&mut state), step, conn, &addr),
                    Contract::V0_2 => call_io(&mut V02(&mut state), step, conn, &addr),
                    Contract::V0_3 => call_io(&mut V03(&mut state), step, conn, &addr),
                    Contract::V0_4 => call_io(&mut V04(&mut state), step, conn, &addr),
                    Contract::V1_0 | Contract::V1_1 => {
                        call_io(&mut V1x(&mut state), step, conn, &addr)
                    }
                };
                self.net = state.into_net();
                answer
            }
        };
        if step["call"] == "close"
            && let Some(c) = self.conns.values_mut().find(|c| c.handle == conn)
        {
            c.closed = true;
        }
        if let Some(handle) = connected {
            let name = step["as"].as_str().expect("as").to_string();
            self.conns.insert(name, NetConn::outbound(handle));
        }
        match answer {
            Answer::Eof if self.broken => Answer::WouldBlock,
            answer => answer,
        }
    }

    fn turn(&mut self, wait: Duration, expected: &[Value]) -> Vec<Value> {
        std::thread::sleep(wait);
        let want: BTreeSet<String> = expected.iter().map(Value::to_string).collect();
        // A turn expected to report nothing watches for 50 ms: what comes late is
        // seen, not missed.
        let deadline = Instant::now() + if expected.is_empty() { QUIET } else { SETTLE };
        let mut seen = BTreeSet::new();
        let mut events = Vec::new();
        let mut batch = Batch::default();
        loop {
            // The loop's order: the end of the last call, the edges, the batch.
            self.net.prune();
            self.poll_once(Duration::ZERO);
            batch.clear();
            self.net.collect(&mut batch);
            for (owner, group) in batch.groups() {
                for event in group {
                    let mut value = event_value(event, |h| self.name(h));
                    if owner != GUEST {
                        value = json!({ "of another instance": value });
                    }
                    if seen.insert(value.to_string()) {
                        events.push(value);
                    }
                }
            }
            let done = !want.is_empty() && want.is_subset(&seen);
            if done || Instant::now() >= deadline {
                return events;
            }
            self.poll_once(Duration::from_millis(5));
        }
    }
}

/// Bytes a socket has queued that the other end has not acknowledged yet.
fn unsent_by(fd: std::os::fd::RawFd) -> usize {
    let mut unsent: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for a socket) writes one int through the pointer, to a valid local.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unsent) };
    assert_eq!(rc, 0, "TIOCOUTQ: {}", io::Error::last_os_error());
    unsent as usize
}

// ---- the shadow ----------------------------------------------------------------------

/// A canary's shadow io: its peers are the serving generation's tapes, set here by
/// hand.
struct ShadowHost {
    io: ShadowIo,
    names: HashMap<String, Conn>,
}

impl ShadowHost {
    fn new(case: &Value) -> Self {
        let mut io = ShadowIo::default();
        if let Some(max) = case["max_timers"].as_u64() {
            io.max_timers = max as usize;
        }
        let mut names = HashMap::new();
        for (i, name) in case["conns"].as_object().expect("conns").keys().enumerate() {
            let handle = i as Conn + 1;
            io.accept(handle, Some(format!("127.0.0.1:{}", 40000 + handle)));
            names.insert(name.clone(), handle);
        }
        // The batch that announces them.
        io.events(Instant::now(), &mut Vec::new());
        Self { io, names }
    }

    fn handle(&self, name: &str) -> Conn {
        self.names.get(name).copied().unwrap_or(NEVER)
    }
}

impl Host for ShadowHost {
    fn peer(&mut self, name: &str, step: &Value) -> Result<(), String> {
        let handle = self.handle(name);
        let conn = self
            .io
            .conns
            .get_mut(&handle)
            .ok_or_else(|| format!("no connection `{name}`"))?;
        if step.get("send").is_some() || step.get("send_len").is_some() {
            conn.input
                .extend_from_slice(&bytes_of(step, "send", "send_len"));
        } else if step.get("shutdown").is_some() {
            conn.eof = true;
        } else if step.get("reset").is_some() {
            conn.hung_up = true;
        } else if let Some(want) = step.get("received") {
            let want = want.as_str().expect("text").as_bytes();
            let eof = conn.closed_at.is_some() || conn.write_shut;
            if conn.output != want || eof != (step["eof"] == true) {
                return Err(format!(
                    "the shadow kept {:?} (end-of-stream: {eof})",
                    String::from_utf8_lossy(&conn.output)
                ));
            }
        } else {
            panic!("a shadow cannot {step}");
        }
        Ok(())
    }

    fn call(&mut self, step: &Value) -> Answer {
        let conn = step
            .get("conn")
            .map_or(NEVER, |_| self.handle(conn_arg(step)));
        let addr = step["addr"].as_str().unwrap_or_default();
        call_io(&mut self.io, step, conn, addr).0
    }

    fn turn(&mut self, wait: Duration, _expected: &[Value]) -> Vec<Value> {
        std::thread::sleep(wait);
        let mut events = Vec::new();
        self.io.events(Instant::now(), &mut events);
        let name = |h: Conn| {
            self.names
                .iter()
                .find(|&(_, &c)| c == h)
                .map_or_else(|| h.to_string(), |(n, _)| n.clone())
        };
        events.iter().map(|e| event_value(e, name)).collect()
    }
}

// ---- the tests -----------------------------------------------------------------------

/// Enough cases run that a table or a filter gone wrong cannot pass unnoticed.
const AT_LEAST: usize = 20;

#[test]
fn net_keeps_the_io_contract_table() {
    let (ran, failed) = run_table("net", &|case| Box::new(NetHost::new(case)));
    assert!(ran >= AT_LEAST, "only {ran} case(s) ran");
    assert!(failed.is_empty(), "Net breaks the contract in: {failed:#?}");
}

/// Every contract's calls, as its guests make them: 1.0's `io` and the reads the host
/// makes for its guests, and the older contracts' adapters, which forward every call
/// to `Net` and answer in their version's words what today's contract answers, where
/// that version promised the same (the table's `except` names where it did not).
#[test]
fn every_contracts_calls_keep_the_io_contract_table() {
    // 1.0's `io` is 1.1's: one set of bindings serves both (wasmtime links a 1.0
    // guest's imports to 1.1's), so the 1.1 runner is theirs.
    for contract in Contract::ALL.into_iter().filter(|c| *c != Contract::V1_0) {
        let name = format!("net-{}", contract.version());
        let (ran, failed) = run_table(&name, &|case| {
            let mut host = NetHost::new(case);
            host.contract = Some(contract);
            Box::new(host)
        });
        assert!(ran >= AT_LEAST, "{name}: only {ran} case(s) ran");
        assert!(
            failed.is_empty(),
            "{name} breaks the contract in: {failed:#?}"
        );
    }
}

/// Where 0.1.0 promised something else than today's contract (the cases the table
/// excepts it from), its adapter keeps 0.1.0's word; and every version before 0.4.0
/// answers `unknown-conn` to a `close` or `shutdown-write` of an unknown handle.
#[test]
fn the_older_adapters_keep_what_their_versions_promised() {
    let mut host = NetHost::new(&json!({ "conns": {} }));
    host.contract = Some(Contract::V0_1);
    for (step, expect) in [
        (
            json!({ "call": "connect", "addr": "", "as": "x" }),
            json!({ "err": "not-permitted" }),
        ),
        (
            json!({ "call": "set-timer", "id": 1, "after_ms": 86_400_001_u64 }),
            json!("ok"),
        ),
        (
            json!({ "call": "set-timer", "id": 2, "after_ms": u64::MAX }),
            json!("ok"),
        ),
    ] {
        let answer = host.call(&step);
        assert!(matches(&expect, &answer), "0.1.0 {step}: {answer:?}");
    }

    host.net.set_caller(GUEST);
    let mut state = GuestState::lending(std::mem::take(&mut host.net));
    let answers = [
        format!(
            "{:?}",
            contracts::v0_1::io::Host::close(&mut state, NEVER).map_err(|e| e.name())
        ),
        format!(
            "{:?}",
            contracts::v0_1::io::Host::shutdown_write(&mut state, NEVER).map_err(|e| e.name())
        ),
        format!(
            "{:?}",
            contracts::v0_2::io::Host::close(&mut state, NEVER).map_err(|e| e.name())
        ),
        format!(
            "{:?}",
            contracts::v0_2::io::Host::shutdown_write(&mut state, NEVER).map_err(|e| e.name())
        ),
        format!(
            "{:?}",
            contracts::v0_3::io::Host::close(&mut state, NEVER).map_err(|e| e.name())
        ),
        format!(
            "{:?}",
            contracts::v0_3::io::Host::shutdown_write(&mut state, NEVER).map_err(|e| e.name())
        ),
    ];
    assert!(
        answers.iter().all(|a| a == "Err(\"unknown-conn\")"),
        "{answers:?}"
    );
}

#[test]
fn the_shadow_keeps_the_io_contract_table() {
    let (ran, failed) = run_table("shadow", &|case| Box::new(ShadowHost::new(case)));
    assert!(ran >= AT_LEAST, "only {ran} case(s) ran");
    assert!(
        failed.is_empty(),
        "the shadow breaks the contract in: {failed:#?}"
    );
}

/// A `Net` whose `read` answers would-block where it should answer eof fails
/// exactly the cases that read an eof.
#[test]
fn a_host_broken_on_purpose_fails_the_table() {
    let (_, failed) = run_table("net", &|case| {
        let mut host = NetHost::new(case);
        host.broken = true;
        Box::new(host)
    });
    assert_eq!(
        failed,
        [
            "eof comes after every byte, and again after that",
            "after the peer's eof the connection can still be written to",
        ],
        "the runner must name exactly the cases a broken eof breaks"
    );
}

/// Contract 1.0 reads a connection as soon as it is handed over: what the client sent
/// with its connect comes in the same call as `accepted`, and what one read did not
/// take is reported readable after it, though the kernel shows no new edge.
#[test]
fn a_new_connection_is_read_with_its_accepted_event() {
    let mut host = NetHost::new(&json!({ "conns": {} }));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut peer = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let sent: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    peer.write_all(&sent)
        .expect("send before the host takes the connection");
    let (server, addr) = listener.accept().expect("accept");
    server.set_nonblocking(true).unwrap();
    let place = host.net.capacity().take().expect("a place");
    let stream = mio::net::TcpStream::from_std(server);
    let handle = host
        .net
        .insert(stream, addr, GUEST, Phase::Open, place)
        .expect("insert");
    std::thread::sleep(Duration::from_millis(20)); // every byte in the socket

    let lower = |net: &mut Net, events: &[Event], got: &mut Vec<u8>| {
        net.set_caller(GUEST);
        let mut state = GuestState::lending(std::mem::take(net));
        let mut lowered = contracts::v1_0::Lowered::default();
        lowered.lower(&mut state, events);
        *net = state.into_net();
        let mut kinds = Vec::new();
        for event in &lowered.events {
            assert_eq!(event.conn, handle);
            kinds.push(event.kind);
            let (start, len) = (event.start as usize, event.len as usize);
            got.extend_from_slice(&lowered.input()[start..start + len]);
        }
        kinds
    };
    let mut got = Vec::new();
    assert_eq!(
        lower(&mut host.net, &[Event::Accepted(handle)], &mut got),
        [kind::ACCEPTED, kind::DATA],
        "the bytes come with accepted"
    );
    assert_eq!(got.len(), 64 * 1024, "one read: a whole chunk");

    // No poll: the rest is reported from what the first read left.
    let mut batch = Batch::default();
    host.net.collect(&mut batch);
    let events: Vec<Event> = batch.events().copied().collect();
    assert_eq!(events, [Event::Readable(handle)]);
    assert_eq!(lower(&mut host.net, &events, &mut got), [kind::DATA]);
    assert_eq!(got, sent, "every byte, in order");
}
