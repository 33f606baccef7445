//! What a binary upgrade costs: the time from `SIGUSR2` to the new process serving
//! and to the old one's exit (idle, under load, and with 10, 1,000 and 10,000 open
//! connections handed over), and the requests/s of load while upgrades run, against
//! the same load on the same host without upgrades and on the floor (a minimal
//! plain-mio server, `minimal_http.rs`): a new connection per request, and
//! keep-alive (whose connections every upgrade hands over). Every answer is
//! checked: a request an upgrade lost fails the benchmark.
//!
//! `cargo bench --bench upgrade` (optionally `-- ROUNDS REQUESTS`: 5 rounds of 60,000
//! requests over 16 connections, five times that with keep-alive). In the upgrading rows an upgrade starts every
//! 100 ms while the load runs (each waits for the one before it to finish). Nothing
//! is pinned: an upgrade starts processes, and the old and the new one share the
//! CPUs with the client. `SANDSOCK_IO=uring cargo bench --bench upgrade` runs the
//! host (every process of it) on io_uring; the floor stays the mio server.

#[path = "minimal_http.rs"]
mod minimal_http;
#[path = "process.rs"]
mod process;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process::{checked_load, median, raise_open_file_limit, rounds_and_requests};
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
            .args(["--max-connections", "20000"])
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
        self.wait_for_any(&[needle])
    }

    /// The next line holding one of `needles`, skipping the others.
    fn wait_for_any(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no `{needles:?}` in the log:\n{}", self.seen.join("\n"))
            });
            self.seen.push(line.clone());
            if line.contains("upgrade failed") {
                panic!("{line}");
            }
            if needles.iter().any(|needle| line.contains(needle)) {
                return line;
            }
        }
    }

    /// The next line holding each of `needles`, in whatever order they come.
    fn wait_for_all<const N: usize>(&mut self, needles: [&str; N]) -> [String; N] {
        let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
        while found.iter().any(Option::is_none) {
            let wanted: Vec<&str> = needles
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(n, _)| *n)
                .collect();
            let line = self.wait_for_any(&wanted);
            let at = (0..N)
                .find(|&i| found[i].is_none() && line.contains(needles[i]))
                .expect("a wanted line");
            found[at] = Some(line);
        }
        found.map(Option::unwrap)
    }

    /// One upgrade: (ms to the new process serving, ms to the old one's exit), as
    /// the two processes measured them.
    fn upgrade(&mut self) -> (f64, f64) {
        let (times, _) = self.upgrade_counting();
        times
    }

    /// [`Upgradable::upgrade`], and how many connections it handed over.
    fn upgrade_counting(&mut self) -> ((f64, f64), usize) {
        // SAFETY: kill has no memory preconditions; `serving` is a host we started.
        unsafe { libc::kill(self.serving as libc::pid_t, libc::SIGUSR2) };
        // In any order: the old process may exit before the new one says it serves.
        let [took, serving, exited] = self.wait_for_all([
            "upgrade: the new process took",
            "upgrade: serving; took over",
            "upgrade: the old process exits",
        ]);
        self.serving = field(&serving, "pid").parse().unwrap();
        self.started.push(self.serving);
        (
            (
                field(&serving, "serving_ms").parse().unwrap(),
                field(&exited, "took_ms").parse().unwrap(),
            ),
            field(&took, "handed").parse().unwrap(),
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

/// Upgrades with `open` idle connections held: (median ms to the old process's
/// exit, connections handed over each time); `None` when this process may not open
/// that many.
fn with_open(host: &mut Upgradable, open: usize) -> Option<(f64, usize)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one properly sized struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || (limit.rlim_cur as usize) < open + 100
    {
        return None;
    }
    let conns: Vec<TcpStream> = (0..open)
        .map(|_| TcpStream::connect(host.addr).expect("connect"))
        .collect();
    // Every connection accepted before the first upgrade: the first counts them.
    std::thread::sleep(Duration::from_millis(200 + open as u64 / 20));
    let mut exits = Vec::new();
    for _ in 0..3 {
        let ((_, exit), handed) = host.upgrade_counting();
        assert_eq!(handed, open, "every open connection handed over");
        exits.push(exit);
    }
    drop(conns);
    std::thread::sleep(Duration::from_millis(200 + open as u64 / 20));
    Some((median(exits), open))
}

/// One round of each load: (floor, host, host upgrading every 100 ms), requests/s
/// and the upgrades' times; `close`: a new connection per request.
fn round(
    host: &Arc<Mutex<Upgradable>>,
    floor_addr: SocketAddr,
    requests: u64,
    close: bool,
) -> ([LoadReport; 3], Vec<(f64, f64)>) {
    let addr = host.lock().unwrap().addr;
    let floor = checked_load(floor_addr, CONNECTIONS, requests, close);
    let without = checked_load(addr, CONNECTIONS, requests, close);
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
    let upgrading = checked_load(addr, CONNECTIONS, requests, close);
    done.store(true, Ordering::Release);
    ([floor, without, upgrading], upgrader.join().unwrap())
}

fn main() {
    if let Ok(addr) = std::env::var(minimal_http::SERVE_AT) {
        minimal_http::serve(addr.parse().expect("the minimal server's address"));
    }
    raise_open_file_limit();
    let (rounds, requests) = rounds_and_requests(5, 60_000);
    let requests = requests as u64;
    let dir = std::env::temp_dir().join(format!("sandsock-bench-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.join("host");
    std::fs::copy(env!("CARGO_BIN_EXE_host"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    println!(
        "upgrade benchmark: {rounds} rounds of {requests} requests, {CONNECTIONS} connections, a new connection per request and keep-alive; the host on --io {}",
        std::env::var("SANDSOCK_IO").unwrap_or_else(|_| "epoll".into())
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

    // Idle: nothing to finish, so the old process's exit is the handover's end.
    let idle: Vec<(f64, f64)> = (0..10).map(|_| host.lock().unwrap().upgrade()).collect();

    let p99 = |r: &LoadReport| r.latency.value_at_quantile(0.99) as f64 / 1000.0;
    // Per load kind (a connection per request, keep-alive): requests/s of the
    // floor, the host, the host upgrading; and the upgrades' times.
    let mut rates = [[vec![], vec![], vec![]], [vec![], vec![], vec![]]];
    let mut busy = [vec![], vec![]];
    for round_number in 1..=rounds {
        for (kind, close) in [(0, true), (1, false)] {
            // Keep-alive runs five times the requests, in about the same time.
            let requests = if close { requests } else { requests * 5 };
            let (reports, times) = round(&host, minimal_addr, requests, close);
            for (rate, report) in rates[kind].iter_mut().zip(&reports) {
                rate.push(report.requests_per_sec());
            }
            println!(
                "round {round_number} {}: floor {:.0}/s, host {:.0}/s (p99 {:.2} ms), upgrading {:.0}/s (p99 {:.2} ms, {} upgrades)",
                if close { "close     " } else { "keep-alive" },
                reports[0].requests_per_sec(),
                reports[1].requests_per_sec(),
                p99(&reports[1]),
                reports[2].requests_per_sec(),
                p99(&reports[2]),
                times.len(),
            );
            busy[kind].extend(times);
        }
    }
    let opened: Vec<(usize, Option<(f64, usize)>)> = [10, 1000, 10_000]
        .into_iter()
        .map(|open| (open, with_open(&mut host.lock().unwrap(), open)))
        .collect();
    let _ = minimal.kill();
    let _ = minimal.wait();
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);

    let ms = |values: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        median(values.iter().map(pick).collect())
    };
    println!();
    println!(
        "{:<34} {:>12} {:>12}",
        "requests/s (median)", "close", "keep-alive"
    );
    let rows = [
        "minimal mio",
        "host wasm",
        "host wasm, upgrading every 100 ms",
    ];
    for (row, name) in rows.iter().enumerate() {
        println!(
            "{name:<34} {:>12.0} {:>12.0}",
            median(rates[0][row].clone()),
            median(rates[1][row].clone())
        );
    }
    for (kind, name) in [(0, "close"), (1, "keep-alive")] {
        let [floor, plain, upgrading] = &rates[kind];
        println!(
            "ratios, {name}: upgrading/plain {:.2}x, plain/floor {:.2}x ({} upgrades under load, 0 failed requests)",
            median(upgrading.clone()) / median(plain.clone()),
            median(plain.clone()) / median(floor.clone()),
            busy[kind].len(),
        );
    }
    let under_load: Vec<(f64, f64)> = busy.concat();
    println!(
        "SIGUSR2 to the new process serving: {:.1} ms idle, {:.1} ms under load (medians)",
        ms(&idle, |t| t.0),
        ms(&under_load, |t| t.0)
    );
    println!(
        "SIGUSR2 to the old process's exit:  {:.1} ms idle, {:.1} ms under load (medians)",
        ms(&idle, |t| t.1),
        ms(&under_load, |t| t.1)
    );
    for (open, times) in opened {
        match times {
            Some((exit, handed)) => println!(
                "SIGUSR2 to the old process's exit with {open:>5} open connections: {exit:.1} ms (median of 3, {handed} handed over each time)"
            ),
            None => println!(
                "SIGUSR2 to the old process's exit with {open:>5} open connections: not measured (the open-file limit is lower)"
            ),
        }
    }
}
