//! What the sandbox costs: the `http` guest against the same event loop running the
//! same HTTP logic compiled natively, measured in one run with the same load client.
//!
//! `cargo bench --bench http` (optionally `-- ROUNDS REQUESTS`; 9 rounds of 200,000 by
//! default: on a shared 2-core machine single rounds swing by 15%, medians of many
//! do not). The two servers take
//! turns, several rounds each; the server is pinned to CPU 0 and the load client (this
//! process) to CPU 1. With two cores the client is often the bottleneck, so besides
//! requests/s it reports the server's CPU time (user + sys) per request, which is the
//! figure that shows the cost of the sandbox.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sandsock_load::{LoadArgs, run};

const CONNECTIONS: usize = 50;
const WARM_UP_REQUESTS: u64 = 20_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Wasm,
    Native,
}

impl Server {
    fn args(self) -> &'static [&'static str] {
        match self {
            Server::Wasm => &["--guest", "http"],
            Server::Native => &["--native", "http"],
        }
    }
}

struct Sample {
    requests_per_sec: f64,
    cpu_per_request: Duration,
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);
    let requests: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2;
    if pinned {
        pin_to_cpu(1);
    }
    println!(
        "http benchmark: {rounds} rounds x {requests} keep-alive requests, {CONNECTIONS} connections, \
         server {}",
        if pinned {
            "on CPU 0, load client on CPU 1"
        } else {
            "unpinned (one CPU)"
        }
    );

    let mut wasm = Vec::new();
    let mut native = Vec::new();
    for round in 0..rounds {
        // Alternate who goes first, so that drift (thermal, other load) hits both alike.
        let order = if round % 2 == 0 {
            [Server::Wasm, Server::Native]
        } else {
            [Server::Native, Server::Wasm]
        };
        for server in order {
            let sample = measure(server, requests, pinned);
            println!(
                "round {round} {:<6} {:>9.0} requests/s  {:>6.2} µs CPU/request",
                format!("{server:?}").to_lowercase(),
                sample.requests_per_sec,
                sample.cpu_per_request.as_secs_f64() * 1e6
            );
            match server {
                Server::Wasm => wasm.push(sample),
                Server::Native => native.push(sample),
            }
        }
    }

    let (w_rps, w_cpu) = medians(&wasm);
    let (n_rps, n_cpu) = medians(&native);
    println!();
    println!(
        "median   native: {n_rps:>9.0} requests/s  {:>6.2} µs CPU/request",
        n_cpu * 1e6
    );
    println!(
        "median   wasm:   {w_rps:>9.0} requests/s  {:>6.2} µs CPU/request",
        w_cpu * 1e6
    );
    println!(
        "ratio    wasm/native CPU per request: {:.3}  (target <= 1.15)",
        w_cpu / n_cpu
    );
    println!(
        "ratio    wasm/native requests/s:      {:.3}  (target >= 0.85)",
        w_rps / n_rps
    );
}

fn measure(server: Server, requests: u64, pinned: bool) -> Sample {
    let mut child = start(server, pinned);
    let addr = listening_addr(&mut child);
    let load = |n: u64| {
        let args = LoadArgs {
            addr,
            connections: CONNECTIONS,
            requests: n,
            http: true,
            payload: String::new(),
            close: false,
            timeout_secs: 120,
            quiet: true,
        };
        let report = run(&args).expect("load run");
        assert_eq!(
            report.errors, 0,
            "the benchmark's load saw errors:\n{report}"
        );
        report
    };
    load(WARM_UP_REQUESTS);
    let cpu_before = cpu_time(child.id());
    let report = load(requests);
    let cpu = cpu_time(child.id()) - cpu_before;
    let _ = child.kill();
    let _ = child.wait();
    Sample {
        requests_per_sec: report.requests_per_sec(),
        cpu_per_request: cpu / requests as u32,
    }
}

fn start(server: Server, pinned: bool) -> Child {
    let host = env!("CARGO_BIN_EXE_host");
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", host]);
        c
    } else {
        Command::new(host)
    };
    command
        .args(server.args())
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the host (is taskset installed?)")
}

/// Reads the host's stderr up to its `listening on ADDR` line, then keeps draining it
/// in the background so the host never blocks on a full pipe.
fn listening_addr(child: &mut Child) -> SocketAddr {
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    for line in lines.by_ref() {
        let line = line.expect("host stderr");
        if let Some(addr) = line.strip_prefix("listening on ") {
            let addr = addr.trim().parse().expect("an address");
            std::thread::spawn(move || lines.for_each(drop));
            return addr;
        }
    }
    panic!("the host exited before listening");
}

/// User + system CPU time of a process, all its threads included.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("warning: could not pin the load client to CPU {cpu}");
        }
    }
}

fn medians(samples: &[Sample]) -> (f64, f64) {
    let mut rps: Vec<f64> = samples.iter().map(|s| s.requests_per_sec).collect();
    let mut cpu: Vec<f64> = samples
        .iter()
        .map(|s| s.cpu_per_request.as_secs_f64())
        .collect();
    rps.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    (rps[rps.len() / 2], cpu[cpu.len() / 2])
}
