//! What a binary upgrade costs: the time from `SIGUSR2` to the new process serving
//! and to the old one's exit, and the requests/s of connection-per-request load while
//! upgrades run, against the same load on the same host without upgrades and on the
//! floor (a minimal plain-mio server, `minimal_http.rs`). Every answer is checked: a
//! request an upgrade lost fails the benchmark.
//!
//! `cargo bench --bench upgrade` (optionally `-- ROUNDS REQUESTS`: 5 rounds of 60,000
//! requests over 16 connections, a new connection per request). In the upgrading
//! rows an upgrade starts every 100 ms while the load runs (each waits for the one
//! before it to finish). Nothing is pinned: an upgrade starts processes, and the old
//! and the new one share the CPUs with the client.

#[path = "minimal_http.rs"]
mod minimal_http;
#[path = "process.rs"]
mod process;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process::{checked_load, median, rounds_and_requests};
use sandsock_load::LoadReport;

const CONNECTIONS: usize = 16;
/// How often an upgrade starts while the load runs.
const UPGRADE_EVERY: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(60);

/// A host started from a copy of the binary, and what its processes log.
struct Upgradable {
    first: Child,
    addr: SocketAddr,
    /// The pid serving now.
    serving: u32,
    /// Every process's stderr lines, in order (the new processes inherit the pipe).
    lines: Receiver<String>,
    seen: Vec<String>,
    /// Every pid started, killed at the end.
    started: Vec<u32>,
}

impl Upgradable {
    fn start(binary: &Path) -> Self {
        let mut first = Command::new(binary)
            .args(["--guest", "http", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the host");
        let stderr = first.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let serving = first.id();
        let mut host = Self {
            first,
            addr: "127.0.0.1:0".parse().unwrap(),
            serving,
            lines,
            seen: Vec::new(),
            started: vec![serving],
        };
        let line = host.wait_for("listening on ");
        host.addr = line
            .rsplit("listening on ")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        host
    }

    /// The next line holding `needle`, skipping the others.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{needle}` in the log:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            if line.contains("upgrade failed") {
                panic!("{line}");
            }
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// One upgrade: (ms to the new process serving, ms to the old one's exit), as
    /// the two processes measured them.
    fn upgrade(&mut self) -> (f64, f64) {
        // SAFETY: kill has no memory preconditions; `serving` is a host we started.
        unsafe { libc::kill(self.serving as libc::pid_t, libc::SIGUSR2) };
        let serving = self.wait_for("upgrade: serving; took over");
        let exited = self.wait_for("upgrade: the old process exits");
        self.serving = field(&serving, "pid").parse().unwrap();
        self.started.push(self.serving);
        (
            field(&serving, "serving_ms").parse().unwrap(),
            field(&exited, "took_ms").parse().unwrap(),
        )
    }
}

impl Drop for Upgradable {
    fn drop(&mut self) {
        for &pid in &self.started {
            // SAFETY: as above; these are hosts this benchmark started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.first.wait();
    }
}

/// `name=VALUE` of a text log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let at = line.find(&format!(" {name}=")).expect("the field");
    line[at + name.len() + 2..]
        .split_whitespace()
        .next()
        .unwrap()
}

fn load(addr: SocketAddr, requests: u64) -> LoadReport {
    checked_load(addr, CONNECTIONS, requests, true)
}

fn main() {
    if let Ok(addr) = std::env::var(minimal_http::SERVE_AT) {
        minimal_http::serve(addr.parse().expect("the minimal server's address"));
    }
    let (rounds, requests) = rounds_and_requests(5, 60_000);
    let requests = requests as u64;
    let dir = std::env::temp_dir().join(format!("sandsock-bench-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.join("host");
    std::fs::copy(env!("CARGO_BIN_EXE_host"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    println!(
        "upgrade benchmark: {rounds} rounds of {requests} requests, {CONNECTIONS} connections, a new connection per request"
    );

    let mut minimal = Command::new(std::env::current_exe().unwrap())
        .env(minimal_http::SERVE_AT, "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the minimal server");
    let minimal_addr = process::listening_addr(&mut minimal);
    let host = Arc::new(Mutex::new(Upgradable::start(&binary)));
    let addr = host.lock().unwrap().addr;

    // Idle: nothing to finish, so the old process's exit is the handover's end.
    let idle: Vec<(f64, f64)> = (0..10).map(|_| host.lock().unwrap().upgrade()).collect();

    let (mut floor, mut plain, mut upgrading, mut busy) = (vec![], vec![], vec![], vec![]);
    let mut upgrades = 0;
    for round in 0..rounds {
        floor.push(load(minimal_addr, requests).requests_per_sec());
        let without = load(addr, requests);
        plain.push(without.requests_per_sec());
        let done = Arc::new(AtomicBool::new(false));
        let upgrader = {
            let (host, done) = (host.clone(), done.clone());
            std::thread::spawn(move || {
                let mut times = Vec::new();
                while !done.load(Ordering::Acquire) {
                    std::thread::sleep(UPGRADE_EVERY);
                    if !done.load(Ordering::Acquire) {
                        times.push(host.lock().unwrap().upgrade());
                    }
                }
                times
            })
        };
        let report = load(addr, requests);
        done.store(true, Ordering::Release);
        let times = upgrader.join().unwrap();
        upgrades += times.len();
        busy.extend(times);
        upgrading.push(report.requests_per_sec());
        let p99 = |r: &LoadReport| r.latency.value_at_quantile(0.99) as f64 / 1000.0;
        println!(
            "round {}: floor {:.0}/s, host {:.0}/s (p99 {:.2} ms), upgrading {:.0}/s (p99 {:.2} ms, {} upgrades so far)",
            round + 1,
            floor[round],
            plain[round],
            p99(&without),
            upgrading[round],
            p99(&report),
            busy.len(),
        );
    }
    let _ = minimal.kill();
    let _ = minimal.wait();
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);

    let ms = |values: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        median(values.iter().map(pick).collect())
    };
    println!();
    println!("{:<34} {:>12}", "requests/s (median)", "");
    println!("{:<34} {:>12.0}", "minimal mio", median(floor.clone()));
    println!("{:<34} {:>12.0}", "host wasm", median(plain.clone()));
    println!(
        "{:<34} {:>12.0}",
        "host wasm, upgrading every 100 ms",
        median(upgrading.clone())
    );
    println!(
        "ratios: upgrading/plain {:.2}x, plain/floor {:.2}x ({upgrades} upgrades under load, 0 failed requests)",
        median(upgrading) / median(plain.clone()),
        median(plain) / median(floor),
    );
    println!(
        "SIGUSR2 to the new process serving: {:.1} ms idle, {:.1} ms under load (medians)",
        ms(&idle, |t| t.0),
        ms(&busy, |t| t.0)
    );
    println!(
        "SIGUSR2 to the old process's exit:  {:.1} ms idle, {:.1} ms under load (medians)",
        ms(&idle, |t| t.1),
        ms(&busy, |t| t.1)
    );
}
