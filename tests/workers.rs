//! `--workers N`: N event loops on one address, sharing the compiled guest. Each
//! serves the connections the kernel gives its socket; a swap reaches every worker;
//! a shutdown drains all of them; a trap in one leaves the others' connections
//! alone; `--max-connections` counts every worker's connections.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{
    Host, assert_closed_without_answer, connect, count, example, fresh_body, get, http_v2, install,
    read_to_end, serve_file, start_with_log_level, test_guest,
};

const V1: &str = "hello\n";
const V2: &str = "hello v2\n";

/// The workers (by id) that wrote a log line containing `needle`.
fn workers_logging(host: &Host, needle: &str) -> BTreeSet<u32> {
    host.log()
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| {
            // The span's field, as text logs show it: `worker{worker=1}: ...`.
            let rest = &line[line.find("worker{worker=")? + "worker{worker=".len()..];
            rest[..rest.find('}')?].parse().ok()
        })
        .collect()
}

/// Waits until `needle` has appeared `times` times in the log.
fn wait_for_count(host: &Host, needle: &str, times: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(host, needle) < times {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never appeared {times} times:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An echo round trip; false if the connection was closed instead.
fn echoes(stream: &mut TcpStream, line: &str) -> bool {
    if stream.write_all(line.as_bytes()).is_err() {
        return false;
    }
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(0) => false,
        Ok(_) => {
            assert_eq!(answer, line, "an answer, but not the echo");
            true
        }
        Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
        Err(e) => panic!("neither an echo nor a close: {e}"),
    }
}

#[test]
fn connections_are_served_by_every_worker() {
    let host = start_with_log_level(&["--guest", "echo", "--workers", "2"], "debug");
    for i in 0..40 {
        let mut client = host.connect();
        assert!(echoes(&mut client, &format!("hello {i}\n")));
    }
    assert_eq!(
        workers_logging(&host, "accepted"),
        BTreeSet::from([0, 1]),
        "the kernel spread 40 connections over both workers"
    );
}

#[test]
fn a_swap_reaches_every_worker_in_drain_and_handoff() {
    for mode in ["drain", "handoff"] {
        let (host, path) = serve_file(
            &format!("workers-{mode}"),
            &example("http"),
            &["--workers", "2", "--swap", mode],
        );
        let mut open: Vec<_> = (0..16).map(|_| connect(&host)).collect();
        for client in &mut open {
            assert_eq!(get(client), V1);
        }
        install(&path, &http_v2());
        host.signal(libc::SIGHUP);
        wait_for_count(&host, "swap to generation 2 ", 2);
        assert_eq!(
            workers_logging(&host, "generation 2 ("),
            BTreeSet::from([0, 1]),
            "{mode}: both workers serve the new generation"
        );
        for _ in 0..20 {
            assert_eq!(fresh_body(&host), V2, "{mode}: a new connection");
        }
        let expected = if mode == "drain" { V1 } else { V2 };
        for client in &mut open {
            assert_eq!(get(client), expected, "{mode}: a connection open before");
        }
    }
}

#[test]
fn sigterm_drains_every_worker_and_exits_zero() {
    let mut host = Host::start(&[
        "--guest",
        "http",
        "--workers",
        "2",
        "--admin",
        "127.0.0.1:0",
    ]);
    let half = b"GET / HTTP/1.1\r\nHost: t\r\n";
    let mut busy: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut client = host.connect();
            client.write_all(half).unwrap(); // half a request
            client
        })
        .collect();
    // A half request is in flight only once the guest has read it: before, the
    // connection is an idle one to the guest, which it closes at the shutdown.
    host.wait_metric(
        "sandsock_read_bytes_total",
        &[],
        |read| read >= (16 * half.len()) as f64,
        Duration::from_secs(10),
    );
    host.signal(libc::SIGTERM);
    wait_for_count(&host, "shutting down: no new connections", 2);
    for client in &mut busy {
        client.write_all(b"\r\n").unwrap();
        let answer = String::from_utf8(read_to_end(client)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
    }
    drop(busy);
    let status = host
        .wait_exit(Duration::from_secs(10))
        .expect("exit after the last connection");
    assert!(status.success(), "{status:?}");
    assert_eq!(count(&host, "every connection has finished"), 2);
}

#[test]
fn a_trap_in_one_worker_leaves_the_other_workers_connections_alone() {
    let guest = test_guest("panics");
    let host = Host::start(&["--guest", guest.to_str().unwrap(), "--workers", "2"]);
    let mut clients: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut client = host.connect();
            assert!(echoes(&mut client, &format!("before {i}\n")));
            client
        })
        .collect();
    clients[0].write_all(b"TRIGGER\n").unwrap();
    host.wait_for_log("guest trapped", Duration::from_secs(10));
    let log = host.log();
    let trapped: usize = log
        .split("closed its ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("how many connections the trap closed");
    assert_closed_without_answer(&mut clients[0], "the trapping connection");
    let mut alive = 0;
    for (i, client) in clients[1..].iter_mut().enumerate() {
        alive += usize::from(echoes(client, &format!("after {i}\n")));
    }
    assert_eq!(
        alive + trapped,
        40,
        "the trap closed its worker's connections and only those:\n{log}"
    );
    assert!(alive > 0, "the other worker's connections go on:\n{log}");
    assert_eq!(count(&host, "guest trapped"), 1, "one worker trapped");
}

#[test]
fn max_connections_counts_every_workers_connections() {
    let host = Host::start(&[
        "--guest",
        "echo",
        "--workers",
        "2",
        "--max-connections",
        "6",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut held: Vec<TcpStream> = (0..6)
        .map(|i| {
            let mut client = host.connect();
            assert!(echoes(&mut client, &format!("held {i}\n")));
            client
        })
        .collect();
    for _ in 0..4 {
        let mut extra = host.connect();
        let _ = extra.write_all(b"one too many\n");
        assert_closed_without_answer(&mut extra, "a connection past the limit");
    }
    host.wait_for_log("connection limit reached", Duration::from_secs(5));
    drop(held.pop());
    // Its place is given back when the host lets go of the connection, which the
    // count of open connections (every worker's) shows.
    host.wait_metric(
        "sandsock_connections_open",
        &[],
        |open| open == 5.0,
        Duration::from_secs(10),
    );
    let mut freed = host.connect();
    assert!(echoes(&mut freed, "a freed place\n"));
    let mut buf = [0u8; 1];
    held[0].set_nonblocking(true).unwrap();
    assert!(
        matches!(held[0].read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the held ones are still open"
    );
}
