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

#[path = "clients.rs"]
mod clients;
#[path = "process.rs"]
mod process;

use std::process::Child;

use clients::{chat_lines, kv_round};
use process::{cpu_time, listening_addr, median, pin_to_cpu, rounds_and_requests, spawn};

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

/// Measures one kv row: a warm-up, then `requests` requests.
fn kv_row(row: Row, file: &str, round: usize, requests: usize) -> (f64, f64) {
    let mut child = row.start(file);
    let addr = listening_addr(&mut child);
    kv_round(addr, round + 1000, 4096, CONNECTIONS, DEPTH);
    let cpu_before = cpu_time(child.id());
    let (wall, done) = kv_round(addr, round, requests, CONNECTIONS, DEPTH);
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
    let relayed = chat_lines(&[addr], clients, lines);
    let _ = child.kill();
    let _ = child.wait();
    relayed
}

fn main() {
    let (rounds, requests) = rounds_and_requests(7, 100_000);
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
