//! Recycling: a guest that leaks is renewed by a fresh instance of the same code
//! before it runs out of memory (`--recycle-at-memory`, by default 3/4 of
//! `--max-memory`) or after a number of calls (`--recycle-after`). With `--swap
//! handoff` its connections and state move to the fresh instance; with the default
//! drain, new connections go to the fresh one. Nothing is closed either way.

mod common;

use std::io::Write;

use common::{Host, read_line, test_guest};

/// Serves the `leaks` test guest with `flags`.
fn serve_leaks(flags: &[&str]) -> Host {
    let guest = test_guest("leaks");
    let mut args = vec!["--guest", guest.to_str().unwrap()];
    args.extend_from_slice(flags);
    Host::start(&args)
}

/// Sends `line` on `conn` and checks the echo.
fn echo(conn: &mut std::net::TcpStream, line: &str) {
    conn.write_all(format!("{line}\n").as_bytes()).unwrap();
    assert_eq!(read_line(conn), line);
}

#[test]
fn a_leaking_guest_is_recycled_before_it_runs_out_without_closing_anything() {
    let host = serve_leaks(&[
        "--max-memory",
        "8MiB",
        "--swap",
        "handoff",
        "--admin",
        "127.0.0.1:0",
    ]);
    // 120 lines leak 30 MiB, four times the cap: without recycling the instance runs
    // out of memory after about 25, and its connections are closed.
    let mut kept = host.connect();
    for i in 0..120 {
        echo(&mut kept, &format!("line {i}"));
        if i % 20 == 0 {
            echo(&mut host.connect(), &format!("short {i}"));
        }
    }
    kept.write_all(b"COUNT\n").unwrap();
    assert_eq!(read_line(&mut kept), "served 126", "the count survived");
    let log = host.log();
    assert!(!log.contains("out of memory"), "{log}");
    let recycles = host.metric("sandsock_recycles_total", &[]);
    assert!(recycles >= 4.0, "{recycles} recycles:\n{log}");
    assert!(log.contains("(--recycle-at-memory 6144 KiB)"), "{log}");
    assert_eq!(host.metric("sandsock_swaps_total", &[]), 0.0, "not swaps");
}

#[test]
fn recycle_after_a_number_of_calls() {
    let host = serve_leaks(&["--swap", "handoff", "--recycle-after", "10"]);
    let mut conn = host.connect();
    for i in 0..35 {
        echo(&mut conn, &format!("line {i}"));
    }
    conn.write_all(b"COUNT\n").unwrap();
    assert_eq!(read_line(&mut conn), "served 35");
    let recycled = common::count(&host, "(--recycle-after 10)");
    assert!(recycled >= 2, "{recycled}:\n{}", host.log());
}

/// With the default `--swap drain`, a recycled instance keeps its open connections
/// and new ones go to the fresh instance: a leaking guest serving short connections
/// never runs out.
#[test]
fn with_drain_new_connections_go_to_the_fresh_instance() {
    let host = serve_leaks(&["--max-memory", "8MiB", "--admin", "127.0.0.1:0"]);
    for i in 0..120 {
        echo(&mut host.connect(), &format!("line {i}"));
    }
    let log = host.log();
    assert!(!log.contains("out of memory"), "{log}");
    let recycles = host.metric("sandsock_recycles_total", &[]);
    assert!(recycles >= 4.0, "{recycles} recycles:\n{log}");
    assert!(log.contains("drains"), "{log}");
}
