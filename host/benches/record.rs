//! What `--record` costs, against the floor: a minimal plain-mio HTTP server
//! (`minimal_http.rs`), the `http` guest without recording, and with `--record` at
//! 100 % and at 10 % (`--record-sample 10`), taking turns in every round; then the
//! tape bytes per request, and how fast `host replay` runs the tapes back.
//!
//! `cargo bench --bench record` (optionally `-- ROUNDS REQUESTS`: 7 rounds of
//! 200,000 keep-alive requests over 50 connections by default). Servers on CPU 0,
//! the load client on CPU 1; the figure that shows the cost is the server's CPU
//! time (user + sys, all threads: the tape writer's included) per request.

#[path = "minimal_http.rs"]
mod minimal_http;
#[path = "process.rs"]
mod process;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use process::{
    cpu_time, keep_alive_load, listening_addr, median, pin_to_cpu, rounds_and_requests, spawn,
};

const CONNECTIONS: usize = 50;
const WARM_UP_REQUESTS: u64 = 20_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Minimal,
    Guest,
    RecordAll,
    RecordTenth,
}

const SERVERS: [Server; 4] = [
    Server::Minimal,
    Server::Guest,
    Server::RecordAll,
    Server::RecordTenth,
];

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Minimal => "minimal mio",
            Server::Guest => "host wasm",
            Server::RecordAll => "wasm, --record 100%",
            Server::RecordTenth => "wasm, --record 10%",
        }
    }

    fn sample(self) -> Option<&'static str> {
        match self {
            Server::RecordAll => Some("100"),
            Server::RecordTenth => Some("10"),
            _ => None,
        }
    }
}

struct Sample {
    requests_per_sec: f64,
    cpu_per_request: Duration,
    /// With --record: the tapes' bytes per request (warm-up included).
    tape_bytes_per_request: Option<f64>,
}

fn main() {
    if let Ok(addr) = std::env::var(minimal_http::SERVE_AT) {
        minimal_http::serve(addr.parse().expect("the minimal server's address"));
    }
    let (rounds, requests) = rounds_and_requests(7, 200_000);
    let requests = requests as u64;
    let pinned = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if pinned {
        pin_to_cpu(1);
    }
    let base = std::env::temp_dir().join(format!("sandsock-bench-record-{}", std::process::id()));
    println!(
        "record benchmark: {rounds} rounds of {requests} keep-alive requests, {CONNECTIONS} connections"
    );
    let mut samples: Vec<Vec<Sample>> = SERVERS.iter().map(|_| Vec::new()).collect();
    let mut last_tapes = None;
    for round in 0..rounds {
        for k in 0..SERVERS.len() {
            let i = (round + k) % SERVERS.len();
            let dir = base.join(format!("round-{round}-{i}"));
            let sample = measure(SERVERS[i], requests, pinned, &dir);
            println!(
                "round {round} {:<22} {:>9.0} requests/s  {:>7.2} µs CPU/request{}",
                SERVERS[i].name(),
                sample.requests_per_sec,
                sample.cpu_per_request.as_secs_f64() * 1e6,
                sample
                    .tape_bytes_per_request
                    .map_or(String::new(), |b| format!("  {b:.1} tape bytes/request"))
            );
            samples[i].push(sample);
            if SERVERS[i] == Server::RecordAll {
                if let Some(old) = last_tapes.replace(dir) {
                    let _ = std::fs::remove_dir_all(old);
                }
            } else {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    let cpu: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().map(|s| s.cpu_per_request.as_secs_f64()).collect()))
        .collect();
    let rps: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().map(|s| s.requests_per_sec).collect()))
        .collect();
    println!(
        "\nmedian: {:>26} {:>11} {:>11} {:>13}",
        "requests/s", "µs CPU/req", "× minimal", "× no record"
    );
    for (i, server) in SERVERS.iter().enumerate() {
        println!(
            "  {:<22} {:>11.0} {:>11.2} {:>11.3} {:>13.3}",
            server.name(),
            rps[i],
            cpu[i] * 1e6,
            cpu[i] / cpu[0],
            cpu[i] / cpu[1]
        );
    }
    for (i, server) in SERVERS.iter().enumerate() {
        let bytes: Vec<f64> = samples[i]
            .iter()
            .filter_map(|s| s.tape_bytes_per_request)
            .collect();
        if !bytes.is_empty() {
            println!(
                "  {}: {:.1} tape bytes per request (median)",
                server.name(),
                median(bytes)
            );
        }
    }
    if let Some(dir) = last_tapes {
        replay_speed(&dir, requests + WARM_UP_REQUESTS);
        let _ = std::fs::remove_dir_all(&base);
    }
}

fn measure(server: Server, requests: u64, pinned: bool, dir: &Path) -> Sample {
    let mut child = start(server, pinned, dir);
    let addr = listening_addr(&mut child);
    let load = |n: u64| keep_alive_load(addr, CONNECTIONS, n);
    load(WARM_UP_REQUESTS);
    let cpu_before = cpu_time(child.id());
    let report = load(requests);
    let cpu = cpu_time(child.id()) - cpu_before;
    stop(&mut child);
    let tape_bytes_per_request = server
        .sample()
        .map(|_| dir_bytes(dir) as f64 / (requests + WARM_UP_REQUESTS) as f64);
    Sample {
        requests_per_sec: report.requests_per_sec(),
        cpu_per_request: cpu / requests as u32,
        tape_bytes_per_request,
    }
}

fn start(server: Server, pinned: bool, dir: &Path) -> Child {
    if server == Server::Minimal {
        let me = std::env::current_exe().expect("this benchmark's binary");
        return spawn(
            &me.to_string_lossy(),
            &[],
            &[(minimal_http::SERVE_AT, "127.0.0.1:0")],
            pinned,
        );
    }
    let dir = dir.to_string_lossy().into_owned();
    let mut args = vec!["--guest", "http", "--listen", "127.0.0.1:0"];
    if let Some(sample) = server.sample() {
        args.extend(["--record", &dir, "--record-sample", sample]);
    }
    spawn(env!("CARGO_BIN_EXE_host"), &args, &[], pinned)
}

/// SIGTERM, and a wait: the tapes are whole once the host has exited.
fn stop(child: &mut Child) {
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// `host replay DIR --guest http` over the last 100 % round's tapes: requests
/// replayed per second (compiling the guest included).
fn replay_speed(dir: &Path, requests: u64) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["replay", &dir.to_string_lossy(), "--guest", "http"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run host replay");
    let elapsed = started.elapsed();
    let summary = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    println!(
        "\nreplay of one 100% round's tapes ({requests} requests, {} bytes): {:.2}s, {:.0} requests/s\n  {summary}",
        dir_bytes(dir),
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
}
