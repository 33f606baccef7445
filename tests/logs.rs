//! The host's log: JSON objects a machine can read line by line, with stable field
//! names; plain text without colour when stderr is not a terminal; and no guest or
//! client can make it grow past its budgets.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Host, Lines, assert_closed_without_answer, count, example, host_bin, install, read_line,
    serve_file, strip_ansi, test_cache_home, test_guest, wait_swapped_to,
};
use serde_json::Value;

/// The JSON records of a host's log: every line must be one.
fn records(host: &Host) -> Vec<Value> {
    host.log()
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

fn find<'a>(records: &'a [Value], message: &str) -> &'a Value {
    records
        .iter()
        .find(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .unwrap_or_else(|| panic!("no record {message:?} in {records:#?}"))
}

#[test]
fn json_logs_parse_line_by_line_and_carry_their_fields() {
    let guest = test_guest("panics");
    let bytes = std::fs::read(&guest).unwrap();
    let (host, path) = serve_file(
        "json",
        &bytes,
        &["--log-format", "json", "--admin", "127.0.0.1:0"],
    );
    let mut client = host.connect();
    client.write_all(b"TRIGGER\n").unwrap();
    assert_closed_without_answer(&mut client, "the trapping connection");
    host.wait_for_log("guest trapped", Duration::from_secs(10));
    install(&path, &example("echo"));
    host.signal(libc::SIGHUP);
    wait_swapped_to(&host, 2);

    let records = records(&host);
    for record in &records {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(record.get(field).is_some(), "no {field} in {record}");
        }
    }
    // The lines that say where it listens are records too, the address a field.
    let listening = find(&records, "listening on ");
    assert_eq!(listening["address"], host.addr.to_string(), "{listening}");
    assert_eq!(listening["listener"], "plain", "{listening}");
    let admin = find(&records, "admin listening on ");
    assert_eq!(admin["listener"], "admin", "{admin}");
    let loaded = find(&records, "guest ");
    assert_eq!(loaded["guest"], "guest");
    assert!(loaded["took_ms"].is_f64(), "{loaded}");
    let serving = find(&records, "generation 1 (");
    assert_eq!(serving["generation"], 1);
    assert_eq!(
        serving["sha256"].as_str().map(str::len),
        Some(12),
        "{serving}"
    );
    let trap = find(&records, "guest trapped: ");
    assert_eq!(trap["cause"], "unreachable");
    assert_eq!(trap["guest"], "guest");
    assert_eq!(trap["generation"], 1);
    let swap = find(&records, "swap to generation 2 ");
    assert_eq!(swap["generation"], 2);
    assert!(
        swap["took_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{swap}"
    );
}

/// A child process killed (and reaped) on drop, so that a failing test leaves none.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn text_logs_into_a_pipe_have_no_colour() {
    // Not `Host::start`, whose log has the colours stripped: the raw pipe is read.
    let mut child = Reaped(
        Command::new(host_bin())
            .args(["--guest", "echo", "--listen", "127.0.0.1:0"])
            .env("XDG_CACHE_HOME", test_cache_home())
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = Lines::read(child.0.stderr.take().unwrap());
    // Up: its `listening on` line, written once the signal handlers are in place.
    lines.wait_for(
        |line| line.starts_with("listening on "),
        Duration::from_secs(120),
    );
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    lines.read_to_end(Duration::from_secs(20));
    let log = lines.text();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("serving"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a piped log: {log:?}"
    );
}

#[test]
fn a_guest_printing_without_end_grows_the_log_by_its_budget_only() {
    let guest = test_guest("prints_lines");
    let host = Host::start(&["--guest", guest.to_str().unwrap(), "--event-timeout", "30s"]);
    let mut others: Vec<_> = (0..5).map(|_| host.connect()).collect();
    for (i, other) in others.iter_mut().enumerate() {
        other.write_all(format!("before {i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(other), format!("before {i}"));
    }
    let before = host.log().len();
    let mut printer = host.connect();
    printer.write_all(b"TRIGGER\n").unwrap();
    assert_eq!(read_line(&mut printer), "printed", "the call finished");
    // Every line is logged, or counted in a `dropped` line (the last within a second,
    // at the loop's tick).
    let accounted = || {
        let dropped: usize = host
            .log()
            .lines()
            .filter_map(|line| line.split("guest output: ").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .sum();
        dropped + count(&host, "of a guest that prints without end")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while accounted() < 200_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        accounted(),
        200_000,
        "every line logged or counted as dropped"
    );
    let grown = host.log().len() - before;
    eprintln!("200,000 guest lines grew the log by {grown} bytes");
    assert!(
        grown <= 1 << 20,
        "200,000 lines grew the log by {grown} bytes"
    );
    for (i, other) in others.iter_mut().enumerate() {
        other.write_all(format!("after {i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(other), format!("after {i}"));
    }

    // Past its budget in every call: the drops are reported at most once a second
    // (and at the tick after), not once per call.
    let reports = || count(&host, "guest output: ");
    let before = reports();
    let started = Instant::now();
    for _ in 0..50 {
        printer.write_all(b"MORE\n").unwrap();
        assert_eq!(read_line(&mut printer), "printed more");
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    while accounted() < 250_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(accounted(), 250_000, "every line logged or counted");
    let made = reports() - before;
    assert!(
        made <= seconds + 2,
        "{made} reports for 50 calls in {seconds} s"
    );
}

#[test]
fn a_guest_any_client_can_make_trap_backs_off_and_cannot_flood_the_log() {
    // Ten connections to a good generation, then a swap (drain) to one that panics on
    // every `accepted`: the ten stay with the good one.
    let (host, path) = serve_file(
        "trap-flood",
        &example("echo"),
        &["--isolation", "connection", "--admin", "127.0.0.1:0"],
    );
    let mut others: Vec<_> = (0..10).map(|_| host.connect()).collect();
    for (i, other) in others.iter_mut().enumerate() {
        other.write_all(format!("before {i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(other), format!("before {i}"));
    }
    install(
        &path,
        &std::fs::read(test_guest("panics_on_accept")).unwrap(),
    );
    host.signal(libc::SIGHUP);
    wait_swapped_to(&host, 2);
    let before = host.log().len();
    let started = Instant::now();
    let addr = host.addr.to_string();
    let out = common::run_host(&[
        "load",
        &addr,
        "--close",
        "-c",
        "20",
        "-n",
        "20000",
        "--quiet",
        "--timeout",
        "120",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("requests ok:    0 of 20000"), "{report}");
    let grown = host.log().len() - before;
    eprintln!(
        "20,000 trapping connections grew the log by {grown} bytes in {:?}",
        started.elapsed()
    );
    assert!(
        grown <= 1 << 20,
        "20,000 connections grew the log by {grown} bytes in {:?}",
        started.elapsed()
    );
    let traps = host.metric("sandsock_guest_traps_total", &[]);
    let refused = host.metric(
        "sandsock_connections_refused_total",
        &[("reason", "guest_down")],
    );
    assert!(
        refused > 0.0,
        "the guest backed off: {refused} refused, {traps} traps"
    );
    assert!(
        traps < 20_000.0,
        "not every connection reached the guest: {traps} traps"
    );
    for (i, other) in others.iter_mut().enumerate() {
        other.write_all(format!("after {i}\n").as_bytes()).unwrap();
        assert_eq!(
            read_line(other),
            format!("after {i}"),
            "an older connection"
        );
    }
}

#[test]
fn a_guest_writes_through_the_log_import_at_its_levels_within_its_budget() {
    let guest = test_guest("prints_lines");
    let host = Host::start(&["--guest", guest.to_str().unwrap()]);
    let mut client = host.connect();
    client.write_all(b"LOG\n").unwrap();
    assert_eq!(read_line(&mut client), "logged");
    host.wait_for_log("guest output: ", Duration::from_secs(5));
    let log = host.log();
    let line_at = |name: &str| {
        log.lines()
            .find(|line| line.contains(&format!("a line at {name} through the log import")))
            .map(strip_ansi)
    };
    // Each level is the record's own, and the guest is named.
    for (name, level) in [("error", "ERROR"), ("warn", "WARN"), ("info", "INFO")] {
        let line = line_at(name).unwrap_or_else(|| panic!("no {name} line in {log}"));
        assert!(line.contains(level), "{line}");
        assert!(line.contains("guest=\"prints_lines\""), "{line}");
    }
    // The host logs at info by default: debug and trace are filtered out.
    assert_eq!(line_at("debug"), None);
    assert_eq!(line_at("trace"), None);
    // The same budget as stdout: every line is logged or counted as dropped.
    let logged = count(&host, "of a guest past its budget");
    let dropped: usize = log
        .lines()
        .filter_map(|line| line.split("guest output: ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(logged < 1_000, "all {logged} lines logged, past the budget");
    assert_eq!(
        logged + dropped,
        1_000,
        "{logged} logged, {dropped} dropped"
    );
}

/// `RUST_LOG=debug` is the host's own debug lines (each connection, say), not the
/// compiler's: with a guest being compiled, Cranelift alone used to write thousands
/// of lines. Dependencies stay at `warn` unless a directive names them.
#[test]
fn a_bare_debug_level_is_the_hosts_own() {
    let dir = common::scratch("debug-level");
    let path = dir.join("guest.wasm");
    install(&path, &example("echo"));
    let host =
        common::start_with_log_level(&["--guest", path.to_str().unwrap(), "--no-cache"], "debug");
    let mut client = host.connect();
    client.write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&mut client), "ping");
    host.wait_for_log("accepted", Duration::from_secs(10));
    let log = host.log();
    let lines = log.lines().count();
    assert!(log.contains("compiled"), "the guest was compiled:\n{log}");
    assert!(
        lines < 200,
        "{lines} lines at RUST_LOG=debug; the first ones:\n{}",
        log.lines().take(40).collect::<Vec<_>>().join("\n")
    );
}
