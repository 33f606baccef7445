//! Recycling: a guest that leaks is renewed by a fresh instance of the same code
//! before it runs out of memory (`--recycle-at-memory`, by default 3/4 of
//! `--max-memory`) or after a number of calls (`--recycle-after`). A guest that keeps
//! state (the `leaks` guest does) has its connections and state moved to the fresh
//! instance whatever `--swap` says: with drain, a keep-alive connection would stay on
//! the instance that leaks until it ran out. Nothing is closed.

mod common;

use std::io::Write;
use std::time::Duration;

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
    // The default --swap drain: recycling hands over all the same.
    let host = serve_leaks(&["--max-memory", "8MiB", "--admin", "127.0.0.1:0"]);
    // 120 lines leak 30 MiB, four times the cap: without recycling the instance runs
    // out of memory after about 25, and its connections are closed; so it does if the
    // kept connection stays on the old instance.
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
    let host = serve_leaks(&["--recycle-after", "10"]);
    let mut conn = host.connect();
    for i in 0..35 {
        echo(&mut conn, &format!("line {i}"));
    }
    conn.write_all(b"COUNT\n").unwrap();
    assert_eq!(read_line(&mut conn), "served 35");
    // The log reaches the test through a reader thread that may lag the answers.
    host.wait_for_more_log("(--recycle-after 10)", 1, Duration::from_secs(10));
}
