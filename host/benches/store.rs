//! What the host-held store costs (contract 1.1): the `kv` example on `--store
//! memory` and on `--store PATH` (SQLite, every write fsynced before its answer),
//! against `kv_in_instance`, the kv as it was before the store (its data in the
//! guest's memory: the floor for this protocol); and `chat` relaying across two
//! workers through a topic.
//!
//! `cargo bench --bench store` (optionally `-- ROUNDS REQUESTS`: 7 rounds of 100,000
//! requests by default). Each kv row is served by one worker pinned to CPU 0, this
//! process (the client) on CPU 1, in a rotating order every round; the figures are
//! medians, with the server's CPU time (user + sys, all threads, the store's
//! included) per request, which is what the store adds. A request is half `SET`s of
//! fresh keys and half `GET`s of keys set before, pipelined 16 deep on each of 16
//! connections, every reply checked. The file lives under cargo's target directory
//! (a disk, not tmpfs: its fsyncs are real). On a shared 2-core machine single
//! rounds swing by 15 %: read the ratios.
//!
//! The chat row: 8 clients on a host with `--workers 2` (both CPUs, so the client
//! competes with it), each writing 20,000 lines as fast as it can, which every
//! other client must receive: lines relayed per second. A chunk of lines a client's
//! worker reads at once is one topic message, so this is the bulk rate, not one
//! message per line.

#[path = "process.rs"]
mod process;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

use process::{cpu_time, listening_addr, median, pin_to_cpu, spawn};

const CONNECTIONS: usize = 16;
const DEPTH: usize = 16;
const KV_IN_INSTANCE: &str = concat!(env!("SANDSOCK_GUEST_DIR"), "/kv_in_instance.wasm");

#[derive(Clone, Copy, Debug, PartialEq)]
enum Row {
    InInstance,
    Memory,
    File,
}

const ROWS: [Row; 3] = [Row::InInstance, Row::Memory, Row::File];

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::InInstance => "kv, data in the instance",
            Row::Memory => "kv, --store memory",
            Row::File => "kv, --store PATH",
        }
    }

    fn start(self, file: &str) -> Child {
        let host = env!("CARGO_BIN_EXE_host");
        let mut args = vec!["--listen", "127.0.0.1:0", "--guest"];
        match self {
            Row::InInstance => args.push(KV_IN_INSTANCE),
            Row::Memory => args.extend(["kv", "--store", "memory"]),
            Row::File => args.extend(["kv", "--store", file]),
        }
        spawn(host, &args, &[], true)
    }
}

/// Sends `requests` kv requests (keys named for `round`), checking every reply;
/// answers the wall time and how many were sent.
fn kv_round(addr: SocketAddr, round: usize, requests: usize) -> (Duration, u32) {
    let mut clients: Vec<(TcpStream, BufReader<TcpStream>)> = (0..CONNECTIONS)
        .map(|_| {
            let stream = TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).unwrap();
            let reader = BufReader::new(stream.try_clone().unwrap());
            (stream, reader)
        })
        .collect();
    let started = Instant::now();
    let mut done = 0;
    let mut batch = String::new();
    let mut line = String::new();
    let mut expected: Vec<String> = Vec::with_capacity(DEPTH);
    while done < requests {
        for (c, (stream, reader)) in clients.iter_mut().enumerate() {
            batch.clear();
            expected.clear();
            for i in 0..DEPTH {
                let n = done + c * DEPTH + i;
                let key = format!("r{round}c{c}k{}", n / 2);
                if n.is_multiple_of(2) {
                    batch.push_str(&format!("SET {key} value-{n}\n"));
                    expected.push("OK\n".into());
                } else {
                    batch.push_str(&format!("GET {key}\n"));
                    expected.push(format!("VALUE value-{}\n", n - 1));
                }
            }
            stream.write_all(batch.as_bytes()).expect("send");
            for want in &expected {
                line.clear();
                reader.read_line(&mut line).expect("a reply");
                assert_eq!(&line, want, "kv answered wrong");
            }
        }
        done += CONNECTIONS * DEPTH;
    }
    (started.elapsed(), done as u32)
}

/// Measures one kv row: a warm-up, then `requests` requests.
fn kv_row(row: Row, file: &str, round: usize, requests: usize) -> (f64, f64) {
    let mut child = row.start(file);
    let addr = listening_addr(&mut child);
    kv_round(addr, round + 1000, 4096);
    let cpu_before = cpu_time(child.id());
    let (wall, done) = kv_round(addr, round, requests);
    let cpu = cpu_time(child.id()) - cpu_before;
    let _ = child.kill();
    let _ = child.wait();
    let per_sec = f64::from(done) / wall.as_secs_f64();
    let cpu_us = cpu.as_secs_f64() * 1e6 / f64::from(done);
    (per_sec, cpu_us)
}

/// Chat across two workers: each of `clients` sends `lines` lines; answers the
/// lines relayed per second.
fn chat_round(clients: usize, lines: usize) -> f64 {
    let host = env!("CARGO_BIN_EXE_host");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--guest",
        "chat",
        "--workers",
        "2",
    ];
    let mut child = spawn(host, &args, &[], false);
    let addr = listening_addr(&mut child);
    let streams: Vec<TcpStream> = (0..clients)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // The two workers accept in no order between them: give both time to take
    // their clients into the room, then check that a line goes round.
    std::thread::sleep(Duration::from_millis(300));
    let mut first = BufReader::new(streams[0].try_clone().unwrap());
    let mut last = streams[clients - 1].try_clone().unwrap();
    last.write_all(b"ready\n").unwrap();
    let mut line = String::new();
    first.read_line(&mut line).unwrap();
    let readers: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, stream)| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let skip = usize::from(i != 0 && i != clients - 1);
            std::thread::spawn(move || {
                let mut line = String::new();
                for _ in 0..skip + (clients - 1) * lines {
                    line.clear();
                    reader.read_line(&mut line).expect("a relayed line");
                }
            })
        })
        .collect();
    let started = Instant::now();
    let writers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            std::thread::spawn(move || {
                let mut text = String::new();
                for n in 0..lines {
                    text.push_str(&format!("client {i} line {n}\n"));
                }
                stream.write_all(text.as_bytes()).expect("send");
                stream
            })
        })
        .collect();
    let _open: Vec<TcpStream> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for reader in readers {
        reader.join().expect("a client heard every line");
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    (clients * (clients - 1) * lines) as f64 / elapsed.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(7);
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("store-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory for the store file");
    let file = dir.join("kv.db");
    let file = file.to_str().unwrap();
    pin_to_cpu(1);

    println!(
        "kv: {rounds} rounds of {requests} requests (half SET, half GET), {CONNECTIONS} connections pipelining {DEPTH} deep"
    );
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); ROWS.len()];
    for round in 0..rounds {
        for i in 0..ROWS.len() {
            let at = (i + round) % ROWS.len();
            let figures = kv_row(ROWS[at], file, round, requests);
            results[at].push(figures);
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let medians: Vec<(f64, f64)> = results
        .iter()
        .map(|r| {
            (
                median(r.iter().map(|x| x.0).collect()),
                median(r.iter().map(|x| x.1).collect()),
            )
        })
        .collect();
    let (floor_rate, floor_cpu) = medians[0];
    println!(
        "{:<28} {:>12} {:>10} {:>14} {:>10}",
        "server", "requests/s", "vs floor", "CPU µs/request", "vs floor"
    );
    for (row, (rate, cpu)) in ROWS.iter().zip(&medians) {
        println!(
            "{:<28} {:>12.0} {:>9.2}x {:>14.2} {:>9.2}x",
            row.name(),
            rate,
            rate / floor_rate,
            cpu,
            cpu / floor_cpu
        );
    }

    let chat: Vec<f64> = (0..rounds.min(5)).map(|_| chat_round(8, 20_000)).collect();
    println!(
        "chat, 2 workers, 8 clients x 20,000 lines: {:.0} lines relayed/s (median of {})",
        median(chat.clone()),
        chat.len()
    );
}
