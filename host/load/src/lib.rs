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
//!
//! The crate is `host load`'s engine, and the benchmarks' load client:
//! - [`client`]: one client slot, driven through its requests;
//! - [`transport`]: its connection, plain or TLS;
//! - [`protocol`] and [`inbox`]: the request, and how each answer is checked;
//! - [`report`]: the tallies and the [`LoadReport`];
//! - [`progress`]: the progress bar or lines.
#![deny(missing_docs)]

mod client;
mod inbox;
mod progress;
mod protocol;
mod report;
mod transport;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mio::{Events, Poll};

use client::{CLIENT_SLOT_BITS, Client, Shared, split_token};
use progress::Progress;
use protocol::Protocol;
pub use report::LoadReport;
use report::Stats;
use transport::TlsClient;

/// Longest `--timeout`, in seconds (a week): keeps the deadline arithmetic far from overflow.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Most readiness events taken from one poll.
const EVENTS_PER_POLL: usize = 1024;
/// Longest poll wait, so progress and the timeout are looked at even when nothing happens.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Arguments of `host load` (clap derive; the host's command line embeds them as a
/// subcommand's).
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
    /// Speak TLS, trusting the CA certificate(s) in this PEM file; every connection
    /// makes a full handshake (no session resumption)
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The server name a TLS client asks for and checks the certificate against
    #[arg(
        long,
        value_name = "NAME",
        default_value = "localhost",
        requires = "tls_ca"
    )]
    pub tls_server_name: String,
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
        args.connections < 1 << CLIENT_SLOT_BITS,
        "load {addr}: --connections must be below {}",
        1u64 << CLIENT_SLOT_BITS
    );
    ensure!(
        (1..=MAX_TIMEOUT_SECS).contains(&args.timeout_secs),
        "load {addr}: --timeout must be 1 to {MAX_TIMEOUT_SECS} seconds"
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    let tls = match &args.tls_ca {
        Some(ca) => Some(
            TlsClient::new(ca, &args.tls_server_name).with_context(|| format!("load {addr}"))?,
        ),
        None => None,
    };
    let mut shared = Shared {
        protocol: Protocol::new(args),
        addr,
        tls,
        keep_alive: !args.close,
        total: args.requests,
        issued: 0,
        in_flight: 0,
        stats: Stats::new(timeout).with_context(|| format!("load {addr}"))?,
    };
    let mut poll = Poll::new().with_context(|| format!("load {addr}: creating the poll"))?;
    let slots =
        usize::try_from(args.requests).map_or(args.connections, |n| n.min(args.connections));
    let mut clients: Vec<Client> = (0..slots).map(Client::new).collect();
    let mut progress = Progress::new(args);

    let start = Instant::now();
    for client in &mut clients {
        client.take_next(poll.registry(), &mut shared);
        client.advance(poll.registry(), &mut shared);
    }
    let timed_out = drive(
        &mut poll,
        &mut clients,
        &mut shared,
        &mut progress,
        start + timeout,
    )
    .with_context(|| format!("load {addr}"))?;
    if timed_out {
        let message = format!("timed out after {}s", args.timeout_secs);
        for client in &mut clients {
            client.abandon(&message, poll.registry(), &mut shared);
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
    clients: &mut [Client],
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
            if let Some(client) = clients.get_mut(slot)
                && client.generation == generation
            {
                client.advance(poll.registry(), shared);
            }
        }
    }
}
