//! What the benchmarks share about the servers they start: pinning to a CPU, the
//! `listening on ADDR` line, the CPU time a process used, medians, and the
//! open-file limit of a client that holds thousands of connections.
//!
//! Each benchmark uses the part it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sandsock_load::{LoadArgs, LoadReport, run};

/// Starts `program ARGS` with `env`, on CPU 0 alone if `pinned` (through taskset),
/// logging at warn, its stderr piped for [`listening_addr`]. Its loop is the one its
/// arguments name (epoll unless `--io uring`), whatever `SANDSOCK_IO` says here.
pub fn spawn(program: &str, args: &[&str], env: &[(&str, &str)], pinned: bool) -> Child {
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", program]);
        c
    } else {
        Command::new(program)
    };
    command
        .args(args)
        .env_remove("SANDSOCK_IO")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server (is taskset installed?)")
}

/// Reads the host's stderr up to its `listening on ADDR` line, then keeps draining it
/// in the background so the host never blocks on a full pipe.
pub fn listening_addr(child: &mut Child) -> SocketAddr {
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("host stderr");
        if let Some(addr) = line.strip_prefix("listening on ") {
            let addr = addr.trim().trim_end_matches(" (tls)");
            let addr = addr.parse().expect("an address");
            std::thread::spawn(move || lines.for_each(drop));
            return addr;
        }
        said.push(line);
    }
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    panic!(
        "the host exited ({status}) before listening:\n{}",
        said.join("\n")
    );
}

/// User + system CPU time of a process, all its threads included (those that ended
/// too), to the nanosecond: the process's CPU-time clock, not `/proc/PID/stat`,
/// whose 10 ms ticks are over 1 % of a round of 100,000 requests.
pub fn cpu_time(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t into `clock`.
    let found = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    assert_eq!(found, 0, "the CPU-time clock of pid {pid}");
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`.
    let read = unsafe { libc::clock_gettime(clock, &mut now) };
    let error = std::io::Error::last_os_error();
    assert_eq!(read, 0, "read the CPU-time clock of pid {pid}: {error}");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Pins this process (the load client) to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("warning: could not pin the load client to CPU {cpu}");
        }
    }
}

/// The median of `values` (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The benchmark's `-- ROUNDS REQUESTS` (flags such as `--bench` skipped), each
/// defaulting as given.
pub fn rounds_and_requests(rounds: usize, requests: usize) -> (usize, usize) {
    let mut numbers = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let mut next = |default| {
        numbers
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    (next(rounds), next(requests))
}

/// `host load`'s engine against `addr`: `requests` plain HTTP requests over
/// `connections` keep-alive connections, every answer checked (an error panics).
pub fn keep_alive_load(addr: SocketAddr, connections: usize, requests: u64) -> LoadReport {
    checked_load(addr, connections, requests, false)
}

/// [`keep_alive_load`], or with a new connection per request when `close`.
pub fn checked_load(
    addr: SocketAddr,
    connections: usize,
    requests: u64,
    close: bool,
) -> LoadReport {
    let report = run(&LoadArgs {
        addr,
        connections,
        requests,
        http: true,
        payload: String::new(),
        close,
        timeout_secs: 300,
        quiet: true,
        tls_ca: None,
        tls_server_name: String::new(),
    })
    .expect("load run");
    assert_eq!(
        report.errors, 0,
        "the benchmark's load saw errors:\n{report}"
    );
    report
}

/// Raises this process's open-file limit to the hard one: a client holding
/// thousands of connections needs as many descriptors.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one properly sized struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
