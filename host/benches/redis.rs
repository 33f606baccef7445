//! What `--store redis://` costs: the `kv` example served through the host with its
//! data on a local `redis-server`, against `redis-benchmark` on the same server with
//! the same concurrency (the floor: Redis with its own client, no host in between);
//! and `chat` across two hosts sharing the server, against one host with two
//! workers.
//!
//! `cargo bench --bench redis` (optionally `-- ROUNDS REQUESTS`: 5 rounds of 100,000
//! requests by default). Needs `redis-server` and `redis-benchmark` on the PATH.
//!
//! Each kv row runs its connections at once from one thread (non-blocking, as
//! redis-benchmark's client): 50 with one request in flight each (redis-benchmark's
//! default), then 16 with 16 pipelined; half `SET`s of fresh keys and half `GET`s of
//! keys set before, every reply checked. `redis-benchmark -c C -P DEPTH -t set,get
//! -r 100000 -d 10` does the same mix at the same concurrency (its SET and GET rates
//! combined as for a half-and-half mix).
//! Nothing is pinned: the client, the host and the server share the machine's 2 CPUs,
//! as redis-benchmark and the server do. The rows alternate, every round in another
//! order; the figures are medians, with the host's and the server's CPU time per
//! request. On a shared 2-core machine single rounds swing by 15 %: read the ratios.
//!
//! The chat rows: 8 clients, each writing 20,000 lines as fast as it can, which
//! every other client must receive: on two hosts (4 clients each) whose room is a
//! topic on the server, and on one host with `--workers 2` (the room in the
//! process). A chunk of lines one read brings is one message: this is the bulk rate.

#[path = "clients.rs"]
mod clients;
#[path = "process.rs"]
mod process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clients::{chat_lines, kv_evented};
use process::{cpu_time, listening_addr, median, rounds_and_requests, spawn};

/// The rows' concurrency: connections and requests in flight on each.
/// redis-benchmark's default (`-c 50 -P 1`), and a pipelined load.
const SHAPES: [(usize, usize); 2] = [(50, 1), (16, 16)];

/// A `redis-server` on a free loopback port, with nothing kept on disk.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed?)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                let mut reply = [0; 5];
                if stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cpu(&self) -> Duration {
        cpu_time(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One kv figure: requests per second, and the host's and the server's CPU time per
/// request in µs (no host: 0).
type Figures = (f64, f64, f64);

/// `redis-benchmark` against `server`: SET and GET on `connections` connections,
/// `depth` deep on each.
fn redis_benchmark(
    server: &Server,
    (connections, depth): (usize, usize),
    requests: usize,
) -> Figures {
    let before = server.cpu();
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-c", &connections.to_string(), "-P", &depth.to_string()])
        .args([
            "-n",
            &(requests / 2).to_string(),
            "-r",
            "100000",
            "-d",
            "10",
        ])
        .args(["-t", "set,get", "--csv"])
        .output()
        .expect("run redis-benchmark (is it installed?)");
    let server_cpu = server.cpu() - before;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = |test: &str| -> f64 {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\"")))
            .unwrap_or_else(|| panic!("no {test} in redis-benchmark's output:\n{text}"));
        row.split(',')
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap()
    };
    // Half the requests at each rate: the time of the mix is the sum of the halves.
    let (set, get) = (rate("SET"), rate("GET"));
    let mixed = 2.0 / (1.0 / set + 1.0 / get);
    (mixed, 0.0, server_cpu.as_secs_f64() * 1e6 / requests as f64)
}

/// `kv` through a host on `server`, on `connections` connections `depth` deep.
fn kv_through_host(
    server: &Server,
    (connections, depth): (usize, usize),
    round: usize,
    requests: usize,
) -> Figures {
    let url = server.url();
    let namespace = format!("bench{round}c{connections}d{depth}");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--guest",
        "kv",
        "--store",
        &url,
        "--store-namespace",
        &namespace,
    ];
    let mut host = spawn(env!("CARGO_BIN_EXE_host"), &args, &[], false);
    let addr = listening_addr(&mut host);
    kv_evented(addr, round + 1000, 4096, connections, depth);
    let (host_before, server_before) = (cpu_time(host.id()), server.cpu());
    let (wall, done) = kv_evented(addr, round, requests, connections, depth);
    let host_cpu = cpu_time(host.id()) - host_before;
    let server_cpu = server.cpu() - server_before;
    let _ = host.kill();
    let _ = host.wait();
    let done = f64::from(done);
    (
        done / wall.as_secs_f64(),
        host_cpu.as_secs_f64() * 1e6 / done,
        server_cpu.as_secs_f64() * 1e6 / done,
    )
}

/// Chat on two hosts sharing `server`'s topics, or (`server` none) on one host with
/// two workers.
fn chat_round(server: Option<&Server>) -> f64 {
    let host = env!("CARGO_BIN_EXE_host");
    let mut children = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    match server {
        Some(server) => {
            let url = server.url();
            for _ in 0..2 {
                let args = [
                    "--listen",
                    "127.0.0.1:0",
                    "--guest",
                    "chat",
                    "--store",
                    &url,
                    "--store-namespace",
                    "chat-bench",
                ];
                let mut child = spawn(host, &args, &[], false);
                addrs.push(listening_addr(&mut child));
                children.push(child);
            }
        }
        None => {
            let args = [
                "--listen",
                "127.0.0.1:0",
                "--guest",
                "chat",
                "--workers",
                "2",
            ];
            let mut child = spawn(host, &args, &[], false);
            addrs.push(listening_addr(&mut child));
            children.push(child);
        }
    }
    let relayed = chat_lines(&addrs, 8, 20_000);
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    relayed
}

fn main() {
    let (rounds, requests) = rounds_and_requests(5, 100_000);
    let server = Server::start();
    println!("kv on redis-server: {rounds} rounds of {requests} requests (half SET, half GET)");
    println!(
        "{:<36} {:>12} {:>9} {:>16} {:>18}",
        "row", "requests/s", "vs floor", "host CPU µs/req", "server CPU µs/req"
    );
    for shape in SHAPES {
        let (connections, depth) = shape;
        let mut floor = Vec::new();
        let mut through = Vec::new();
        for round in 0..rounds {
            if round % 2 == 0 {
                floor.push(redis_benchmark(&server, shape, requests));
                through.push(kv_through_host(&server, shape, round, requests));
            } else {
                through.push(kv_through_host(&server, shape, round, requests));
                floor.push(redis_benchmark(&server, shape, requests));
            }
            eprintln!(
                "{connections} x {depth}: round {} of {rounds} done",
                round + 1
            );
        }
        let medians = |rows: &[Figures]| {
            (
                median(rows.iter().map(|r| r.0).collect()),
                median(rows.iter().map(|r| r.1).collect()),
                median(rows.iter().map(|r| r.2).collect()),
            )
        };
        let (floor, through) = (medians(&floor), medians(&through));
        for (name, (rate, host_cpu, server_cpu)) in [
            (
                format!("redis-benchmark -c {connections} -P {depth}"),
                floor,
            ),
            (
                format!("kv through the host, {connections} x {depth}"),
                through,
            ),
        ] {
            println!(
                "{name:<36} {rate:>12.0} {:>8.2}x {host_cpu:>16.2} {server_cpu:>18.2}",
                rate / floor.0
            );
        }
    }

    let chat_rounds = rounds.min(5);
    let mut shared = Vec::new();
    let mut local = Vec::new();
    for _ in 0..chat_rounds {
        shared.push(chat_round(Some(&server)));
        local.push(chat_round(None));
    }
    let (shared, local) = (median(shared), median(local));
    println!(
        "chat, 8 clients x 20,000 lines: two hosts on redis {shared:.0} lines relayed/s, \
         one host with 2 workers {local:.0} ({:.2}x; medians of {chat_rounds})",
        shared / local
    );
}
