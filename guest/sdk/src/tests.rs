//! The buffered layer against a scripted host: what reaches the handler, and what
//! reaches the host, for each event and answer.

use crate::host::fake::ReadResult;
use crate::host::fake::{FIRST_OUTBOUND, FakeHost};
use crate::raw::types::IoError;
use crate::raw::{Event, kind};
use crate::runtime::Runtime;
use crate::{Conn, HIGH_WATER, Handler, Io, LOW_WATER, READ_CHUNK};

const C: u64 = 1;
const CONN: Conn = Conn::from_raw(C);

/// A handler call, as recorded.
#[derive(Debug, PartialEq, Eq)]
enum Call {
    Accept(u64),
    Connected(u64),
    Data(u64, Vec<u8>),
    Eof(u64),
    Writable(u64),
    Close(u64),
    Timer(u64),
    Shutdown,
    Adopted(u64),
    Restored(Vec<u8>),
}

type AcceptHook = Box<dyn FnMut(&mut Io, Conn)>;
type DataHook = Box<dyn FnMut(&mut Io, Conn, &[u8])>;

/// Records every call; does what its hooks say (nothing by default) and otherwise
/// what the trait's defaults do.
#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
    /// What `hangup_reason` answered in each `on_close`.
    reasons: Vec<(u64, Option<IoError>)>,
    on_accept: Option<AcceptHook>,
    on_data: Option<DataHook>,
    /// What `snapshot` returns.
    state: Vec<u8>,
}

impl Recorder {
    fn echo() -> Self {
        Self {
            on_data: Some(Box::new(|io, conn, data| io.write(conn, data))),
            ..Self::default()
        }
    }

    fn writing_on_accept(bytes: &'static [u8], then: fn(&mut Io, Conn)) -> Self {
        Self {
            on_accept: Some(Box::new(move |io, conn| {
                io.write(conn, bytes);
                then(io, conn);
            })),
            ..Self::default()
        }
    }
}

impl Handler for Recorder {
    fn on_accept(&mut self, io: &mut Io, conn: Conn) {
        self.calls.push(Call::Accept(conn.raw()));
        if let Some(hook) = &mut self.on_accept {
            hook(io, conn);
        }
    }

    fn on_connected(&mut self, _io: &mut Io, conn: Conn) {
        self.calls.push(Call::Connected(conn.raw()));
    }

    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        self.calls.push(Call::Data(conn.raw(), data.to_vec()));
        if let Some(hook) = &mut self.on_data {
            hook(io, conn, data);
        }
    }

    fn on_eof(&mut self, io: &mut Io, conn: Conn) {
        self.calls.push(Call::Eof(conn.raw()));
        io.close(conn);
    }

    fn on_writable(&mut self, _io: &mut Io, conn: Conn) {
        self.calls.push(Call::Writable(conn.raw()));
    }

    fn on_close(&mut self, io: &mut Io, conn: Conn) {
        self.calls.push(Call::Close(conn.raw()));
        self.reasons.push((conn.raw(), io.hangup_reason(conn)));
    }

    fn on_timer(&mut self, _io: &mut Io, id: u64) {
        self.calls.push(Call::Timer(id));
    }

    fn on_shutdown(&mut self, _io: &mut Io) {
        self.calls.push(Call::Shutdown);
    }

    /// Records, then does what `on_accept`'s hook does (the trait's default).
    fn on_adopted(&mut self, io: &mut Io, conn: Conn) {
        self.calls.push(Call::Adopted(conn.raw()));
        if let Some(hook) = &mut self.on_accept {
            hook(io, conn);
        }
    }

    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        self.state.clone()
    }

    fn restore(&mut self, _io: &mut Io, state: &[u8]) -> Result<(), crate::BadSnapshot> {
        self.calls.push(Call::Restored(state.to_vec()));
        Ok(())
    }
}

/// A runtime whose host has connection `C` ready to be accepted, taking `room`
/// bytes of writes and then answering `would-block`.
fn runtime(handler: Recorder, room: usize, reads: Vec<ReadResult>) -> Runtime<Recorder> {
    let mut host = FakeHost::default();
    host.add_conn(C, room).reads = reads.into();
    Runtime::new(handler, host)
}

fn hangup(conn: u64, error: IoError) -> Ev {
    Ev::Hangup(conn, error)
}

/// What happened, as a test writes a batch: the host's readiness, which [`deliver`]
/// turns into contract 1.0's events the way the host does.
#[derive(Clone, Copy, Debug)]
enum Ev {
    Accepted(u64),
    Connected(u64),
    /// The connection has input: with read interest on, the host reads it once
    /// (the fake host's scripted reads) and the guest gets `data` or `eof`.
    Readable(u64),
    Writable(u64),
    Hangup(u64, IoError),
    Timer(u64),
    Adopted(u64),
    Shutdown,
}

/// An `io-error`'s position, as a `hangup` carries it.
fn position(error: IoError) -> u32 {
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
    .iter()
    .position(|&e| e == error)
    .expect("every io-error") as u32
}

/// Makes one batch of `events` as the host does, and runs it: a `Readable`
/// connection with read interest is read once, before the call, up to a chunk; its
/// bytes become a `data` event and its end-of-stream an `eof`, and a read that
/// finds nothing or fails adds nothing (a failure's `hangup` comes in a later
/// batch).
fn deliver<H: Handler>(rt: &mut Runtime<H>, events: Vec<Ev>) {
    let mut batch = Vec::new();
    let mut input = Vec::new();
    let event = |kind, conn, id, code| Event {
        kind,
        code,
        conn,
        id,
        value: 0,
        start: 0,
        len: 0,
    };
    for ev in events {
        batch.push(match ev {
            Ev::Readable(c) => {
                let host = rt.io().host();
                let wants = host
                    .conns
                    .get(&c)
                    .is_some_and(|s| s.interest.0 && !s.closed);
                if !wants {
                    continue;
                }
                match host.read(c, READ_CHUNK) {
                    ReadResult::Data(bytes) => {
                        let start = input.len() as u32;
                        input.extend_from_slice(&bytes);
                        Event {
                            start,
                            len: bytes.len() as u32,
                            ..event(kind::DATA, c, 0, 0)
                        }
                    }
                    ReadResult::Eof => event(kind::EOF, c, 0, 0),
                    ReadResult::WouldBlock | ReadResult::Failed(_) => continue,
                }
            }
            Ev::Accepted(c) => event(kind::ACCEPTED, c, 0, 0),
            Ev::Connected(c) => event(kind::CONNECTED, c, 0, 0),
            Ev::Writable(c) => event(kind::WRITABLE, c, 0, 0),
            Ev::Hangup(c, error) => event(kind::HANGUP, c, 0, position(error)),
            Ev::Timer(id) => event(kind::TIMER, 0, id, 0),
            Ev::Adopted(c) => event(kind::ADOPTED, c, 0, 0),
            Ev::Shutdown => event(kind::SHUTDOWN, 0, 0, 0),
        });
    }
    rt.handle(&batch, &input);
}

fn data(bytes: &[u8]) -> ReadResult {
    ReadResult::Data(bytes.to_vec())
}

fn host(rt: &mut Runtime<Recorder>) -> &mut FakeHost {
    rt.io().host()
}

fn calls(rt: &mut Runtime<Recorder>) -> &[Call] {
    &rt.handler().calls
}

/// A read of a whole chunk of `byte`s: the socket may hold more.
fn full_chunk(byte: u8) -> Vec<u8> {
    vec![byte; READ_CHUNK as usize]
}

#[test]
fn bytes_the_host_read_reach_the_handler_in_order() {
    let full = full_chunk(b'a');
    let reads = vec![data(&full), data(b"cd")];
    let mut rt = runtime(Recorder::echo(), usize::MAX, reads);
    deliver(&mut rt, vec![Ev::Accepted(C), Ev::Readable(C)]);
    deliver(&mut rt, vec![Ev::Readable(C)]);
    assert_eq!(
        calls(&mut rt),
        [
            Call::Accept(C),
            Call::Data(C, full.clone()),
            Call::Data(C, b"cd".to_vec())
        ]
    );
    let fake = host(&mut rt).conn(C);
    assert_eq!(fake.written, [full, b"cd".to_vec()].concat());
    assert_eq!(fake.interest, (true, false));
}

#[test]
fn input_that_came_while_paused_waits_for_reading_to_resume() {
    let handler = Recorder {
        on_accept: Some(Box::new(|io, conn| io.pause_reading(conn))),
        ..Recorder::default()
    };
    let mut rt = runtime(handler, 100, vec![data(b"early"), ReadResult::Eof]);
    // The host read before it heard of the pause: the bytes are in this batch.
    deliver(&mut rt, vec![Ev::Accepted(C), Ev::Readable(C)]);
    assert_eq!(calls(&mut rt), [Call::Accept(C)]);
    assert_eq!(host(&mut rt).conn(C).interest, (false, false));
    deliver(&mut rt, vec![Ev::Readable(C)]);
    assert_eq!(host(&mut rt).conn(C).read_calls, 1, "paused: not read");

    rt.io().resume_reading(CONN);
    deliver(&mut rt, vec![Ev::Timer(7), Ev::Readable(C)]);
    assert_eq!(
        calls(&mut rt),
        [
            Call::Accept(C),
            Call::Timer(7),
            Call::Data(C, b"early".to_vec()),
            Call::Eof(C),
            Call::Close(C),
        ],
        "held bytes first, then what came after them"
    );
}

#[test]
fn eof_closes_gracefully_once_the_queue_is_sent() {
    let mut rt = runtime(Recorder::echo(), 1, vec![data(b"hi"), ReadResult::Eof]);
    // The short read ends the first event; the host reports the connection again
    // (level-triggered), and the second read finds the end-of-stream.
    deliver(
        &mut rt,
        vec![Ev::Accepted(C), Ev::Readable(C), Ev::Readable(C)],
    );
    let fake = host(&mut rt).conn(C);
    assert_eq!(fake.written, b"h");
    assert!(!fake.closed, "closing waits for the queue");
    assert_eq!(fake.interest, (false, true));

    host(&mut rt).conn(C).room = 10;
    deliver(
        &mut rt,
        vec![Ev::Writable(C), Ev::Readable(C), Ev::Writable(C)],
    );
    let fake = host(&mut rt).conn(C);
    assert_eq!(fake.written, b"hi");
    assert!(fake.closed);
    assert_eq!(
        calls(&mut rt),
        [
            Call::Accept(C),
            Call::Data(C, b"hi".to_vec()),
            Call::Eof(C),
            Call::Close(C)
        ],
        "no on_writable when a close was waiting; nothing after on_close"
    );
}

#[test]
fn partial_write_queues_and_reports_writable_once_drained() {
    let mut rt = runtime(Recorder::writing_on_accept(b"hello", |_, _| {}), 3, vec![]);
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    assert_eq!(rt.io().queued(CONN), 2);
    assert_eq!(host(&mut rt).conn(C).interest, (true, true));

    deliver(&mut rt, vec![Ev::Writable(C)]);
    assert_eq!(rt.io().queued(CONN), 2, "the host had no room");

    host(&mut rt).conn(C).room = 10;
    deliver(&mut rt, vec![Ev::Writable(C), Ev::Writable(C)]);
    let fake = host(&mut rt).conn(C);
    assert_eq!(fake.written, b"hello");
    assert_eq!(fake.interest, (true, false));
    assert_eq!(calls(&mut rt), [Call::Accept(C), Call::Writable(C)]);
}

#[test]
fn write_interest_asked_for_reports_writable_with_nothing_queued() {
    let mut rt = runtime(
        Recorder::writing_on_accept(b"", |io, conn| io.set_interest(conn, true, true)),
        100,
        vec![],
    );
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    assert_eq!(host(&mut rt).conn(C).interest, (true, true));
    deliver(&mut rt, vec![Ev::Writable(C)]);
    assert_eq!(calls(&mut rt), [Call::Accept(C), Call::Writable(C)]);

    // Off again: no more `on_writable` for an empty queue, and reading paused too.
    rt.io().set_interest(CONN, false, false);
    assert_eq!(host(&mut rt).conn(C).interest, (false, false));
    deliver(&mut rt, vec![Ev::Writable(C)]);
    assert_eq!(calls(&mut rt).len(), 2, "not told again");
    rt.io().set_interest(CONN, true, false);
    assert_eq!(host(&mut rt).conn(C).interest, (true, false));
}

#[test]
fn write_interest_is_dropped_once_the_write_side_is_shut() {
    let mut rt = runtime(
        Recorder::writing_on_accept(b"", |io, conn| {
            io.set_interest(conn, true, true);
            io.shutdown_write(conn);
        }),
        100,
        vec![],
    );
    deliver(&mut rt, vec![Ev::Accepted(C), Ev::Writable(C)]);
    assert_eq!(host(&mut rt).conn(C).interest, (true, false));
    assert_eq!(calls(&mut rt), [Call::Accept(C)], "nothing to write to");
}

#[test]
fn backpressure_stops_reading_until_the_queue_drains() {
    let chunk = vec![b'x'; READ_CHUNK as usize];
    let reads = (0..8).map(|_| ReadResult::Data(chunk.clone())).collect();
    let mut rt = runtime(Recorder::echo(), 0, reads);
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    let chunks_to_high_water = HIGH_WATER.div_ceil(chunk.len());
    for _ in 0..chunks_to_high_water {
        deliver(&mut rt, vec![Ev::Readable(C)]);
    }
    assert_eq!(host(&mut rt).conn(C).interest, (false, true));

    deliver(&mut rt, vec![Ev::Readable(C)]);
    assert_eq!(
        host(&mut rt).conn(C).read_calls,
        chunks_to_high_water,
        "paused: the host reads no more"
    );

    let queued = rt.io().queued(CONN);
    host(&mut rt).conn(C).room = queued - LOW_WATER;
    deliver(&mut rt, vec![Ev::Writable(C)]);
    assert_eq!(rt.io().queued(CONN), LOW_WATER);
    assert_eq!(
        host(&mut rt).conn(C).interest,
        (true, true),
        "reading again"
    );

    deliver(&mut rt, vec![Ev::Readable(C)]);
    assert!(host(&mut rt).conn(C).read_calls > chunks_to_high_water);
}

#[test]
fn each_batch_carries_one_read_of_a_readable_connection() {
    let reads = (0..3).map(|_| data(&full_chunk(b'z'))).collect();
    let mut rt = runtime(Recorder::default(), 0, reads);
    deliver(&mut rt, vec![Ev::Accepted(C), Ev::Readable(C)]);
    assert_eq!(host(&mut rt).conn(C).read_calls, 1);
    deliver(&mut rt, vec![Ev::Readable(C)]);
    assert_eq!(host(&mut rt).conn(C).read_calls, 2);
    assert_eq!(
        calls(&mut rt).len(),
        3,
        "accept, then one on_data per batch"
    );
}

#[test]
fn hangup_ends_a_connection_exactly_once() {
    let mut rt = runtime(Recorder::default(), 100, vec![data(b"late")]);
    deliver(
        &mut rt,
        vec![
            Ev::Accepted(C),
            hangup(C, IoError::Reset),
            hangup(C, IoError::Reset),
            Ev::Readable(C),
            Ev::Writable(C),
        ],
    );
    assert_eq!(calls(&mut rt), [Call::Accept(C), Call::Close(C)]);
    assert_eq!(rt.handler().reasons, [(C, Some(IoError::Reset))]);
    let io = rt.io();
    assert!(!io.is_open(CONN));
    assert_eq!(io.hangup_reason(CONN), None, "only during on_close");
    io.write(CONN, b"dropped");
    io.close(CONN);
    assert_eq!(host(&mut rt).conn(C).written, b"");
}

#[test]
fn reset_stops_everything_and_waits_for_hangup() {
    let mut rt = runtime(Recorder::echo(), 0, vec![data(b"a")]);
    host(&mut rt).conn(C).write_error = Some(IoError::Reset);
    rt.io().accept(CONN);
    rt.io().write(CONN, b"queued before");
    deliver(&mut rt, vec![Ev::Readable(C)]);
    assert_eq!(host(&mut rt).conn(C).interest, (false, false));
    assert_eq!(rt.io().queued(CONN), 0, "nobody left to send it to");
    assert!(!calls(&mut rt).contains(&Call::Close(C)));

    deliver(&mut rt, vec![hangup(C, IoError::Reset)]);
    assert_eq!(calls(&mut rt).last(), Some(&Call::Close(C)));
    assert_eq!(rt.handler().reasons, [(C, Some(IoError::Reset))]);
}

#[test]
fn write_to_a_handle_the_host_does_not_know_ends_it() {
    let mut rt = runtime(Recorder::writing_on_accept(b"x", |_, _| {}), 100, vec![]);
    host(&mut rt).conn(C).write_error = Some(IoError::UnknownConn);
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    assert_eq!(calls(&mut rt), [Call::Accept(C), Call::Close(C)]);
}

#[test]
fn shutdown_write_waits_for_the_queue_and_drops_later_writes() {
    let handler = Recorder::writing_on_accept(b"abcd", |io, conn| {
        io.shutdown_write(conn);
        io.write(conn, b"late");
    });
    let mut rt = runtime(handler, 2, vec![]);
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    assert!(!host(&mut rt).conn(C).shut_down);

    host(&mut rt).conn(C).room = 100;
    deliver(&mut rt, vec![Ev::Writable(C)]);
    let fake = host(&mut rt).conn(C);
    assert_eq!(fake.written, b"abcd");
    assert!(fake.shut_down);
    assert_eq!(
        fake.interest,
        (true, false),
        "reading goes on after a half-close"
    );
    assert_eq!(calls(&mut rt), [Call::Accept(C)]);
}

#[test]
fn abort_closes_at_once_and_drops_the_queue() {
    let mut rt = runtime(Recorder::writing_on_accept(b"abcd", Io::abort), 1, vec![]);
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    let fake = host(&mut rt).conn(C);
    assert!(fake.closed);
    assert_eq!(fake.written, b"a");
    assert_eq!(calls(&mut rt), [Call::Accept(C), Call::Close(C)]);
    assert_eq!(rt.handler().reasons, [(C, None)], "the guest's own close");
}

#[test]
fn close_with_an_empty_queue_is_immediate() {
    let mut rt = runtime(Recorder::writing_on_accept(b"ok", Io::close), 100, vec![]);
    deliver(&mut rt, vec![Ev::Accepted(C), Ev::Readable(C)]);
    assert!(host(&mut rt).conn(C).closed);
    assert_eq!(calls(&mut rt), [Call::Accept(C), Call::Close(C)]);
}

#[test]
fn calls_on_unknown_handles_do_nothing() {
    let mut rt = runtime(Recorder::default(), 100, vec![]);
    let stranger = Conn::from_raw(99);
    let io = rt.io();
    io.write(stranger, b"x");
    io.close(stranger);
    io.abort(stranger);
    io.shutdown_write(stranger);
    assert_eq!(io.queued(stranger), 0);
    assert_eq!(io.peer(stranger), None);
    deliver(
        &mut rt,
        vec![
            Ev::Readable(99),
            Ev::Writable(99),
            Ev::Connected(99),
            hangup(99, IoError::Reset),
        ],
    );
    assert!(calls(&mut rt).is_empty());
}

#[test]
fn timers_reach_the_handler_and_report_the_host_limit() {
    let mut rt = runtime(Recorder::default(), 0, vec![]);
    let io = rt.io();
    assert_eq!(io.set_timer(1, 10), Ok(()));
    assert_eq!(io.set_timer(2, 10), Ok(()));
    assert_eq!(io.set_timer(3, 10), Err(IoError::LimitExceeded));
    io.cancel_timer(2);
    assert_eq!(io.set_timer(3, 10), Ok(()));
    deliver(&mut rt, vec![Ev::Timer(7)]);
    assert_eq!(calls(&mut rt), [Call::Timer(7)]);
}

#[test]
fn tracks_open_connections() {
    let mut rt = runtime(Recorder::default(), 0, vec![]);
    host(&mut rt).add_conn(2, 0);
    deliver(
        &mut rt,
        vec![Ev::Accepted(C), Ev::Accepted(2), Ev::Accepted(2)],
    );
    let mut open: Vec<Conn> = rt.io().conns().collect();
    open.sort();
    assert_eq!(open, [CONN, Conn::from_raw(2)]);
    assert_eq!(rt.io().peer(CONN).as_deref(), Some("127.0.0.1:40001"));
    assert_eq!(
        calls(&mut rt),
        [Call::Accept(C), Call::Accept(2)],
        "accepted once"
    );
}

const OUT: u64 = FIRST_OUTBOUND;
const OUT_CONN: Conn = Conn::from_raw(OUT);

#[test]
fn connect_holds_writes_and_shutdown_until_connected() {
    let mut rt = runtime(Recorder::default(), 0, vec![]);
    let io = rt.io();
    assert_eq!(io.connect("127.0.0.1:9"), Ok(OUT_CONN));
    assert!(io.is_open(OUT_CONN));
    io.write(OUT_CONN, b"early");
    io.shutdown_write(OUT_CONN);
    assert_eq!(io.queued(OUT_CONN), 5);
    let fake = host(&mut rt).conn(OUT);
    assert_eq!(fake.written, b"");
    assert!(!fake.shut_down);
    assert_eq!(
        fake.interest,
        (true, false),
        "no write interest before connected"
    );
    assert_eq!(host(&mut rt).connects, ["127.0.0.1:9"]);

    host(&mut rt).conn(OUT).room = 100;
    deliver(&mut rt, vec![Ev::Connected(OUT), Ev::Connected(OUT)]);
    let fake = host(&mut rt).conn(OUT);
    assert_eq!(fake.written, b"early");
    assert!(fake.shut_down);
    assert_eq!(calls(&mut rt), [Call::Connected(OUT)], "connected once");
}

#[test]
fn a_queue_held_for_a_connection_reports_writable_once_sent() {
    let mut rt = runtime(Recorder::default(), 0, vec![]);
    let io = rt.io();
    let out = io.connect("127.0.0.1:9").expect("the fake host connects");
    io.write(out, b"abc");
    host(&mut rt).conn(OUT).room = 2;
    deliver(&mut rt, vec![Ev::Connected(OUT)]);
    assert_eq!(rt.io().queued(out), 1);
    assert_eq!(host(&mut rt).conn(OUT).interest, (true, true));

    host(&mut rt).conn(OUT).room = 2;
    deliver(&mut rt, vec![Ev::Writable(OUT)]);
    assert_eq!(host(&mut rt).conn(OUT).written, b"abc");
    assert_eq!(calls(&mut rt), [Call::Connected(OUT), Call::Writable(OUT)]);
}

#[test]
fn a_connection_that_cannot_be_made_closes_with_its_reason() {
    let mut rt = runtime(Recorder::default(), 0, vec![]);
    let out = rt
        .io()
        .connect("127.0.0.1:1")
        .expect("the fake host connects");
    rt.io().write(out, b"lost");
    deliver(&mut rt, vec![hangup(OUT, IoError::Refused)]);
    assert_eq!(calls(&mut rt), [Call::Close(OUT)]);
    assert_eq!(rt.handler().reasons, [(OUT, Some(IoError::Refused))]);
    assert_eq!(host(&mut rt).conn(OUT).written, b"");
}

#[test]
fn connect_reports_what_the_host_refuses() {
    let mut rt = runtime(Recorder::default(), 0, vec![]);
    host(&mut rt).allow_connect = false;
    assert_eq!(rt.io().connect("10.0.0.1:80"), Err(IoError::NotPermitted));
    assert_eq!(rt.io().conns().count(), 0);
}

#[test]
fn closing_a_connection_still_being_made() {
    let mut rt = runtime(Recorder::default(), 0, vec![]);
    let io = rt.io();
    let empty = io.connect("127.0.0.1:9").expect("the fake host connects");
    io.close(empty);
    assert!(
        host(&mut rt).conn(OUT).closed,
        "nothing to send: closed at once"
    );

    let io = rt.io();
    let pending = io.connect("127.0.0.1:9").expect("the fake host connects");
    io.write(pending, b"bye");
    io.close(pending);
    let raw = pending.raw();
    assert!(
        !host(&mut rt).conn(raw).closed,
        "waits to send what was written"
    );
    host(&mut rt).conn(raw).room = 100;
    deliver(&mut rt, vec![Ev::Connected(raw)]);
    let fake = host(&mut rt).conn(raw);
    assert_eq!(fake.written, b"bye");
    assert!(fake.closed);
    // The first close was made outside a batch, so its `on_close` waited for one.
    assert_eq!(
        calls(&mut rt),
        [Call::Connected(raw), Call::Close(OUT), Call::Close(raw)]
    );
}

#[test]
fn pause_reading_composes_with_the_high_water_mark() {
    let chunk = vec![b'x'; READ_CHUNK as usize];
    let reads = (0..8).map(|_| ReadResult::Data(chunk.clone())).collect();
    let mut rt = runtime(Recorder::echo(), 0, reads);
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    for _ in 0..HIGH_WATER.div_ceil(chunk.len()) {
        deliver(&mut rt, vec![Ev::Readable(C)]);
    }
    assert_eq!(host(&mut rt).conn(C).interest, (false, true), "high water");

    rt.io().pause_reading(CONN);
    host(&mut rt).conn(C).room = usize::MAX;
    deliver(&mut rt, vec![Ev::Writable(C)]);
    assert_eq!(rt.io().queued(CONN), 0);
    assert_eq!(
        host(&mut rt).conn(C).interest,
        (false, false),
        "still paused by the guest"
    );
    let reads_so_far = host(&mut rt).conn(C).read_calls;
    deliver(&mut rt, vec![Ev::Readable(C)]);
    assert_eq!(host(&mut rt).conn(C).read_calls, reads_so_far);

    rt.io().resume_reading(CONN);
    assert_eq!(host(&mut rt).conn(C).interest, (true, false));
    deliver(&mut rt, vec![Ev::Readable(C)]);
    assert!(host(&mut rt).conn(C).read_calls > reads_so_far);
}

#[test]
fn without_auto_pause_a_full_queue_does_not_stop_reading() {
    let chunk = vec![b'x'; READ_CHUNK as usize];
    let reads = (0..8).map(|_| ReadResult::Data(chunk.clone())).collect();
    let handler = Recorder {
        on_accept: Some(Box::new(|io, conn| io.set_auto_pause(conn, false))),
        ..Recorder::echo()
    };
    let mut rt = runtime(handler, 0, reads);
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    for _ in 0..8 {
        deliver(&mut rt, vec![Ev::Readable(C)]);
    }
    assert_eq!(rt.io().queued(CONN), 8 * chunk.len());
    assert_eq!(host(&mut rt).conn(C).interest, (true, true));

    rt.io().set_auto_pause(CONN, true);
    assert_eq!(
        host(&mut rt).conn(C).interest,
        (false, true),
        "on again: over high water"
    );
}

#[test]
fn shutdown_reaches_the_handler() {
    let mut rt = runtime(Recorder::default(), 0, vec![]);
    deliver(&mut rt, vec![Ev::Accepted(C), Ev::Shutdown]);
    assert_eq!(calls(&mut rt), [Call::Accept(C), Call::Shutdown]);
}

// Hot swap with handoff: snapshot on one runtime, restore and `adopted` on another.

/// A new generation's runtime: its host holds `C` as the old one left it, with
/// `room` bytes of room and the interest the old generation set.
fn successor(handler: Recorder, room: usize, interest: (bool, bool)) -> Runtime<Recorder> {
    let mut host = FakeHost::default();
    host.add_conn(C, room).interest = interest;
    Runtime::new(handler, host)
}

/// An old generation with `C` open and `queued` bytes the host has not taken.
fn generation_with_queue(queued: &'static [u8]) -> Runtime<Recorder> {
    let mut rt = runtime(Recorder::writing_on_accept(queued, |_, _| {}), 0, vec![]);
    deliver(&mut rt, vec![Ev::Accepted(C)]);
    assert_eq!(rt.io().queued(CONN), queued.len());
    rt
}

#[test]
fn input_held_while_paused_survives_a_handoff() {
    let handler = Recorder {
        on_accept: Some(Box::new(|io, conn| io.pause_reading(conn))),
        ..Recorder::default()
    };
    let mut old = runtime(handler, 100, vec![data(b"early"), ReadResult::Eof]);
    deliver(&mut old, vec![Ev::Accepted(C), Ev::Readable(C)]);
    assert_eq!(calls(&mut old), [Call::Accept(C)], "held, not delivered");
    let snapshot = old.snapshot();
    assert_eq!(snapshot[4], 3, "layout 3 while input is held");

    let mut new = successor(Recorder::default(), 100, (false, false));
    new.restore(&snapshot).unwrap();
    deliver(&mut new, vec![Ev::Adopted(C)]);
    assert_eq!(calls(&mut new), [Call::Adopted(C)], "still paused");
    new.io().resume_reading(CONN);
    deliver(&mut new, vec![Ev::Timer(1)]);
    assert_eq!(
        calls(&mut new),
        [
            Call::Adopted(C),
            Call::Timer(1),
            Call::Data(C, b"early".to_vec())
        ]
    );
}

#[test]
fn queued_bytes_survive_a_handoff_and_go_out_first() {
    let mut old = generation_with_queue(b"old bytes ");
    old.handler().state = b"handler state".to_vec();
    let snapshot = old.snapshot();

    let handler = Recorder::writing_on_accept(b"new bytes", |_, _| {});
    let mut new = successor(handler, 100, (true, true));
    new.restore(&snapshot).expect("a good snapshot");
    assert_eq!(calls(&mut new), [Call::Restored(b"handler state".to_vec())]);
    assert!(
        !new.io().is_open(CONN),
        "not this instance's before adopted"
    );

    deliver(&mut new, vec![Ev::Adopted(C)]);
    let fake = host(&mut new).conn(C);
    assert_eq!(fake.written, b"old bytes new bytes");
    assert_eq!(fake.interest, (true, false), "drained: write interest off");
    assert_eq!(
        calls(&mut new)[1..],
        [Call::Adopted(C), Call::Writable(C)],
        "the queue the old generation waited on drained"
    );
}

#[test]
fn write_interest_survives_a_handoff() {
    let mut old = runtime(
        Recorder::writing_on_accept(b"", |io, conn| io.set_interest(conn, true, true)),
        100,
        vec![],
    );
    deliver(&mut old, vec![Ev::Accepted(C)]);
    let snapshot = old.snapshot();
    let mut new = successor(Recorder::default(), 100, (true, true));
    new.restore(&snapshot).expect("a good snapshot");
    deliver(&mut new, vec![Ev::Adopted(C)]);
    assert_eq!(host(&mut new).conn(C).interest, (true, true));
    assert_eq!(
        calls(&mut new),
        [Call::Adopted(C), Call::Writable(C)],
        "the new generation hears the room its predecessor asked for"
    );
}

#[test]
fn a_queue_the_host_still_cannot_take_waits_for_writable() {
    let snapshot = generation_with_queue(b"abcdef").snapshot();
    let mut new = successor(Recorder::default(), 2, (true, true));
    new.restore(&snapshot).expect("a good snapshot");
    deliver(&mut new, vec![Ev::Adopted(C)]);
    assert_eq!(new.io().queued(CONN), 4);
    assert_eq!(host(&mut new).conn(C).interest, (true, true));
    new.io().write(CONN, b"!");
    host(&mut new).conn(C).room = 100;
    deliver(&mut new, vec![Ev::Writable(C)]);
    assert_eq!(host(&mut new).conn(C).written, b"abcdef!");
}

#[test]
fn a_close_waiting_for_the_queue_survives_a_handoff() {
    let mut old = runtime(Recorder::writing_on_accept(b"bye", Io::close), 0, vec![]);
    deliver(&mut old, vec![Ev::Accepted(C)]);
    assert!(old.io().is_open(CONN), "waiting to send");
    let snapshot = old.snapshot();

    let mut new = successor(Recorder::default(), 100, (false, true));
    new.restore(&snapshot).expect("a good snapshot");
    deliver(&mut new, vec![Ev::Adopted(C), Ev::Readable(C)]);
    let fake = host(&mut new).conn(C);
    assert_eq!(fake.written, b"bye");
    assert!(fake.closed);
    assert_eq!(fake.read_calls, 0, "reading stopped with the close");
    assert_eq!(calls(&mut new), [Call::Adopted(C), Call::Close(C)]);
}

#[test]
fn flags_survive_a_handoff() {
    let mut old = runtime(Recorder::default(), 0, vec![]);
    host(&mut old).add_conn(2, 0);
    deliver(&mut old, vec![Ev::Accepted(C), Ev::Accepted(2)]);
    // `C` saw end-of-stream and stays open, half-closed (the recorder's `on_eof`
    // would close it, so the runtime's side is called directly).
    old.io().mark_eof(CONN);
    let two = Conn::from_raw(2);
    old.io().pause_reading(two);
    old.io().set_auto_pause(two, false);
    let snapshot = old.snapshot();

    let mut new = successor(Recorder::default(), 0, (true, true));
    host(&mut new).add_conn(2, 0).interest = (true, true);
    new.restore(&snapshot).expect("a good snapshot");
    deliver(&mut new, vec![Ev::Adopted(C), Ev::Adopted(2)]);
    assert_eq!(host(&mut new).conn(C).interest, (false, false), "eof");
    assert_eq!(host(&mut new).conn(2).interest, (false, false), "paused");
    new.io().resume_reading(two);
    assert_eq!(host(&mut new).conn(2).interest, (true, false));
    assert_eq!(calls(&mut new), [Call::Adopted(C), Call::Adopted(2)]);
}

#[test]
fn a_connection_adopted_without_state_starts_afresh() {
    let mut new = successor(Recorder::default(), 100, (false, true));
    deliver(&mut new, vec![Ev::Adopted(C), Ev::Adopted(C)]);
    assert_eq!(
        host(&mut new).conn(C).interest,
        (true, false),
        "the old interest is replaced"
    );
    assert_eq!(calls(&mut new), [Call::Adopted(C)], "adopted once");
    assert!(new.io().is_open(CONN));
}

#[test]
fn the_default_on_adopted_is_on_accept() {
    #[derive(Default)]
    struct Greeter;
    impl Handler for Greeter {
        fn on_accept(&mut self, io: &mut Io, conn: Conn) {
            io.write(conn, b"hi");
        }
    }
    let mut host = FakeHost::default();
    host.add_conn(C, 100);
    let mut rt = Runtime::new(Greeter, host);
    rt.restore(b"").expect("nothing to restore");
    deliver(&mut rt, vec![Ev::Adopted(C)]);
    assert_eq!(rt.io().host().conn(C).written, b"hi");
}

#[test]
fn a_connection_that_ends_before_adoption_is_closed_once() {
    let snapshot = generation_with_queue(b"lost").snapshot();
    let mut new = successor(Recorder::default(), 100, (true, true));
    new.restore(&snapshot).expect("a good snapshot");
    deliver(&mut new, vec![hangup(C, IoError::Reset), Ev::Adopted(C)]);
    assert_eq!(calls(&mut new)[0], Call::Close(C));
    assert_eq!(new.handler().reasons, [(C, Some(IoError::Reset))]);
    assert_eq!(host(&mut new).conn(C).written, b"");
}

#[test]
fn an_empty_handler_snapshot_is_not_restored() {
    let snapshot = generation_with_queue(b"q").snapshot();
    let mut new = successor(Recorder::default(), 100, (true, true));
    new.restore(&snapshot).expect("a good snapshot");
    assert!(calls(&mut new).is_empty());
    deliver(&mut new, vec![Ev::Adopted(C)]);
    assert_eq!(host(&mut new).conn(C).written, b"q");
}

#[test]
fn a_malformed_snapshot_is_ignored_whole() {
    let mut old = generation_with_queue(b"queued");
    old.handler().state = b"handler state".to_vec();
    let snapshot = old.snapshot();

    let mut bad_version = snapshot.clone();
    bad_version[4] = 99;
    let mut trailing = snapshot.clone();
    trailing.push(0);
    // Layout 1 had no write interest: its flags' bit 7 is always 0.
    let mut bad_flags = snapshot.clone();
    let flags_at = snapshot.len() - (1 + 1 + 8 + b"queued".len());
    bad_flags[4] = 1;
    bad_flags[flags_at] |= 0x80;
    let cases = [
        b"not a snapshot at all".to_vec(),
        b"SSDK".to_vec(),
        bad_version,
        trailing,
        bad_flags,
    ];
    let truncations = (1..snapshot.len()).map(|end| snapshot[..end].to_vec());
    for bad in cases.into_iter().chain(truncations) {
        let mut new = successor(Recorder::default(), 100, (false, true));
        let refused = new.restore(&bad);
        assert!(refused.is_err(), "refused: {bad:?}");
        assert!(calls(&mut new).is_empty(), "handler not restored: {bad:?}");
        deliver(&mut new, vec![Ev::Adopted(C)]);
        let fake = host(&mut new).conn(C);
        assert_eq!(fake.written, b"", "nothing of the old queue: {bad:?}");
        assert_eq!(fake.interest, (true, false), "fresh: {bad:?}");
    }
}

#[test]
fn a_connection_listed_twice_is_refused() {
    let snapshot = generation_with_queue(b"x").snapshot();
    // The one connection, and a count of 2 with the same record again: handle,
    // flags, pending action, the queue (length, b"x"); layout 2, nothing being held.
    assert_eq!(snapshot[4], 2, "layout 2 while nothing is held");
    let record = snapshot[snapshot.len() - (8 + 1 + 1 + 8 + 1)..].to_vec();
    let count_at = snapshot.len() - record.len() - 8;
    let mut twice = snapshot[..count_at].to_vec();
    twice.extend_from_slice(&2u64.to_le_bytes());
    twice.extend_from_slice(&record);
    twice.extend_from_slice(&record);
    let mut new = successor(Recorder::default(), 100, (true, true));
    assert!(new.restore(&twice).is_err(), "a duplicate is refused");
    deliver(&mut new, vec![Ev::Adopted(C)]);
    assert_eq!(host(&mut new).conn(C).written, b"");

    let mut once = snapshot[..count_at].to_vec();
    once.extend_from_slice(&1u64.to_le_bytes());
    once.extend_from_slice(&record);
    assert_eq!(once, snapshot, "the layout this test assumes");
}

#[test]
fn a_snapshot_carries_connections_not_adopted_yet() {
    let first = generation_with_queue(b"twice moved").snapshot();
    let mut middle = successor(Recorder::default(), 0, (true, true));
    middle.restore(&first).expect("a good snapshot");
    let second = middle.snapshot();
    let mut last = successor(Recorder::default(), 100, (true, true));
    last.restore(&second).expect("a good snapshot");
    deliver(&mut last, vec![Ev::Adopted(C)]);
    assert_eq!(host(&mut last).conn(C).written, b"twice moved");
}

#[test]
fn snapshots_of_several_instances_merge() {
    let first = generation_with_queue(b"first").snapshot();
    let mut other = FakeHost::default();
    other.add_conn(2, 0);
    let mut second = Runtime::new(Recorder::writing_on_accept(b"second", |_, _| {}), other);
    deliver(&mut second, vec![Ev::Accepted(2)]);
    let second = second.snapshot();

    let mut new = successor(Recorder::default(), 100, (true, true));
    host(&mut new).add_conn(2, 100);
    new.restore(&first).expect("a good snapshot");
    deliver(&mut new, vec![Ev::Adopted(C)]);
    new.restore(&second).expect("a good snapshot");
    deliver(&mut new, vec![Ev::Adopted(2)]);
    assert_eq!(host(&mut new).conn(C).written, b"first");
    assert_eq!(host(&mut new).conn(2).written, b"second");
}

#[test]
fn a_handler_that_refuses_its_state_is_reported_and_the_queues_still_go_out() {
    #[derive(Default)]
    struct Picky;
    impl Handler for Picky {
        fn restore(&mut self, _io: &mut Io, _state: &[u8]) -> Result<(), crate::BadSnapshot> {
            Err(crate::BadSnapshot::new("not my format"))
        }
    }
    let mut old = generation_with_queue(b"still mine");
    old.handler().state = b"someone else's".to_vec();
    let snapshot = old.snapshot();

    let mut host = FakeHost::default();
    host.add_conn(C, 100).interest = (true, true);
    let mut new = Runtime::new(Picky, host);
    let error = new.restore(&snapshot).expect_err("the handler refused");
    assert!(error.contains("not my format"), "{error}");
    deliver(&mut new, vec![Ev::Adopted(C)]);
    assert_eq!(new.io().host().conn(C).written, b"still mine");
}
