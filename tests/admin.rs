//! The admin listener: `/metrics` parses as Prometheus text and moves as the host
//! works; `/readyz` follows crash-loop back-off; `POST /reload` swaps; unknown paths
//! and methods are refused; a client trickling its request is dropped; a
//! non-loopback address needs `--admin-allow-remote`; `host health` asks it as a
//! container's health check would.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    Host, assert_closed_without_answer, example, fresh_body, http_v2, install, run_host, scratch,
    test_guest, wait_swapped_to,
};

const ADMIN: [&str; 2] = ["--admin", "127.0.0.1:0"];

/// Waits until `metric` (summed over samples with `labels`) reaches `want`, or panics
/// with what it was: the loop publishes once per turn, so a scrape may be a turn
/// behind.
fn wait_metric(host: &Host, metric: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = host.metric(metric, labels);
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{metric}{labels:?} is {value}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serves a guest file (`bytes`) with `--admin`; returns the host and the file.
fn serve_file_with_admin(name: &str, bytes: &[u8], flags: &[&str]) -> (Host, std::path::PathBuf) {
    let path = scratch(name).join("guest.wasm");
    install(&path, bytes);
    let mut args = vec!["--guest", path.to_str().unwrap(), "--no-tier-up"];
    args.extend_from_slice(&ADMIN);
    args.extend_from_slice(flags);
    (Host::start(&args), path)
}

#[test]
fn requests_move_the_connection_and_byte_counters() {
    let host = Host::start(&["--guest", "http", ADMIN[0], ADMIN[1]]);
    assert_eq!(host.metric("sandsock_connections_accepted_total", &[]), 0.0);
    let addr = host.addr.to_string();
    let out = run_host(&[
        "load", &addr, "--http", "--close", "-c", "4", "-n", "100", "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_metric(&host, "sandsock_connections_accepted_total", &[], 100.0);
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    assert_eq!(
        host.metric("sandsock_read_bytes_total", &[]),
        (100 * request.len()) as f64,
        "every request's bytes, read by the guest"
    );
    let written = host.metric("sandsock_written_bytes_total", &[]);
    assert!(written >= 100.0 * 6.0, "at least the bodies: {written}");
    wait_metric(&host, "sandsock_connections_open", &[], 0.0);
    // One call per batch: connections that arrive together share calls, so the
    // events, not the calls, are what 100 connections fix from below: the loop's
    // events, an accept each (the request is read with it, or in a later call).
    let scrape = host.metrics();
    let calls = common::metric_value(&scrape, "sandsock_guest_calls_total", &[]);
    let events = common::metric_value(&scrape, "sandsock_guest_call_events_sum", &[]);
    assert!(
        events >= 100.0,
        "an accept for each of 100 connections: {events} events"
    );
    assert!(
        calls >= 1.0 && calls <= events,
        "{calls} calls, {events} events"
    );
    let count = common::metric_value(&scrape, "sandsock_guest_call_duration_seconds_count", &[]);
    assert_eq!(count, calls, "every call timed");
    let count = common::metric_value(&scrape, "sandsock_guest_call_events_count", &[]);
    assert_eq!(count, calls, "every call's events counted");
    for histogram in [
        "sandsock_guest_call_duration_seconds",
        "sandsock_guest_call_events",
    ] {
        let top = scrape
            .samples
            .iter()
            .find(|sample| sample.metric == histogram)
            .and_then(|sample| match &sample.value {
                prometheus_parse::Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|bucket| bucket.less_than == f64::INFINITY)
                    .map(|bucket| bucket.count),
                _ => None,
            });
        assert_eq!(
            top,
            Some(calls),
            "{histogram}: a +Inf bucket holding every call"
        );
    }
    assert_eq!(
        host.metric(
            "sandsock_generation_info",
            &[("generation", "1"), ("guest", "http")]
        ),
        1.0
    );
}

#[test]
fn a_trap_is_counted_by_its_cause() {
    let guest = test_guest("panics");
    let host = Host::start(&["--guest", guest.to_str().unwrap(), ADMIN[0], ADMIN[1]]);
    let mut client = host.connect();
    client.write_all(b"TRIGGER\n").unwrap();
    assert_closed_without_answer(&mut client, "the trapping connection");
    wait_metric(
        &host,
        "sandsock_guest_traps_total",
        &[("cause", "unreachable")],
        1.0,
    );
    assert_eq!(host.metric("sandsock_guest_traps_total", &[]), 1.0);
}

#[test]
fn a_reload_swaps_and_a_refused_one_is_counted() {
    let (host, path) = serve_file_with_admin("admin-reload", &example("http"), &[]);
    install(&path, &http_v2());
    let (status, body) = host.admin_request("POST", "/reload");
    assert_eq!((status, body.as_str()), (202, "reloading\n"));
    wait_swapped_to(&host, 2);
    assert_eq!(fresh_body(&host), "hello v2\n");
    wait_metric(&host, "sandsock_swaps_total", &[], 1.0);
    let v2_digest = host
        .log()
        .lines()
        .find(|line| line.contains("generation 2 ("))
        .and_then(|line| line.split("generation 2 (").nth(1))
        .map(|rest| rest[..12].to_string())
        .expect("the log names generation 2's digest");
    wait_metric(
        &host,
        "sandsock_generation_info",
        &[("generation", "2"), ("sha256", &v2_digest)],
        1.0,
    );
    let swap_count =
        common::metric_value(&host.metrics(), "sandsock_swap_duration_seconds_count", &[]);
    assert_eq!(swap_count, 1.0);

    std::fs::write(&path, b"not a component at all").unwrap();
    assert_eq!(host.admin_request("POST", "/reload").0, 202);
    wait_metric(
        &host,
        "sandsock_reloads_refused_total",
        &[("stage", "load")],
        1.0,
    );
    assert_eq!(
        fresh_body(&host),
        "hello v2\n",
        "the serving generation goes on"
    );
}

/// Connects until the guest (one that traps on every connection) is seen backing
/// off by `/readyz` (and `/metrics`), or by `seen` too: each connection after a
/// back-off traps again and doubles the next one (10 ms at first), so a check slower
/// than the first back-offs sees one in the end.
fn drive_into_back_off(host: &Host, seen: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut client = host.connect();
        let _ = client.write_all(b"hello\n");
        assert_closed_without_answer(&mut client, "a connection to a crash-looping guest");
        let (status, body) = host.admin_request("GET", "/readyz");
        if status == 503 {
            assert!(body.contains("crash-loop back-off"), "{body}");
            if host.metric("sandsock_guest_backoff", &[]) == 1.0 && seen() {
                return;
            }
        } else {
            assert_eq!(status, 200, "{body}");
        }
        assert!(
            Instant::now() < deadline,
            "never seen backing off:\n{}",
            host.log()
        );
    }
}

#[test]
fn readiness_returns_when_the_back_off_ends_without_any_traffic() {
    let guest = test_guest("traps_always");
    let host = Host::start(&["--guest", guest.to_str().unwrap(), ADMIN[0], ADMIN[1]]);
    let admin = host.admin.unwrap().to_string();
    let health = |flags: &[&str]| run_host(&[&["health", admin.as_str()], flags].concat());
    // `host health`, as a container's health checks run it: alive, and not ready.
    drive_into_back_off(&host, || {
        let not_ready = health(&["--ready"]);
        let said = String::from_utf8_lossy(&not_ready.stderr);
        if not_ready.status.success() {
            return false; // the back-off ended before the probe asked
        }
        assert_eq!(not_ready.status.code(), Some(1), "{not_ready:?}");
        assert!(
            said.starts_with(&format!("error: {admin}/readyz answered 503"))
                && said.lines().count() == 1,
            "{said}"
        );
        true
    });
    let alive = health(&[]);
    assert!(alive.status.success(), "{alive:?}");
    assert_eq!(
        String::from_utf8_lossy(&alive.stdout),
        format!("{admin}/healthz: ok\n")
    );
    // No connection comes: the loop wakes at the back-off's end by itself (at most
    // 5 s after the last trap) and publishes that.
    wait_ready(&host, "after the back-off");
    assert_eq!(host.metric("sandsock_guest_backoff", &[]), 0.0);
    let ready = health(&["--ready"]);
    assert!(ready.status.success(), "{ready:?}");
}

#[test]
fn host_health_names_an_admin_listener_it_cannot_reach() {
    // A port just freed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run_host(&["health", &port.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with(&format!("error: cannot reach the admin listener at {port}"))
            && said.lines().count() == 1,
        "{said}"
    );
}

/// Polls `/readyz` until it answers 200, for at most 10 s.
fn wait_ready(host: &Host, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.admin_request("GET", "/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready {when}:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn readyz_follows_crash_loop_back_off() {
    let (host, path) = serve_file_with_admin(
        "admin-ready",
        &std::fs::read(test_guest("traps_always")).unwrap(),
        &[],
    );
    assert_eq!(
        host.admin_request("GET", "/healthz"),
        (200, "ok\n".to_string())
    );
    drive_into_back_off(&host, || true);
    install(&path, &example("echo"));
    assert_eq!(host.admin_request("POST", "/reload").0, 202);
    wait_swapped_to(&host, 2);
    wait_ready(&host, "after the fix");
    assert_eq!(host.admin_request("GET", "/healthz").0, 200);
}

#[test]
fn unknown_paths_and_methods_are_refused_and_a_built_in_guest_cannot_reload() {
    let host = Host::start(&["--guest", "echo", ADMIN[0], ADMIN[1]]);
    assert_eq!(host.admin_request("GET", "/nope").0, 404);
    assert_eq!(host.admin_request("GET", "/reload").0, 405);
    assert_eq!(host.admin_request("POST", "/metrics").0, 405);
    let (status, body) = host.admin_request("POST", "/reload");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("built-in guest"), "{body}");
}

#[test]
fn a_non_loopback_admin_address_needs_admin_allow_remote() {
    let out = run_host(&[
        "--guest",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "0.0.0.0:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains("--admin 0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
    assert!(line.contains("--admin-allow-remote"), "{stderr}");
}

#[test]
fn a_client_trickling_its_request_is_dropped_and_the_next_is_served() {
    let host = Host::start(&["--guest", "echo", ADMIN[0], ADMIN[1]]);
    let mut slow = TcpStream::connect(host.admin.unwrap()).unwrap();
    // A byte every 200 ms: no single read waits long, but the request never ends.
    // The listener gives a request 2 s in all; a write fails once it has closed.
    let started = Instant::now();
    let mut dropped = false;
    while started.elapsed() < Duration::from_secs(8) {
        if slow.write_all(b"G").is_err() {
            dropped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        dropped,
        "still reading the trickle after {:?}",
        started.elapsed()
    );
    assert_eq!(host.admin_request("GET", "/healthz").0, 200);
}
