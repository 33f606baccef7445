//! Guests in Python and JavaScript against the same guests in Rust and against the
//! floor (the minimal plain-mio HTTP server of `minimal_http.rs`): component size,
//! start to `listening on` with an empty and with a warm compiled-component cache, and
//! the server's CPU time per request (keep-alive, echo and HTTP), all in one run.
//!
//! `cargo bench --bench languages` (optionally `-- ROUNDS REQUESTS`: 5 rounds of
//! 100,000 requests by default). It first builds the Python and JavaScript guests with
//! their `build.sh` (installing the toolchains into cargo's target directory once).
//! Servers take turns in every round in a rotating order, pinned to CPU 0, the load
//! client to CPU 1; medians, and ratios from this one run (single rounds swing by 15%
//! on a shared 2-core machine).

#[path = "minimal_http.rs"]
mod minimal_http;
#[path = "process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use process::{cpu_time, listening_addr, median, pin_to_cpu, spawn};
use sandsock_load::{LoadArgs, run};

const CONNECTIONS: usize = 50;
const WARM_UP_REQUESTS: u64 = 10_000;
const FIRST_STARTS: usize = 3;
const CACHED_STARTS: usize = 5;

/// A server of one row: the minimal one, or the host serving a guest.
#[derive(Clone)]
struct Server {
    name: String,
    /// `None` for the minimal server; else what `--guest` is given.
    guest: Option<String>,
}

fn main() {
    if let Ok(addr) = std::env::var(minimal_http::SERVE_AT) {
        minimal_http::serve(addr.parse().expect("the minimal server's address"));
    }
    let mut numbers = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let rounds: usize = numbers.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let requests: u64 = numbers
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let python = build("python", &tmp);
    let js = build("js", &tmp);
    let pinned = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if pinned {
        pin_to_cpu(1);
    }
    let cache = tmp.join("bench-languages-cache");

    println!(
        "\ncomponent size, and spawn to `listening on` (median of {FIRST_STARTS} with an empty cache, {CACHED_STARTS} warm):"
    );
    println!(
        "  {:<12} {:>10} {:>12} {:>12}",
        "guest", "MB", "first (s)", "cached (ms)"
    );
    for (name, path) in [
        ("rust http", builtin("http", &tmp)),
        ("python http", python.join("http.wasm")),
        ("js http", js.join("http.wasm")),
    ] {
        let size = std::fs::metadata(&path).expect("a built guest").len() as f64 / 1e6;
        let first = median(
            (0..FIRST_STARTS)
                .map(|i| {
                    let empty = tmp.join(format!("bench-languages-empty-{i}"));
                    let _ = std::fs::remove_dir_all(&empty);
                    start_time(&path, &empty).as_secs_f64()
                })
                .collect(),
        );
        let _ = start_time(&path, &cache);
        let cached = median(
            (0..CACHED_STARTS)
                .map(|_| start_time(&path, &cache).as_secs_f64())
                .collect(),
        );
        println!(
            "  {name:<12} {size:>10.2} {:>12.2} {:>12.1}",
            first,
            cached * 1e3
        );
    }

    let guest = |name: &str, guest: String| Server {
        name: name.into(),
        guest: Some(guest),
    };
    let path = |dir: &Path, name: &str| dir.join(format!("{name}.wasm")).display().to_string();
    let http = [
        Server {
            name: "minimal mio".into(),
            guest: None,
        },
        guest("rust http", "http".into()),
        guest("python http", path(&python, "http")),
        guest("js http", path(&js, "http")),
    ];
    let echo = [
        guest("rust echo", "echo".into()),
        guest("python echo", path(&python, "echo")),
        guest("js echo", path(&js, "echo")),
    ];
    for (mode, servers, is_http) in [("HTTP", &http[..], true), ("echo", &echo[..], false)] {
        println!(
            "\n{mode}, keep-alive, {CONNECTIONS} connections, {requests} requests per round, {rounds} rounds:"
        );
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        let mut rps: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        for round in 0..rounds {
            for k in 0..servers.len() {
                let i = (round + k) % servers.len();
                let (r, c) = measure(&servers[i], is_http, requests, pinned, &cache);
                println!(
                    "round {round} {:<14} {r:>9.0} requests/s {:>8.2} µs CPU/request",
                    servers[i].name,
                    c * 1e6
                );
                rps[i].push(r);
                cpu[i].push(c);
            }
        }
        let medians: Vec<(f64, f64)> = rps
            .into_iter()
            .zip(cpu)
            .map(|(r, c)| (median(r), median(c)))
            .collect();
        let rust = if is_http { medians[1].1 } else { medians[0].1 };
        println!(
            "median, {mode}: {:>20} {:>11} {:>9} {:>11}",
            "requests/s", "µs CPU/req", "× Rust", "× minimal"
        );
        for (server, (r, c)) in servers.iter().zip(&medians) {
            let floor = if is_http {
                format!("{:.2}", c / medians[0].1)
            } else {
                "-".into()
            };
            println!(
                "  {:<14} {r:>21.0} {:>11.2} {:>9.2} {floor:>11}",
                server.name,
                c * 1e6,
                c / rust
            );
        }
    }
}

/// Builds `language`'s guests with its build.sh into a directory of the target's.
fn build(language: &str, tmp: &Path) -> PathBuf {
    let out = tmp.join(format!("bench-{language}-guests"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("guest/{language}/build.sh"));
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .env("SANDSOCK_TOOLS", tmp.join("guest-tools"))
        .status()
        .expect("run build.sh");
    assert!(status.success(), "{} failed", script.display());
    println!(
        "built the {language} guests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    out
}

/// A built-in example, written out as a file (so that its start compiles it).
fn builtin(name: &str, tmp: &Path) -> PathBuf {
    let dir = tmp.join("bench-builtin-guests");
    let status = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["examples", "--out"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run host examples");
    assert!(status.success(), "host examples --out failed");
    dir.join(format!("{name}.wasm"))
}

/// Spawn to `listening on`, with `cache` as the compiled-component cache.
fn start_time(guest: &Path, cache: &Path) -> Duration {
    let started = Instant::now();
    let mut child = host(guest.to_str().unwrap(), cache, false);
    listening_addr(&mut child);
    let took = started.elapsed();
    stop(child);
    took
}

fn host(guest: &str, cache: &Path, pinned: bool) -> Child {
    spawn(
        env!("CARGO_BIN_EXE_host"),
        &["--guest", guest, "--listen", "127.0.0.1:0"],
        &[("XDG_CACHE_HOME", cache.to_str().unwrap())],
        pinned,
    )
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One round of one server: requests/s and CPU seconds per request.
fn measure(server: &Server, http: bool, requests: u64, pinned: bool, cache: &Path) -> (f64, f64) {
    let mut child = match &server.guest {
        None => spawn(
            &std::env::current_exe()
                .expect("this benchmark's binary")
                .to_string_lossy(),
            &[],
            &[(minimal_http::SERVE_AT, "127.0.0.1:0")],
            pinned,
        ),
        Some(guest) => host(guest, cache, pinned),
    };
    let addr = listening_addr(&mut child);
    let load = |n: u64| {
        let report = run(&LoadArgs {
            addr,
            connections: CONNECTIONS,
            requests: n,
            http,
            payload: "ping".into(),
            close: false,
            timeout_secs: 300,
            quiet: true,
            tls_ca: None,
            tls_server_name: "localhost".into(),
        })
        .expect("load run");
        assert_eq!(
            report.errors, 0,
            "the benchmark's load saw errors:\n{report}"
        );
        report
    };
    load(WARM_UP_REQUESTS.min(requests));
    let before = cpu_time(child.id());
    let report = load(requests);
    let cpu = cpu_time(child.id()) - before;
    stop(child);
    (
        report.requests_per_sec(),
        cpu.as_secs_f64() / requests as f64,
    )
}
