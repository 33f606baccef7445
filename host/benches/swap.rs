//! What a hot swap costs: its latency (trigger to the new generation serving) and
//! the requests/s a loaded server keeps while it swaps every 500 ms.
//!
//! `cargo bench --bench swap`. The latency is what the host logs for each swap
//! (`swap to generation N ... done took=...`): with `SIGHUP` it is the read, digest,
//! compile (or load from the compiled-component cache), check and swap; with `--watch`
//! it starts at the file's rename into place (a writer writing in place without
//! closing would add the 200 ms the file must stay unchanged). Each host gets a cache
//! directory of the benchmark's own: "cached" swaps go between two components both
//! compiled before; uncached ones (`--no-cache`) compile every time, with Cranelift,
//! or with Winch first (the tier-up's second swap, to Cranelift's code, follows and
//! is waited for, not timed).
//!
//! `--swap canary` (`cargo bench --bench swap -- --canary` for this part alone): the
//! serving generation's CPU per keep-alive request while a canary compares every new
//! connection (and a tenth of them) against none, in alternating rounds; and the time
//! from the trigger to the verdict for 100 connections under load (connections per
//! request from 50 clients).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use sandsock_load::{LoadArgs, run};

#[path = "process.rs"]
mod process;

use process::keep_alive_load;

const SWAPS: u32 = 20;
const LOAD_REQUESTS: u64 = 1_000_000;
/// Rounds of the requests/s comparison, taking turns: single runs swing by 15% here.
const ROUNDS: usize = 5;

fn main() {
    let dir = std::env::temp_dir().join(format!("sandsock-swap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guest.wasm");
    let guests = PathBuf::from(env!("SANDSOCK_GUEST_DIR"));
    let v1 = std::fs::read(guests.join("http.wasm")).unwrap();
    let v2 = std::fs::read(guests.join("http_v2.wasm")).unwrap();

    let cache = dir.join("cache");
    let cached = ["--cache-dir", cache.to_str().unwrap()];
    if std::env::args().any(|a| a == "--canary") {
        canary(&path, &v1, &cached);
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    let uncached = ["--no-cache", "--no-tier-up"];
    let baseline = ["--no-cache"];
    let sighup_uncached = swap_latencies(&path, &v1, &v2, false, &uncached);
    let sighup_baseline = swap_latencies(&path, &v1, &v2, false, &baseline);
    // Both components compiled once into the cache (by this run's swaps).
    let warm = ["--cache-dir", cache.to_str().unwrap(), "--no-tier-up"];
    let _ = swap_latencies(&path, &v1, &v2, false, &warm);
    let sighup_cached = swap_latencies(&path, &v1, &v2, false, &cached);
    let watch_cached = swap_latencies(&path, &v1, &v2, true, &cached);
    println!("swap latency, trigger to new generation serving (http example, {SWAPS} swaps):");
    println!(
        "  SIGHUP, Cranelift each time:             median {:>6.1} ms",
        median(&sighup_uncached)
    );
    println!(
        "  SIGHUP, Winch each time (then tier-up):  median {:>6.1} ms",
        median(&sighup_baseline)
    );
    println!(
        "  SIGHUP, from the cache:                  median {:>6.1} ms",
        median(&sighup_cached)
    );
    println!(
        "  --watch, renamed into place, cached:     median {:>6.1} ms",
        median(&watch_cached)
    );

    println!("requests/s, keep-alive HTTP, 50 connections, --swap handoff, median of {ROUNDS}:");
    let mut steady = Vec::new();
    let mut swapping = Vec::new();
    let mut swapping_uncached = Vec::new();
    for _ in 0..ROUNDS {
        steady.push(requests_per_sec(&path, &v1, &v2, false, &cached));
        swapping.push(requests_per_sec(&path, &v1, &v2, true, &cached));
        swapping_uncached.push(requests_per_sec(&path, &v1, &v2, true, &uncached));
    }
    let (steady, swapping, swapping_uncached) = (
        median(&steady),
        median(&swapping),
        median(&swapping_uncached),
    );
    println!("  no swaps:                             {steady:>9.0}");
    println!(
        "  a swap every 500 ms, from the cache:  {swapping:>9.0}  ratio {:.3}",
        swapping / steady
    );
    println!(
        "  a swap every 500 ms, compiling:       {swapping_uncached:>9.0}  ratio {:.3}",
        swapping_uncached / steady
    );
    canary(&path, &v1, &cached);
    let _ = std::fs::remove_dir_all(dir);
}

/// The canary's cost to the serving generation, and its time to a verdict.
fn canary(path: &Path, v1: &[u8], flags: &[&str]) {
    // The same code with one more custom section: a new digest, the same answers.
    let mut same = v1.to_vec();
    same.extend_from_slice(&[0, 6, 5, b'b', b'e', b'n', b'c', b'h']);
    println!(
        "--swap canary, keep-alive HTTP, 50 connections, {} requests, median of {ROUNDS}:",
        LOAD_REQUESTS / 5
    );
    let mut cpu: [Vec<f64>; 3] = Default::default();
    for round in 0..ROUNDS {
        for k in 0..3 {
            let i = (round + k) % 3;
            let sample = [None, Some("100"), Some("10")][i];
            cpu[i].push(cpu_per_request(path, v1, &same, sample, flags));
        }
    }
    let [none, all, tenth] = cpu.map(|values| median(&values));
    println!(
        "  no canary:                          {:>7.2} µs CPU/request",
        none * 1e6
    );
    println!(
        "  canary on every new connection:     {:>7.2} µs CPU/request  ratio {:.2}",
        all * 1e6,
        all / none
    );
    println!(
        "  canary on 10 % of them:             {:>7.2} µs CPU/request  ratio {:.2}",
        tenth * 1e6,
        tenth / none
    );
    let verdicts: Vec<f64> = (0..ROUNDS)
        .map(|_| time_to_verdict(path, v1, &same, flags))
        .collect();
    println!(
        "  trigger to promotion after 100 connections, under load: median {:>6.0} ms",
        median(&verdicts)
    );
}

/// Server CPU seconds per keep-alive request, with a canary sampling `sample` % of
/// new connections (the load's connections are new: all of them shadowed at 100).
fn cpu_per_request(path: &Path, v1: &[u8], v2: &[u8], sample: Option<&str>, flags: &[&str]) -> f64 {
    install(path, v1);
    let mut args = vec!["--guest", path.to_str().unwrap(), "--no-tier-up"];
    args.extend_from_slice(flags);
    if let Some(sample) = sample {
        args.extend_from_slice(&[
            "--swap",
            "canary",
            "--canary-sample",
            sample,
            "--canary-connections",
            "1000000000",
            "--canary-timeout",
            "3600s",
        ]);
    }
    let (mut child, addr, log) = start(&args);
    if sample.is_some() {
        install(path, v2);
        signal(&child, libc::SIGHUP);
        wait_for(&log, "canary: trying");
    }
    let load = |requests| {
        keep_alive_load(addr, 50, requests);
    };
    load(20_000);
    let before = process::cpu_time(child.id());
    load(LOAD_REQUESTS / 5);
    let cpu = process::cpu_time(child.id()) - before;
    drop(log);
    let _ = child.kill();
    let _ = child.wait();
    cpu.as_secs_f64() / (LOAD_REQUESTS / 5) as f64
}

/// Milliseconds from SIGHUP to the promotion, under a load of a connection per
/// request from 50 clients (`--canary-connections 100`).
fn time_to_verdict(path: &Path, v1: &[u8], v2: &[u8], flags: &[&str]) -> f64 {
    install(path, v1);
    let mut args = vec![
        "--guest",
        path.to_str().unwrap(),
        "--no-tier-up",
        "--swap",
        "canary",
        "--canary-connections",
        "100",
    ];
    args.extend_from_slice(flags);
    let (mut child, addr, log) = start(&args);
    let loader = thread::spawn(move || {
        run(&LoadArgs {
            addr,
            connections: 50,
            requests: 20_000,
            http: true,
            payload: String::new(),
            close: true,
            timeout_secs: 300,
            quiet: true,
            tls_ca: None,
            tls_server_name: String::new(),
        })
        .expect("load run")
    });
    thread::sleep(Duration::from_millis(200));
    install(path, v2);
    let triggered = Instant::now();
    signal(&child, libc::SIGHUP);
    wait_for(&log, "; promoted (");
    let took = triggered.elapsed();
    let report = loader.join().unwrap();
    assert_eq!(report.errors, 0, "requests failed:\n{report}");
    let _ = child.kill();
    let _ = child.wait();
    took.as_secs_f64() * 1e3
}

/// Swaps `SWAPS` times, alternating the two guests, and returns each swap's latency
/// in milliseconds as the host logged it.
fn swap_latencies(path: &Path, v1: &[u8], v2: &[u8], watch: bool, flags: &[&str]) -> Vec<f64> {
    install(path, v1);
    let mut args = vec!["--guest", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    if watch {
        args.push("--watch");
    }
    let (mut child, _addr, log) = start(&args);
    let mut latencies = Vec::new();
    for swap in 0..SWAPS {
        install(path, if swap.is_multiple_of(2) { v2 } else { v1 });
        if !watch {
            signal(&child, libc::SIGHUP);
        }
        // With a tier-up every change is two swaps: time the first, wait for both.
        let tier_up = flags.contains(&"--no-cache") && !flags.contains(&"--no-tier-up");
        let per_change = if tier_up { 2 } else { 1 };
        let needle = format!("swap to generation {} ", swap * per_change + 2);
        let line = wait_for(&log, &needle);
        latencies.push(took_ms(&line));
        if tier_up {
            wait_for(
                &log,
                &format!("swap to generation {} ", swap * per_change + 3),
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    latencies
}

/// Requests/s of one keep-alive load run, with or without a swap every 500 ms.
fn requests_per_sec(path: &Path, v1: &[u8], v2: &[u8], swapping: bool, flags: &[&str]) -> f64 {
    install(path, v1);
    let mut args = vec!["--guest", path.to_str().unwrap(), "--swap", "handoff"];
    args.extend_from_slice(flags);
    let (mut child, addr, log) = start(&args);
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = swapping.then(|| {
        let (stop, path, v1, v2) = (stop.clone(), path.to_path_buf(), v1.to_vec(), v2.to_vec());
        let pid = child.id();
        thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(500));
                install(&path, if swaps.is_multiple_of(2) { &v2 } else { &v1 });
                // SAFETY: kill has no memory preconditions; the pid is our child's.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
                swaps += 1;
            }
            swaps
        })
    });
    let args = LoadArgs {
        addr,
        connections: 50,
        requests: LOAD_REQUESTS,
        http: true,
        payload: String::new(),
        close: false,
        timeout_secs: 120,
        quiet: true,
        tls_ca: None,
        tls_server_name: String::new(),
    };
    let report = run(&args).expect("load run");
    stop.store(true, Ordering::Relaxed);
    if let Some(swapper) = swapper {
        let swaps = swapper.join().unwrap();
        println!("  ({swaps} swaps during the run, {} errors)", report.errors);
    }
    assert_eq!(report.errors, 0, "requests failed:\n{report}");
    drop(log);
    let _ = child.kill();
    let _ = child.wait();
    report.requests_per_sec()
}

fn start(args: &[&str]) -> (Child, SocketAddr, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the host");
    let log = lines(child.stderr.take().unwrap());
    while let Ok(line) = log.recv() {
        if let Some(addr) = line.strip_prefix("listening on ") {
            return (child, addr.trim().parse().unwrap(), log);
        }
    }
    let status = child.wait();
    panic!("the host exited before listening: {status:?}");
}

fn lines(stderr: ChildStderr) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more; keep draining so the host never blocks.
                continue;
            }
        }
    });
    rx
}

fn wait_for(log: &Receiver<String>, needle: &str) -> String {
    loop {
        let line = log
            .recv_timeout(Duration::from_secs(60))
            .expect("the swap never happened");
        if line.contains(needle) {
            return line;
        }
    }
}

/// The `took=…` field of a swap line, in milliseconds.
fn took_ms(line: &str) -> f64 {
    let took = line.split("took=").nth(1).expect("a took= field");
    let value = took.split_whitespace().next().unwrap();
    let (number, scale) = if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix("µs") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        panic!("cannot read {value:?}")
    };
    number.parse::<f64>().unwrap() * scale
}

fn install(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
