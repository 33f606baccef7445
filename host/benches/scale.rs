//! How the host starts and scales: spawn to `listening` (compiling, and from the
//! compiled-component cache); how long 2,000 simultaneous connects take to be
//! answered (with the default backlog, nginx's 511 and the standard library's 128);
//! and host
//! memory per idle connection at 1,000 and 15,000 connections, with one shared
//! instance and with an instance per connection, on epoll and on io_uring (`--io
//! uring`, where the kernel allows it: its provided buffers are the loop's, a fixed
//! 8 MiB at most however many connections there are, which the figures amortize).
//!
//! `cargo bench --bench scale` (`-- --quick` for 1,000 idle connections only). The
//! idle figures are the host's resident memory (VmRSS) after the connections are
//! open and each has made one echo round trip, minus before, per connection.

#[path = "process.rs"]
mod process;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use process::{median, raise_open_file_limit};

const STARTS: usize = 7;

fn main() {
    raise_open_file_limit();
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("sandsock-scale-bench-{}", std::process::id()));
    let cache = dir.join("cache");
    let cache = cache.to_str().unwrap();

    println!("start, spawn to `listening on` (http example, median of {STARTS}):");
    let compiling = median((0..STARTS).map(|_| start_time(&["--no-cache"])).collect());
    start_time(&["--cache-dir", cache]); // fills the cache
    let cached = median(
        (0..STARTS)
            .map(|_| start_time(&["--cache-dir", cache]))
            .collect(),
    );
    println!("  compiling:        {:>7.1} ms", compiling * 1e3);
    println!("  from the cache:   {:>7.1} ms", cached * 1e3);

    println!("2,000 simultaneous connects, each answered once (echo), median of 5:");
    for (what, flags) in [
        ("backlog somaxconn (default)", &[][..]),
        ("backlog 511 (nginx's)", &["--backlog", "511"][..]),
        ("backlog 128 (std's)", &["--backlog", "128"][..]),
    ] {
        let took = median((0..5).map(|_| burst(flags, 2_000)).collect());
        println!("  {what:<28} {:>7.1} ms", took * 1e3);
    }

    println!("host memory per idle connection (echo, one round trip each):");
    let counts: &[usize] = if quick { &[1_000] } else { &[1_000, 15_000] };
    for &count in counts {
        for io in ["epoll", "uring"] {
            for isolation in ["shared", "connection"] {
                let Some(per_conn) = idle_rss_per_connection(isolation, io, count) else {
                    println!("  --io uring refused here: no io_uring rows");
                    break;
                };
                println!(
                    "  {count:>6} connections, --io {io:<5} --isolation {isolation:<10} {:>7.2} KiB each",
                    per_conn / 1024.0
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Spawn to `listening on`, in seconds.
fn start_time(flags: &[&str]) -> f64 {
    let started = Instant::now();
    let (mut child, _) = spawn(&["--guest", "http"], flags);
    let took = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    took
}

/// Opens `count` connections at once to an echo host and waits until each has had
/// one echo; seconds from the first connect to the last answer.
fn burst(flags: &[&str], count: usize) -> f64 {
    let (mut child, addr) = spawn(&["--guest", "echo"], flags);
    let took = round_trips(addr, count, Duration::from_secs(60)).0;
    let _ = child.kill();
    let _ = child.wait();
    took
}

/// Host RSS growth per connection once `count` idle connections are open; `None`
/// when the host refuses `--io io`.
fn idle_rss_per_connection(isolation: &str, io: &str, count: usize) -> Option<f64> {
    let max = (count + 100).to_string();
    let (mut child, addr) = try_spawn(
        &["--guest", "echo", "--isolation", isolation, "--io", io],
        &["--max-connections", &max],
    )?;
    let before = rss(child.id());
    let (_, streams) = round_trips(addr, count, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(200));
    let after = rss(child.id());
    drop(streams);
    let _ = child.kill();
    let _ = child.wait();
    Some((after.saturating_sub(before)) as f64 / count as f64)
}

/// Connects `count` clients at once, sends each `x\n` once it is connected, and waits
/// for every echo. Returns the seconds taken and the (still open) connections.
fn round_trips(addr: SocketAddr, count: usize, limit: Duration) -> (f64, Vec<TcpStream>) {
    let started = Instant::now();
    let mut poll = Poll::new().unwrap();
    let mut streams: Vec<TcpStream> = (0..count)
        .map(|i| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .unwrap();
            stream
        })
        .collect();
    let mut sent = vec![false; count];
    let mut answered = 0;
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 16];
    while answered < count {
        assert!(
            started.elapsed() < limit,
            "only {answered} of {count} answered"
        );
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for event in events.iter() {
            let i = event.token().0;
            let stream = &mut streams[i];
            if !sent[i] && event.is_writable() && stream.peer_addr().is_ok() {
                use std::io::Write;
                if stream.write(b"x\n").is_ok() {
                    sent[i] = true;
                }
            }
            if sent[i] && event.is_readable() {
                use std::io::Read;
                if let Ok(n) = stream.read(&mut buf)
                    && n > 0
                {
                    answered += 1;
                    poll.registry().deregister(stream).unwrap();
                }
            }
        }
    }
    (started.elapsed().as_secs_f64(), streams)
}

fn spawn(args: &[&str], flags: &[&str]) -> (Child, SocketAddr) {
    try_spawn(args, flags).expect("the host exited before listening")
}

/// The host started, and its address; `None` if it exited before listening.
fn try_spawn(args: &[&str], flags: &[&str]) -> Option<(Child, SocketAddr)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .args(flags)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .env_remove("SANDSOCK_IO")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the host");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            let addr = addr.trim().parse().unwrap();
            std::thread::spawn(move || lines.for_each(drop));
            return Some((child, addr));
        }
    }
    let _ = child.wait();
    None
}

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}
