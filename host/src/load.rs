//! `host load ADDR`: many concurrent non-blocking clients on one mio loop, every answer checked.
//!
//! One thread drives `-c` connections through `-n` requests handed out from one counter.
//! A connection sends one request at a time (no pipelining) and checks the whole answer
//! before it takes the next: in echo mode the payload line must come back byte for byte,
//! in HTTP mode the response must be a 200 with exactly `Content-Length` body bytes.
//! A failed request is counted, the first few messages are kept, and the connection is
//! replaced, so one failure does not end the run.
//!
//! Steady state allocates nothing per request: the request bytes are built once and shared
//! by every connection (a connection only keeps how much of them it has written), and each
//! connection reuses one read buffer.

use std::fmt;
use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

/// Bytes of response a connection can hold unparsed: bounds an HTTP response head (8 KiB,
/// the common server limit for request heads). Echo answers are checked as they arrive,
/// so their size is not bounded by it.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Longest `--timeout`, in seconds (a week): keeps the deadline arithmetic far from overflow.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// How many error messages a report keeps; the rest are only counted.
const KEPT_ERRORS: usize = 5;
/// Most headers an HTTP response head may have.
const MAX_HEADERS: usize = 64;
/// Most readiness events taken from one poll.
const EVENTS_PER_POLL: usize = 1024;
/// Longest poll wait, so progress and the timeout are looked at even when nothing happens.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How often the progress bar is updated.
const BAR_REFRESH: Duration = Duration::from_millis(100);
/// How often a plain progress line is printed when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(1);
/// errno for "too many open files" (the same on Linux, macOS and the BSDs): hinted at, since
/// `-c` past the descriptor limit fails every connect beyond it.
const EMFILE: i32 = 24;
/// Low bits of a mio token that name the connection slot; the high bits hold the slot's
/// generation, so events of a socket closed earlier in the same batch are ignored.
const SLOT_BITS: u32 = 24;

/// Arguments of `host load` (clap derive; the host's cli.rs embeds it as a subcommand's args).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Address of the server, e.g. 127.0.0.1:8080
    pub addr: SocketAddr,
    /// Concurrent connections
    #[arg(short = 'c', long = "connections", default_value_t = 50)]
    pub connections: usize,
    /// Requests in total
    #[arg(short = 'n', long = "requests", default_value_t = 10_000)]
    pub requests: u64,
    /// HTTP: send `GET / HTTP/1.1` and check one 200 response per request
    #[arg(long)]
    pub http: bool,
    /// Line sent per request (echo mode, the default); must come back byte for byte
    #[arg(long, default_value = "ping")]
    pub payload: String,
    /// Open a new connection per request instead of keep-alive
    #[arg(long)]
    pub close: bool,
    /// Give up after this many seconds; requests still in flight then count as errors
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 60)]
    pub timeout_secs: u64,
    /// No progress output (a plain line per second is used when stderr is not a terminal)
    #[arg(long)]
    pub quiet: bool,
}

/// What a run measured.
pub struct LoadReport {
    /// Requests answered correctly.
    pub requests: u64,
    /// Requests that failed: wrong answer, reset, early EOF, connect error, or in flight at the timeout.
    pub errors: u64,
    /// Bytes written to the server.
    pub bytes_sent: u64,
    /// Bytes read from the server.
    pub bytes_received: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of the correct requests, in microseconds: from the request's first write to
    /// its complete response, or with `--close` from the start of its connect.
    pub latency: Histogram<u64>,
    /// Requests asked for (`-n`); `planned - requests - errors` were never sent (timeout).
    pub planned: u64,
    /// Whether the run was stopped by `--timeout`.
    pub timed_out: bool,
    /// The first few error messages, each naming the connection and where its request stood.
    pub first_errors: Vec<String>,
}

impl LoadReport {
    /// Correct requests per second of wall time.
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// Requests never sent because the run stopped at the timeout.
    fn not_sent(&self) -> u64 {
        self.planned.saturating_sub(self.requests + self.errors)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "requests/s:     {:.0} ({:.2}s)",
            self.requests_per_sec(),
            self.elapsed.as_secs_f64()
        )?;
        write!(f, "requests ok:    {} of {}", self.requests, self.planned)?;
        match self.not_sent() {
            0 => writeln!(f)?,
            n => writeln!(f, " ({n} never sent)")?,
        }
        writeln!(f, "errors:         {}", self.errors)?;
        writeln!(f, "bytes sent:     {}", self.bytes_sent)?;
        writeln!(f, "bytes received: {}", self.bytes_received)?;
        if self.latency.is_empty() {
            write!(f, "latency:        none measured")?;
        } else {
            let at = |q| Micros(self.latency.value_at_quantile(q));
            write!(
                f,
                "latency:        p50 {}  p90 {}  p99 {}  max {}",
                at(0.5),
                at(0.9),
                at(0.99),
                Micros(self.latency.max())
            )?;
        }
        if self.timed_out {
            write!(f, "\nstopped at the timeout")?;
        }
        if !self.first_errors.is_empty() {
            write!(f, "\nfirst errors:")?;
            for message in &self.first_errors {
                write!(f, "\n  {message}")?;
            }
        }
        Ok(())
    }
}

/// A latency in microseconds, shown in the unit that reads best.
struct Micros(u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            us @ 0..1_000 => write!(f, "{us}µs"),
            us @ 1_000..1_000_000 => write!(f, "{:.2}ms", us as f64 / 1e3),
            us => write!(f, "{:.2}s", us as f64 / 1e6),
        }
    }
}

/// Runs the load, printing progress (indicatif bar on a terminal, a plain line per second
/// otherwise, nothing with quiet).
///
/// Failed requests are counted in the report, not returned as errors; an `Err` means the
/// load could not run at all (bad arguments, no poll instance).
pub fn run(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let addr = args.addr;
    ensure!(
        args.connections >= 1,
        "load {addr}: --connections must be at least 1"
    );
    ensure!(
        args.connections < 1 << SLOT_BITS,
        "load {addr}: --connections must be below {}",
        1u64 << SLOT_BITS
    );
    ensure!(
        (1..=MAX_TIMEOUT_SECS).contains(&args.timeout_secs),
        "load {addr}: --timeout must be 1 to {MAX_TIMEOUT_SECS} seconds"
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut shared = Shared {
        protocol: Protocol::new(args),
        addr,
        keep_alive: !args.close,
        total: args.requests,
        issued: 0,
        in_flight: 0,
        stats: Stats::new(timeout).with_context(|| format!("load {addr}"))?,
    };
    let mut poll = Poll::new().with_context(|| format!("load {addr}: creating the poll"))?;
    let slots =
        usize::try_from(args.requests).map_or(args.connections, |n| n.min(args.connections));
    let mut conns: Vec<Conn> = (0..slots).map(Conn::new).collect();
    let mut progress = Progress::new(args);

    let start = Instant::now();
    for conn in &mut conns {
        conn.take_next(poll.registry(), &mut shared);
        conn.advance(poll.registry(), &mut shared);
    }
    let timed_out = drive(
        &mut poll,
        &mut conns,
        &mut shared,
        &mut progress,
        start + timeout,
    )
    .with_context(|| format!("load {addr}"))?;
    if timed_out {
        let message = format!("timed out after {}s", args.timeout_secs);
        for conn in &mut conns {
            conn.abandon(&message, poll.registry(), &mut shared);
        }
    }
    let elapsed = start.elapsed();
    progress.finish();
    Ok(shared.stats.into_report(args.requests, elapsed, timed_out))
}

/// The event loop: polls and advances connections until every request is settled or the
/// deadline passes. Returns whether the deadline stopped it.
fn drive(
    poll: &mut Poll,
    conns: &mut [Conn],
    shared: &mut Shared,
    progress: &mut Progress,
    deadline: Instant,
) -> anyhow::Result<bool> {
    let mut events = Events::with_capacity(EVENTS_PER_POLL);
    loop {
        let now = Instant::now();
        progress.update(&shared.stats, shared.total, now);
        if shared.in_flight == 0 && shared.issued == shared.total {
            return Ok(false);
        }
        if now >= deadline {
            return Ok(true);
        }
        let wait = (deadline - now).min(POLL_WAIT);
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context("polling"),
        }
        for event in &events {
            let (slot, generation) = split_token(event.token());
            if let Some(conn) = conns.get_mut(slot)
                && conn.generation == generation
            {
                conn.advance(poll.registry(), shared);
            }
        }
    }
}

/// The state all connections share: what to send, where, the request counter and the tallies.
struct Shared {
    protocol: Protocol,
    addr: SocketAddr,
    /// Whether a connection carries more than one request (no `--close`).
    keep_alive: bool,
    /// Requests to issue in all (`-n`).
    total: u64,
    /// Requests handed out so far.
    issued: u64,
    /// Requests handed out and not yet settled.
    in_flight: u64,
    stats: Stats,
}

impl Shared {
    /// Hands out the next request, if any are left.
    fn take_request(&mut self) -> bool {
        if self.issued == self.total {
            return false;
        }
        self.issued += 1;
        self.in_flight += 1;
        true
    }
}

/// Tallies of the run.
struct Stats {
    ok: u64,
    errors: u64,
    bytes_sent: u64,
    bytes_received: u64,
    latency: Histogram<u64>,
    first_errors: Vec<String>,
}

impl Stats {
    /// Empty tallies; the histogram covers 1µs up to the larger of 60s and the timeout.
    fn new(timeout: Duration) -> anyhow::Result<Self> {
        let high =
            u64::try_from(timeout.max(Duration::from_secs(60)).as_micros()).unwrap_or(u64::MAX);
        Ok(Self {
            ok: 0,
            errors: 0,
            bytes_sent: 0,
            bytes_received: 0,
            latency: Histogram::new_with_bounds(1, high, 3)
                .context("creating the latency histogram")?,
            first_errors: Vec::with_capacity(KEPT_ERRORS),
        })
    }

    fn record_ok(&mut self, latency: Duration) {
        self.ok += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros);
    }

    /// Counts an error; the message is only built while fewer than [`KEPT_ERRORS`] are kept.
    fn record_error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            let message = message();
            tracing::debug!("load: {message}");
            self.first_errors.push(message);
        }
    }

    fn into_report(self, planned: u64, elapsed: Duration, timed_out: bool) -> LoadReport {
        LoadReport {
            requests: self.ok,
            errors: self.errors,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            elapsed,
            latency: self.latency,
            planned,
            timed_out,
            first_errors: self.first_errors,
        }
    }
}

/// Where a connection slot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No request: the run has none left for it.
    Idle,
    /// A request is waiting for the non-blocking connect to finish.
    Connecting,
    /// A request is being written and its response read.
    Active,
}

/// How a request ended.
enum Outcome {
    /// Answered correctly; `reusable` says whether the connection may carry another request.
    Done { reusable: bool },
    /// Failed, with the reason.
    Failed(String),
}

/// One of the `-c` client connection slots: its socket, where its request stands, and its
/// reused read buffer. A slot outlives its sockets: after a `--close` request or an error
/// it connects again for its next request.
struct Conn {
    id: usize,
    /// Bumped at every close, so a stale event for an earlier socket is not taken for this one.
    generation: usize,
    stream: Option<TcpStream>,
    phase: Phase,
    /// Bytes of the shared request written so far.
    written: usize,
    /// Response bytes read for the current request.
    received: u64,
    response: ResponseState,
    inbox: Inbox,
    /// When the current request started, for its latency.
    started: Instant,
    /// Requests completed on the current socket, for error messages.
    served: u64,
}

impl Conn {
    fn new(id: usize) -> Self {
        Self {
            id,
            generation: 0,
            stream: None,
            phase: Phase::Idle,
            written: 0,
            received: 0,
            response: ResponseState::Echo { matched: 0 },
            inbox: Inbox::new(READ_BUFFER_BYTES),
            started: Instant::now(),
            served: 0,
        }
    }

    fn token(&self) -> Token {
        Token((self.generation << SLOT_BITS) | self.id)
    }

    /// Moves the current request as far as it goes without blocking; settles it and takes the
    /// next one as often as answers are already there. Bounded: every pass that does not
    /// return settles one request.
    fn advance(&mut self, registry: &Registry, shared: &mut Shared) {
        loop {
            let outcome = match self.phase {
                Phase::Idle => return,
                Phase::Connecting => match self.connected() {
                    Ok(false) => return,
                    Ok(true) => {
                        self.phase = Phase::Active;
                        if shared.keep_alive {
                            // Keep-alive latency runs from the first write, not the connect.
                            self.started = Instant::now();
                        }
                        continue;
                    }
                    Err(message) => Outcome::Failed(message),
                },
                Phase::Active => match self.pump(shared) {
                    Ok(None) => return,
                    Ok(Some(reusable)) => Outcome::Done { reusable },
                    Err(message) => Outcome::Failed(message),
                },
            };
            self.settle(outcome, registry, shared);
            self.take_next(registry, shared);
        }
    }

    /// Whether the non-blocking connect has finished; `Err` if it failed.
    fn connected(&mut self) -> Result<bool, String> {
        let Some(stream) = &self.stream else {
            return Err("no socket".into());
        };
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(err)) | Err(err) => return Err(format!("connect failed: {err}")),
        }
        match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(err) => Err(format!("connect failed: {err}")),
        }
    }

    /// Writes what is left of the request, then reads what has arrived. `Ok(Some(reusable))`
    /// once the response is complete and correct, `Ok(None)` when waiting for readiness.
    fn pump(&mut self, shared: &mut Shared) -> Result<Option<bool>, String> {
        let Some(stream) = &mut self.stream else {
            return Err("no socket".into());
        };
        let request = &shared.protocol.request;
        let stats = &mut shared.stats;
        while self.written < request.len() {
            match stream.write(&request[self.written..]) {
                Ok(0) => return Err("write accepted no bytes".into()),
                Ok(n) => {
                    self.written += n;
                    stats.bytes_sent += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("write failed: {err}")),
            }
        }
        loop {
            let spare = self.inbox.spare();
            if spare.is_empty() {
                return Err(format!(
                    "response head larger than {READ_BUFFER_BYTES} bytes"
                ));
            }
            match stream.read(spare) {
                Ok(0) => {
                    return Err(
                        "connection closed by the server before the response was complete".into(),
                    );
                }
                Ok(n) => {
                    stats.bytes_received += n as u64;
                    self.received += n as u64;
                    self.inbox.filled(n);
                    if let Some(reusable) =
                        self.inbox.check(&shared.protocol, &mut self.response)?
                    {
                        // A response may finish before the request was all written (an HTTP
                        // server answering early); the rest must not open the next request.
                        return Ok(Some(reusable && self.written == request.len()));
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("read failed: {err}")),
            }
        }
    }

    /// Records how the current request ended and closes the socket unless it carries on.
    fn settle(&mut self, outcome: Outcome, registry: &Registry, shared: &mut Shared) {
        shared.in_flight -= 1;
        match outcome {
            Outcome::Done { reusable } => {
                shared.stats.record_ok(self.started.elapsed());
                self.served += 1;
                if !(reusable && shared.keep_alive) {
                    self.close(registry);
                }
            }
            Outcome::Failed(message) => {
                let request_len = shared.protocol.request.len();
                shared.stats.record_error(|| {
                    format!("{}: {message}", self.describe(shared.addr, request_len))
                });
                self.close(registry);
            }
        }
    }

    /// Takes the next request from the shared counter, connecting first if needed; goes idle
    /// when none are left. A connect that fails at once fails that request and takes another.
    fn take_next(&mut self, registry: &Registry, shared: &mut Shared) {
        while shared.take_request() {
            self.reset_request(&shared.protocol);
            if self.stream.is_some() {
                self.phase = Phase::Active;
                return;
            }
            match self.connect(registry, shared.addr) {
                Ok(()) => {
                    self.phase = Phase::Connecting;
                    return;
                }
                Err(message) => {
                    self.phase = Phase::Connecting;
                    self.settle(Outcome::Failed(message), registry, shared);
                }
            }
        }
        self.close(registry);
        self.phase = Phase::Idle;
    }

    /// Fails the request in flight, if any, with `message` (used at the timeout).
    fn abandon(&mut self, message: &str, registry: &Registry, shared: &mut Shared) {
        if self.phase != Phase::Idle {
            self.settle(Outcome::Failed(message.to_owned()), registry, shared);
            self.phase = Phase::Idle;
        }
    }

    fn reset_request(&mut self, protocol: &Protocol) {
        self.written = 0;
        self.received = 0;
        self.response = protocol.fresh_state();
        self.inbox.clear();
        self.started = Instant::now();
    }

    fn connect(&mut self, registry: &Registry, addr: SocketAddr) -> Result<(), String> {
        let mut stream = TcpStream::connect(addr).map_err(|err| {
            if err.raw_os_error() == Some(EMFILE) {
                format!("connect failed: {err} (each connection needs a descriptor: raise `ulimit -n` or lower -c)")
            } else {
                format!("connect failed: {err}")
            }
        })?;
        // Requests go out in one write and wait for their answer: never hold them back.
        stream
            .set_nodelay(true)
            .map_err(|err| format!("setting TCP_NODELAY: {err}"))?;
        registry
            .register(
                &mut stream,
                self.token(),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|err| format!("registering the socket: {err}"))?;
        self.stream = Some(stream);
        self.served = 0;
        Ok(())
    }

    fn close(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            // Dropping the socket closes it; deregistering first keeps the poll tidy.
            let _ = registry.deregister(&mut stream);
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// The connection and where its request stands, for an error message.
    fn describe(&self, addr: SocketAddr, request_len: usize) -> String {
        let local = match self.stream.as_ref().map(TcpStream::local_addr) {
            Some(Ok(local)) => local.to_string(),
            _ => "unbound".into(),
        };
        let state = match self.phase {
            Phase::Idle => "idle".to_owned(),
            Phase::Connecting => "connecting".to_owned(),
            Phase::Active if self.written < request_len => {
                format!("sending, {} of {request_len} bytes written", self.written)
            }
            Phase::Active => format!("receiving, {} response bytes so far", self.received),
        };
        format!(
            "conn {} to {addr} from {local}, request {} on this connection, {state}",
            self.id,
            self.served + 1
        )
    }
}

/// Splits a token into the connection slot and the generation it was registered with.
fn split_token(token: Token) -> (usize, usize) {
    (token.0 & ((1 << SLOT_BITS) - 1), token.0 >> SLOT_BITS)
}

/// The request every connection sends, built once, and how its answer is checked.
struct Protocol {
    request: Box<[u8]>,
    http: bool,
}

impl Protocol {
    fn new(args: &LoadArgs) -> Self {
        let request = if args.http {
            let connection = if args.close {
                "Connection: close\r\n"
            } else {
                ""
            };
            format!("GET / HTTP/1.1\r\nHost: {}\r\n{connection}\r\n", args.addr).into_bytes()
        } else {
            let mut line = args.payload.clone().into_bytes();
            line.push(b'\n');
            line
        };
        Self {
            request: request.into_boxed_slice(),
            http: args.http,
        }
    }

    /// The state of a response nothing of which has arrived yet.
    fn fresh_state(&self) -> ResponseState {
        if self.http {
            ResponseState::HttpHead
        } else {
            ResponseState::Echo { matched: 0 }
        }
    }

    /// Checks the next bytes of a response against what is expected. `data` starts where the
    /// previous call's `consumed` ended; it may hold a response's middle, its end, or its end
    /// followed by more (the caller decides what extra bytes mean).
    fn feed(&self, state: &mut ResponseState, data: &[u8]) -> Feed {
        if self.http {
            feed_http(state, data)
        } else {
            feed_echo(&self.request, state, data)
        }
    }
}

/// How far a response has been checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseState {
    /// Echo mode: this many bytes of the line came back right.
    Echo { matched: usize },
    /// HTTP mode: the head is not whole yet.
    HttpHead,
    /// HTTP mode: the head was a 200; this many body bytes are still due.
    HttpBody { remaining: u64, reusable: bool },
}

/// What feeding received bytes to [`Protocol::feed`] found.
#[derive(Debug, PartialEq, Eq)]
enum Feed {
    /// Not complete yet; the first `consumed` bytes are used up, the rest must be fed again
    /// with more (an HTTP head still in pieces).
    Partial { consumed: usize },
    /// Complete and correct after `consumed` bytes; `reusable` tells whether the server
    /// keeps the connection open for another request.
    Complete { consumed: usize, reusable: bool },
    /// Wrong, with the reason.
    Invalid(String),
}

/// Echo mode: the received bytes must be the next bytes of `expected`.
fn feed_echo(expected: &[u8], state: &mut ResponseState, data: &[u8]) -> Feed {
    let ResponseState::Echo { matched } = state else {
        return Feed::Invalid("echo check in an HTTP state".into());
    };
    let due = &expected[*matched..];
    let take = due.len().min(data.len());
    if let Some(at) = due.iter().zip(data).position(|(want, got)| want != got) {
        return Feed::Invalid(format!(
            "echo differs at byte {} of {}: expected '{}', got '{}' (read \"{}\")",
            *matched + at,
            expected.len(),
            due[at].escape_ascii(),
            data[at].escape_ascii(),
            data[..data.len().min(64)].escape_ascii()
        ));
    }
    *matched += take;
    if *matched == expected.len() {
        Feed::Complete {
            consumed: take,
            reusable: true,
        }
    } else {
        Feed::Partial { consumed: take }
    }
}

/// HTTP mode: a head (kept until it is whole), then `Content-Length` body bytes.
fn feed_http(state: &mut ResponseState, data: &[u8]) -> Feed {
    let (head_len, body) = match *state {
        ResponseState::HttpBody { .. } => (0, data),
        ResponseState::Echo { .. } => return Feed::Invalid("HTTP check in an echo state".into()),
        ResponseState::HttpHead => match parse_head(data) {
            Ok(None) => return Feed::Partial { consumed: 0 },
            Ok(Some(head)) => {
                *state = ResponseState::HttpBody {
                    remaining: head.content_length,
                    reusable: head.keep_alive,
                };
                (head.len, &data[head.len..])
            }
            Err(message) => return Feed::Invalid(message),
        },
    };
    let ResponseState::HttpBody {
        remaining,
        reusable,
    } = state
    else {
        unreachable!("the state was set to HttpBody above");
    };
    let take = usize::try_from(*remaining).map_or(body.len(), |due| due.min(body.len()));
    *remaining -= take as u64;
    let consumed = head_len + take;
    if *remaining == 0 {
        Feed::Complete {
            consumed,
            reusable: *reusable,
        }
    } else {
        Feed::Partial { consumed }
    }
}

/// A whole, acceptable HTTP response head.
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    content_length: u64,
    /// Whether the server keeps the connection open after this response.
    keep_alive: bool,
}

/// Parses a response head: `Ok(None)` while it is incomplete, `Err` unless it is a 200
/// with a `Content-Length` (chunked bodies are not supported).
fn parse_head(data: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => {
            return Err(format!(
                "bad response head ({err}): \"{}\"",
                data[..data.len().min(64)].escape_ascii()
            ));
        }
    };
    let code = response.code.unwrap_or(0);
    if code != 200 {
        return Err(format!(
            "status {code} {}, expected 200",
            response.reason.unwrap_or("")
        ));
    }
    let mut content_length = None;
    let mut keep_alive = response.version == Some(1);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = parse_content_length(header.value)?;
            if content_length.is_some_and(|seen| seen != value) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(
                "Transfer-Encoding responses are not supported; need Content-Length".into(),
            );
        } else if header.name.eq_ignore_ascii_case("connection") {
            if has_token(header.value, b"close") {
                keep_alive = false;
            } else if has_token(header.value, b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let content_length = content_length.ok_or("response has no Content-Length")?;
    Ok(Some(Head {
        len,
        content_length,
        keep_alive,
    }))
}

fn parse_content_length(value: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| format!("bad Content-Length \"{}\"", value.escape_ascii()))
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// A connection's read buffer: bytes read but not yet used up by the response check.
struct Inbox {
    buf: Box<[u8]>,
    len: usize,
}

impl Inbox {
    fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// The free space to read into.
    fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Marks `n` more bytes of the spare space as read.
    fn filled(&mut self, n: usize) {
        self.len += n;
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Feeds the held bytes to the check and drops what it used up. `Ok(Some(reusable))` when
    /// the response is complete; bytes beyond it are an error, since one request at a time is
    /// outstanding and the server had nothing else to answer.
    fn check(
        &mut self,
        protocol: &Protocol,
        state: &mut ResponseState,
    ) -> Result<Option<bool>, String> {
        match protocol.feed(state, &self.buf[..self.len]) {
            Feed::Partial { consumed } => {
                self.buf.copy_within(consumed..self.len, 0);
                self.len -= consumed;
                Ok(None)
            }
            Feed::Complete { consumed, reusable } => {
                let extra = self.len - consumed;
                self.len = 0;
                if extra > 0 {
                    return Err(format!("{extra} unexpected bytes after the response"));
                }
                Ok(Some(reusable))
            }
            Feed::Invalid(message) => Err(message),
        }
    }
}

/// Progress output: a bar on a terminal, a plain line per second otherwise, or nothing.
enum Progress {
    Quiet,
    Bar {
        bar: ProgressBar,
        next: Instant,
        errors: u64,
    },
    Lines {
        next: Instant,
    },
}

impl Progress {
    fn new(args: &LoadArgs) -> Self {
        let now = Instant::now();
        if args.quiet {
            Self::Quiet
        } else if io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{elapsed_precise} {wide_bar} {pos}/{len} requests, {rate}, {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
                let _ = write!(out, "{:.0}/s", state.per_sec());
            });
            let bar = ProgressBar::new(args.requests)
                .with_style(style)
                .with_message("0 errors");
            Self::Bar {
                bar,
                next: now,
                errors: 0,
            }
        } else {
            Self::Lines {
                next: now + LINE_INTERVAL,
            }
        }
    }

    fn update(&mut self, stats: &Stats, total: u64, now: Instant) {
        let done = stats.ok + stats.errors;
        match self {
            Self::Quiet => {}
            Self::Bar { bar, next, errors } if now >= *next => {
                *next = now + BAR_REFRESH;
                bar.set_position(done);
                if *errors != stats.errors {
                    *errors = stats.errors;
                    bar.set_message(format!("{} errors", stats.errors));
                }
            }
            Self::Bar { .. } => {}
            Self::Lines { next } if now >= *next => {
                *next = now + LINE_INTERVAL;
                eprintln!("load: {done}/{total} requests, {} errors", stats.errors);
            }
            Self::Lines { .. } => {}
        }
    }

    fn finish(&self) {
        if let Self::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(http: bool, payload: &str) -> Protocol {
        let args = LoadArgs {
            addr: "127.0.0.1:8080".parse().unwrap(),
            connections: 1,
            requests: 1,
            http,
            payload: payload.into(),
            close: false,
            timeout_secs: 1,
            quiet: true,
        };
        Protocol::new(&args)
    }

    /// Feeds `chunks` through an inbox as reads would deliver them; returns each outcome.
    fn deliver(protocol: &Protocol, chunks: &[&[u8]]) -> Vec<Result<Option<bool>, String>> {
        let mut inbox = Inbox::new(READ_BUFFER_BYTES);
        let mut state = protocol.fresh_state();
        let mut outcomes = Vec::new();
        for chunk in chunks {
            inbox.spare()[..chunk.len()].copy_from_slice(chunk);
            inbox.filled(chunk.len());
            let outcome = inbox.check(protocol, &mut state);
            if matches!(outcome, Ok(Some(_))) {
                state = protocol.fresh_state();
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!";

    #[test]
    fn echo_request_is_the_payload_line() {
        assert_eq!(&*protocol(false, "ping").request, b"ping\n");
    }

    #[test]
    fn http_request_names_the_host_and_close() {
        let mut args = LoadArgs {
            addr: "127.0.0.1:8080".parse().unwrap(),
            connections: 1,
            requests: 1,
            http: true,
            payload: String::new(),
            close: true,
            timeout_secs: 1,
            quiet: true,
        };
        assert_eq!(
            &*Protocol::new(&args).request,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
        );
        args.close = false;
        assert_eq!(
            &*Protocol::new(&args).request,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
    }

    #[test]
    fn echo_split_across_reads() {
        let p = protocol(false, "ping");
        let outcomes = deliver(&p, &[b"p", b"in", b"g", b"\n"]);
        assert_eq!(outcomes, vec![Ok(None), Ok(None), Ok(None), Ok(Some(true))]);
    }

    #[test]
    fn echo_mismatch_names_the_byte() {
        let p = protocol(false, "ping");
        let outcomes = deliver(&p, &[b"pi", b"xg\n"]);
        assert_eq!(outcomes[0], Ok(None));
        let message = outcomes[1].clone().unwrap_err();
        assert!(message.contains("byte 2 of 5"), "{message}");
        assert!(message.contains("expected 'n', got 'x'"), "{message}");
    }

    #[test]
    fn echo_coalesced_responses_are_consumed_one_at_a_time() {
        let p = protocol(false, "ping");
        let mut state = ResponseState::Echo { matched: 0 };
        let data = b"ping\nping\n";
        assert_eq!(
            p.feed(&mut state, data),
            Feed::Complete {
                consumed: 5,
                reusable: true
            }
        );
        let mut state = ResponseState::Echo { matched: 0 };
        assert_eq!(
            p.feed(&mut state, &data[5..]),
            Feed::Complete {
                consumed: 5,
                reusable: true
            }
        );
        // With one request outstanding, a second answer in the same read is an error.
        let outcome = deliver(&p, &[data]).remove(0);
        assert!(outcome.unwrap_err().contains("5 unexpected bytes"));
    }

    #[test]
    fn echo_short_line_then_more_is_fine() {
        let p = protocol(false, "a longer payload");
        assert_eq!(
            deliver(&p, &[b"a longer ", b"payload\n"]),
            vec![Ok(None), Ok(Some(true))]
        );
    }

    #[test]
    fn http_split_at_every_byte() {
        let p = protocol(true, "");
        for cut in 1..OK.len() {
            let outcomes = deliver(&p, &[&OK[..cut], &OK[cut..]]);
            assert_eq!(outcomes, vec![Ok(None), Ok(Some(true))], "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = OK.chunks(1).collect();
        let outcomes = deliver(&p, &bytes);
        assert_eq!(outcomes.last(), Some(&Ok(Some(true))));
        assert!(
            outcomes[..outcomes.len() - 1]
                .iter()
                .all(|o| *o == Ok(None))
        );
    }

    #[test]
    fn http_coalesced_responses_are_consumed_one_at_a_time() {
        let p = protocol(true, "");
        let both = [OK, OK].concat();
        let mut state = p.fresh_state();
        assert_eq!(
            p.feed(&mut state, &both),
            Feed::Complete {
                consumed: OK.len(),
                reusable: true
            }
        );
        let mut state = p.fresh_state();
        assert_eq!(
            p.feed(&mut state, &both[OK.len()..]),
            Feed::Complete {
                consumed: OK.len(),
                reusable: true
            }
        );
        // Read as one chunk with one request outstanding, the second is unexpected.
        let outcome = deliver(&p, &[&both]).remove(0);
        assert!(outcome.unwrap_err().contains("unexpected bytes"));
        // Head and body in separate reads, body split again.
        let outcomes = deliver(&p, &[&OK[..40], &OK[40..45], &OK[45..]]);
        assert_eq!(outcomes, vec![Ok(None), Ok(None), Ok(Some(true))]);
    }

    #[test]
    fn http_non_200_is_an_error() {
        let p = protocol(true, "");
        let response = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
        let message = deliver(&p, &[response]).remove(0).unwrap_err();
        assert!(message.contains("status 500"), "{message}");
    }

    #[test]
    fn http_connection_close_is_not_reusable() {
        let p = protocol(true, "");
        let response = b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(deliver(&p, &[response]), vec![Ok(Some(false))]);
        let response = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(deliver(&p, &[response]), vec![Ok(Some(false))]);
        let response = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(deliver(&p, &[response]), vec![Ok(Some(true))]);
    }

    #[test]
    fn http_without_content_length_or_chunked_is_an_error() {
        let p = protocol(true, "");
        let message = deliver(&p, &[b"HTTP/1.1 200 OK\r\n\r\n"])
            .remove(0)
            .unwrap_err();
        assert!(message.contains("no Content-Length"), "{message}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let message = deliver(&p, &[chunked]).remove(0).unwrap_err();
        assert!(message.contains("Transfer-Encoding"), "{message}");
        let message = deliver(&p, &[b"garbage\r\n\r\n"]).remove(0).unwrap_err();
        assert!(message.contains("bad response head"), "{message}");
    }

    #[test]
    fn http_zero_length_body_completes_with_the_head() {
        let p = protocol(true, "");
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(deliver(&p, &[response]), vec![Ok(Some(true))]);
    }

    #[test]
    fn oversized_head_fills_the_inbox() {
        let mut inbox = Inbox::new(32);
        let p = protocol(true, "");
        let mut state = p.fresh_state();
        let head = b"HTTP/1.1 200 OK\r\nX-Filler: aaaaaaaaaaaaa";
        let n = inbox.spare().len();
        inbox.spare().copy_from_slice(&head[..n]);
        inbox.filled(n);
        assert_eq!(inbox.check(&p, &mut state), Ok(None));
        assert!(inbox.spare().is_empty());
    }

    #[test]
    fn tokens_round_trip() {
        let mut conn = Conn::new(12345);
        conn.generation = 7;
        assert_eq!(split_token(conn.token()), (12345, 7));
    }

    #[test]
    fn report_shows_percentiles_and_errors() {
        let mut stats = Stats::new(Duration::from_secs(1)).unwrap();
        for micros in [100, 200, 300, 5_000] {
            stats.record_ok(Duration::from_micros(micros));
        }
        stats.record_error(|| "conn 0: boom".into());
        let report = stats.into_report(10, Duration::from_secs(2), false);
        assert_eq!(report.requests_per_sec(), 2.0);
        let text = report.to_string();
        assert!(
            text.contains("requests ok:    4 of 10 (5 never sent)"),
            "{text}"
        );
        assert!(text.contains("p50 200µs"), "{text}");
        assert!(text.contains("max 5.00ms"), "{text}");
        assert!(text.contains("conn 0: boom"), "{text}");
    }
}
