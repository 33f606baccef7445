//! The sandbox against misbehaving guests: whatever a guest does, the host keeps
//! serving, loses no other connection's data, and grants nothing it was not told to.
//!
//! The misbehaving guests (guest/testing/) behave like `echo` until a connection
//! sends `TRIGGER`.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Host, assert_closed_without_answer, read_line, read_until_closed, test_guest};

/// Echo clients that keep round-tripping numbered lines while a test misbehaves on
/// another connection; `stop` returns how many round trips each made, and panics
/// on any error or wrong byte.
struct Bystanders {
    stop: Arc<AtomicBool>,
    /// Round trips so far, per thread (a trip is one round trip of each of its
    /// clients).
    trips: Arc<Vec<AtomicU64>>,
    workers: Vec<thread::JoinHandle<u64>>,
}

impl Bystanders {
    fn start(host: &Host, count: usize) -> Bystanders {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<TcpStream> = (0..count).map(|_| host.connect()).collect();
        // Four threads share the clients, so that the round trips overlap.
        let mut groups: Vec<Vec<TcpStream>> = (0..4).map(|_| Vec::new()).collect();
        for (i, client) in clients.into_iter().enumerate() {
            groups[i % 4].push(client);
        }
        let trips: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
        let workers = groups
            .into_iter()
            .enumerate()
            .map(|(g, mut clients)| {
                let (stop, counter) = (stop.clone(), trips.clone());
                thread::spawn(move || {
                    let mut trips = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for (i, client) in clients.iter_mut().enumerate() {
                            let line = format!("bystander {g}.{i} trip {trips}\n");
                            client.write_all(line.as_bytes()).expect("bystander write");
                            let mut back = vec![0; line.len()];
                            client.read_exact(&mut back).expect("bystander read");
                            assert_eq!(back, line.as_bytes(), "a bystander's echo differs");
                        }
                        trips += 1;
                        counter[g].store(trips, Ordering::Relaxed);
                    }
                    trips
                })
            })
            .collect();
        Bystanders {
            stop,
            trips,
            workers,
        }
    }

    /// The round trips each thread has made so far.
    fn trips(&self) -> Vec<u64> {
        self.trips
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits until every thread has made a round trip more than `since` says (from
    /// [`Bystanders::trips`]), or one has failed (`stop` reports how), for at most
    /// 20 s.
    fn wait_past(&self, since: &[u64], when: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.trips();
            if now.iter().zip(since).all(|(now, since)| now > since)
                || self.workers.iter().any(|w| w.is_finished())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bystanders made no round trip {when}: {now:?}, {since:?} before"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.workers
            .into_iter()
            .map(|w| w.join().expect("a bystander failed"))
            .collect()
    }
}

/// Sends `TRIGGER` and measures how long until the host closes the connection.
fn trigger_and_time_cut_off(host: &Host) -> Duration {
    let mut victim = host.connect();
    victim.write_all(b"warm up\n").unwrap();
    assert_eq!(read_line(&mut victim), "warm up");
    let started = Instant::now();
    victim.write_all(b"TRIGGER\n").unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match victim.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("the triggering connection was not closed: {e}"),
        }
    }
}

/// In `connection` isolation a trap closes only the triggering connection, within the
/// event timeout plus a margin, while 50 others keep round-tripping.
fn cut_off_alone(guest: &str, cause: &str) {
    let path = test_guest(guest);
    let host = Host::start(&[
        "--guest",
        path.to_str().unwrap(),
        "--isolation",
        "connection",
        "--event-timeout",
        "100ms",
        "--max-memory",
        "16MiB",
    ]);
    let bystanders = Bystanders::start(&host, 50);
    // Round-tripping before the trigger, and on after the cut-off.
    bystanders.wait_past(&[0; 4], "before the trigger");
    let cut_off = trigger_and_time_cut_off(&host);
    bystanders.wait_past(&bystanders.trips(), "after the cut-off");
    let trips = bystanders.stop();
    assert!(
        trips.iter().all(|&t| t > 0),
        "some bystanders made no round trip: {trips:?}"
    );
    // 100 ms of timeout; the margin covers a loaded CI machine.
    assert!(
        cut_off < Duration::from_millis(1500),
        "{guest}: cut off after {cut_off:?}"
    );
    host.wait_for_log("guest trapped", Duration::from_secs(5));
    let log = host.log();
    assert!(
        log.contains(cause),
        "{guest}: the log does not name the cause {cause:?}:\n{log}"
    );
    assert_eq!(
        log.matches("guest trapped").count(),
        1,
        "{guest}: one trap, logged once:\n{log}"
    );
    // The host prints the guest's backtrace itself; a guest's environment cannot be
    // set, so the Rust runtime's hint to set RUST_BACKTRACE means nothing here.
    assert!(!log.contains("RUST_BACKTRACE"), "{guest}:\n{log}");
    eprintln!("{guest}: cut off after {cut_off:?}; bystander round trips {trips:?}");
}

#[test]
fn a_guest_that_loops_is_cut_off_alone_by_the_timeout() {
    cut_off_alone("loops_forever", "timeout");
}

#[test]
fn a_guest_that_grows_memory_is_cut_off_alone_out_of_memory() {
    cut_off_alone("grows_memory", "out of memory");
}

#[test]
fn a_guest_that_panics_is_cut_off_alone() {
    cut_off_alone("panics", "unreachable");
}

#[test]
fn a_guest_that_overflows_its_stack_is_cut_off_alone() {
    cut_off_alone("overflows_stack", "stack overflow");
}

/// In `shared` isolation a trap closes every connection of the instance, and a new
/// connection is served by a fresh one.
#[test]
fn shared_isolation_serves_new_connections_after_each_trap() {
    for (guest, cause) in [
        ("panics", "unreachable"),
        ("loops_forever", "timeout"),
        ("overflows_stack", "stack_overflow"),
        ("grows_memory", "out_of_memory"),
    ] {
        let path = test_guest(guest);
        let host = Host::start(&[
            "--guest",
            path.to_str().unwrap(),
            "--max-memory",
            "16MiB",
            "--admin",
            "127.0.0.1:0",
        ]);
        for round in 0..3 {
            trigger_and_time_cut_off(&host);
            assert_served_soon(&host, &format!("{guest} after trap {round}"));
        }
        // Logged in full once; the two after it, of the same cause, are counted.
        assert_eq!(count_in_log(&host, "guest trapped: "), 1, "{}", host.log());
        assert_eq!(
            host.metric("sandsock_guest_traps_total", &[("cause", cause)]),
            3.0,
            "{guest}"
        );
        assert_eq!(
            host.metric("sandsock_guest_traps_total", &[]),
            3.0,
            "{guest}"
        );
    }
}

/// A trap is named by its own call: a guest that had an allocation refused and
/// handled it (a `try_reserve` of 1 GiB under a 16 MiB cap) and panics in a later
/// call trapped on `unreachable`, not out of memory.
#[test]
fn a_refused_allocation_handled_earlier_does_not_name_a_later_trap() {
    let path = test_guest("grows_memory");
    let host = Host::start(&[
        "--guest",
        path.to_str().unwrap(),
        "--max-memory",
        "16MiB",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut client = host.connect();
    client.write_all(b"TRY\n").unwrap();
    assert_eq!(
        read_line(&mut client),
        "refused",
        "the cap refused, the guest coped"
    );
    client.write_all(b"PANIC\n").unwrap();
    read_until_closed(&mut client);
    host.wait_metric(
        "sandsock_guest_traps_total",
        &[],
        |traps| traps == 1.0,
        Duration::from_secs(10),
    );
    // The metric can be published before the log line reaches the test's reader.
    host.wait_for_log("guest trapped: ", Duration::from_secs(10));
    let traps = |cause| host.metric("sandsock_guest_traps_total", &[("cause", cause)]);
    assert_eq!(traps("unreachable"), 1.0, "{}", host.log());
    assert_eq!(traps("out_of_memory"), 0.0, "{}", host.log());
    assert!(!host.log().contains("out of memory"), "{}", host.log());
}

fn count_in_log(host: &Host, needle: &str) -> usize {
    host.log().matches(needle).count()
}

/// A new connection round-trips within a few seconds (a guest that trapped twice
/// in a row backs off briefly, and connections meanwhile are closed).
fn assert_served_soon(host: &Host, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut client = host.connect();
        if client.write_all(b"still there?\n").is_ok() {
            let mut back = [0u8; 13];
            if client.read_exact(&mut back).is_ok() && &back == b"still there?\n" {
                return;
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: no new connection was served\n{}", host.log());
}

#[test]
fn a_guest_that_tries_to_escape_is_denied_everything_but_its_env() {
    let probe = std::path::Path::new("/tmp/sandsock-escape-probe");
    let _ = std::fs::remove_file(probe);
    let path = test_guest("escapes");
    let mut host = Host::start(&["--guest", path.to_str().unwrap(), "--env", "GRANTED=yes"]);
    let mut client = host.connect();
    client.write_all(b"TRIGGER\n").unwrap();
    let mut lines = Vec::new();
    loop {
        let line = read_line(&mut client);
        if line == "done" {
            break;
        }
        lines.push(line);
        assert!(lines.len() < 50, "no `done` line: {lines:?}");
    }
    assert!(lines.len() >= 7, "every attempt reports a line: {lines:?}");
    let host_dir = std::env::current_dir().unwrap().display().to_string();
    for line in &lines {
        if line.starts_with("env:") {
            assert_eq!(
                line, "env: ALLOWED [GRANTED]",
                "only the granted variable is visible"
            );
        } else if line.starts_with("cwd:") {
            // WASI always has a current directory; it must not be the host's.
            assert!(
                !line.contains(&host_dir),
                "the host's directory leaked: {line}"
            );
        } else {
            assert!(
                line.contains("denied"),
                "an escape attempt was not denied: {line}"
            );
        }
    }
    assert!(!probe.exists(), "the guest wrote a file on the host's disk");
    assert!(host.is_running());
}

#[test]
fn a_guest_that_floods_is_held_to_its_buffer_and_others_are_served() {
    let path = test_guest("floods");
    const MAX_BUFFER: f64 = (256 * 1024) as f64;
    let host = Host::start(&[
        "--guest",
        path.to_str().unwrap(),
        "--max-buffer",
        "256KiB",
        "--admin",
        "127.0.0.1:0",
    ]);
    // Measure from a host that has served: its loop runs, its instance answers.
    {
        let mut first = host.connect();
        first.write_all(b"up?\n").unwrap();
        assert_eq!(read_line(&mut first), "up?");
    }
    let rss_before = host.rss();
    let bystanders = Bystanders::start(&host, 10);
    let mut flooded = host.connect();
    flooded.write_all(b"TRIGGER\n").unwrap();
    // The flooded client does not read, for two seconds and at least until the
    // flood has filled the connection's buffer (the host holds `--max-buffer` for
    // it) and every bystander has made a round trip since: the guest writes
    // without end.
    // Held: on epoll the guest's writes fill the buffer to the bound, and stay
    // there. On the ring (`--io uring`) they fill it too, but the send in flight
    // holds part of it, which the kernel takes in pieces, and the guest hears
    // `writable` again only at half the bound: it settles between the two.
    let held_at = if common::on_uring() {
        MAX_BUFFER / 2.0
    } else {
        MAX_BUFFER
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut peak = 0;
    let mut at_cap: Option<Vec<u64>> = None;
    loop {
        thread::sleep(Duration::from_millis(100));
        peak = peak.max(host.rss());
        if at_cap.is_none() && host.metric("sandsock_write_buffer_bytes", &[]) >= held_at {
            at_cap = Some(bystanders.trips());
        }
        let served_since = at_cap.as_ref().is_some_and(|at_cap| {
            bystanders
                .trips()
                .iter()
                .zip(at_cap)
                .all(|(now, then)| now > then)
        });
        if served_since && started.elapsed() >= Duration::from_secs(2) {
            break;
        }
        if bystanders.workers.iter().any(|w| w.is_finished()) {
            break; // `stop` says how it failed
        }
        assert!(
            Instant::now() < deadline,
            "the flood never filled the buffer ({at_cap:?}), or the bystanders stalled ({:?}):\n{}",
            bystanders.trips(),
            host.log()
        );
    }
    let trips = bystanders.stop();
    assert!(
        trips.iter().all(|&t| t > 0),
        "bystanders starved: {trips:?}"
    );
    let growth = peak.saturating_sub(rss_before);
    assert!(
        growth < 32 << 20,
        "host RSS grew by {} MiB under a flood",
        growth >> 20
    );
    // The flood is real: the client can read a lot of it.
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < 4 << 20 {
        got += flooded.read(&mut buf).expect("read the flood");
    }
}

#[test]
fn a_guest_that_sets_timers_without_end_meets_the_cap() {
    let path = test_guest("sets_timers");
    let host = Host::start(&["--guest", path.to_str().unwrap(), "--max-timers", "100"]);
    let mut client = host.connect();
    client.write_all(b"TRIGGER\n").unwrap();
    assert_eq!(
        read_line(&mut client),
        "timers: 100 armed, then limit-exceeded"
    );
    // And it goes on echoing.
    client.write_all(b"after\n").unwrap();
    assert_eq!(read_line(&mut client), "after");
}

#[test]
fn a_guest_that_abuses_the_host_gets_an_error_value_for_each_bad_call() {
    let path = test_guest("abuses_host");
    let mut host = Host::start(&["--guest", path.to_str().unwrap()]);
    let mut client = BufReader::new(host.connect());
    client.get_mut().write_all(b"TRIGGER\n").unwrap();
    let answers = read_report(&mut client);
    let answer = |call: &str| -> &str {
        answers
            .iter()
            .find_map(|line| line.strip_prefix(call)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no answer for {call}: {answers:?}"))
    };
    for call in ["write(0)", "write(u64::MAX)", "write(unknown)"] {
        assert_eq!(answer(call), "failed(unknown-conn)", "{call}");
    }
    assert_eq!(answer("tls(unknown)"), "none");
    // Since contract 0.4.0: closing or shutting down an unknown handle is ignored.
    assert_eq!(answer("shutdown-write(unknown)"), "returned");
    assert_eq!(answer("close(unknown)"), "returned");
    assert_eq!(answer("set-timer(u32::MAX)"), "failed(limit-exceeded)");
    assert_eq!(answer("peer(unknown)"), "none");
    // On the ring, where an accept gives no address, asked of the socket.
    let me = client.get_ref().local_addr().unwrap();
    assert_eq!(answer("peer(self)"), format!("some({me})"));
    assert_eq!(answer("connect(not an address)"), "failed(invalid-address)");
    assert_eq!(answer("connect(127.0.0.1:1)"), "failed(not-permitted)");
    let huge_write = answer("write(self, 8MiB)");
    assert!(
        huge_write.starts_with("accepted(") || huge_write == "would-block",
        "{huge_write}"
    );

    // The calls after its own close, reported on the next connection.
    let mut next = BufReader::new(host.connect());
    next.get_mut().write_all(b"REPORT\n").unwrap();
    let after_close = read_report(&mut next);
    assert_eq!(
        after_close,
        [
            "close(self)=returned",
            "close(again)=returned",
            "write(after close)=failed(unknown-conn)"
        ]
    );
    assert!(host.is_running());
    assert!(!host.log().contains("panicked"), "{}", host.log());
}

/// Reads report lines until `done`, skipping empty ones (the 8 MiB of newlines the
/// abusing guest writes to its own connection).
fn read_report(client: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = client.read_line(&mut line).expect("read a report line");
        assert!(n > 0, "the report ended without `done`: {lines:?}");
        let line = line.trim_end();
        match line {
            "" => continue,
            "done" => return lines,
            _ => lines.push(line.to_string()),
        }
        assert!(lines.len() < 100, "no `done` line: {lines:?}");
    }
}

/// A guest that traps in every call must not make the host spin: it backs off, keeps
/// closing new connections, and still answers a signal at once.
#[test]
fn a_crash_looping_guest_does_not_make_the_host_spin() {
    let path = test_guest("traps_always");
    let mut host = Host::start(&["--guest", path.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut attempts = 0;
    while Instant::now() < deadline {
        attempts += 1;
        let mut client = host.connect();
        let _ = client.write_all(b"hello\n");
        let mut buf = [0u8; 16];
        // Closed, one way or another, and never answered.
        match client.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("a crash-looping guest answered: {other:?}"),
        }
        thread::sleep(Duration::from_millis(20));
    }
    let traps = host.metric("sandsock_guest_traps_total", &[]) as usize;
    assert!(traps >= 2, "the guest should have trapped: {}", host.log());
    assert!(
        traps < attempts,
        "with back-off, not every connection reaches the guest ({traps} traps)"
    );
    host.signal(libc::SIGTERM);
    let status = host
        .wait_exit(Duration::from_secs(5))
        .expect("the host answers SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// `--fuel` cuts a loop off by its instruction budget, the same on every machine,
/// long before the (here generous) wall-time deadline.
#[test]
fn a_guest_that_loops_runs_out_of_fuel_when_fuel_is_set() {
    let path = test_guest("loops_forever");
    let host = Host::start(&[
        "--guest",
        path.to_str().unwrap(),
        "--fuel",
        "10000000",
        "--event-timeout",
        "30s",
    ]);
    let cut_off = trigger_and_time_cut_off(&host);
    assert!(
        cut_off < Duration::from_secs(10),
        "fuel did not stop the loop: {cut_off:?}"
    );
    host.wait_for_log("guest trapped: out of fuel", Duration::from_secs(5));
    assert_served_soon(&host, "after running out of fuel");
}

/// Past `--max-connections` new connections are accepted and closed at once; the
/// listener does not stall, and a freed slot is used again.
#[test]
fn connections_past_the_limit_are_closed_at_once() {
    let host = Host::start(&[
        "--guest",
        "echo",
        "--max-connections",
        "5",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut held: Vec<TcpStream> = (0..5).map(|_| host.connect()).collect();
    for (i, client) in held.iter_mut().enumerate() {
        client.write_all(format!("held {i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(client), format!("held {i}"));
    }
    for _ in 0..3 {
        let mut extra = host.connect();
        let _ = extra.write_all(b"one too many\n");
        assert_closed_without_answer(&mut extra, "a connection past the limit");
    }
    host.wait_for_log("connection limit reached", Duration::from_secs(5));
    assert_eq!(
        host.log().matches("connection limit reached").count(),
        1,
        "the log line is rate-limited"
    );
    drop(held.pop());
    // Its place is given back when the host lets go of the connection, which the
    // count of open connections shows; the next connection is then served at once.
    host.wait_metric(
        "sandsock_connections_open",
        &[],
        |open| open == 4.0,
        Duration::from_secs(10),
    );
    let mut freed = host.connect();
    freed.write_all(b"a freed place\n").unwrap();
    assert_eq!(
        read_line(&mut freed),
        "a freed place",
        "after a slot was freed"
    );
}

/// How many copies of its marker `scans_memory` found, asked on `stream`.
fn markers_seen(stream: &mut TcpStream) -> usize {
    stream.write_all(b"SCAN\n").unwrap();
    let answer = read_line(stream);
    let count = answer.strip_prefix("FOUND ").and_then(|n| n.parse().ok());
    count.unwrap_or_else(|| panic!("not a scan's answer: {answer:?}"))
}

/// Leaves `scans_memory`'s marker in the memory of the instance behind `stream`.
fn mark(stream: &mut TcpStream) {
    stream.write_all(b"MARK\n").unwrap();
    assert_eq!(read_line(stream), "MARKED");
}

/// With an instance per connection, no connection's instance can read what another
/// left in its linear memory, however the pooling allocator reuses memory slots and
/// resets them (in place, page by page, where the kernel can say which pages were
/// dirtied). The scanner finds its marker where it should (in its own instance, and
/// in a shared one: a static and a heap block at least), so none means none.
#[test]
fn an_instance_per_connection_never_sees_what_another_left_in_memory() {
    let path = test_guest("scans_memory");
    let guest = path.to_str().unwrap();
    let shared = Host::start(&["--guest", guest]);
    mark(&mut shared.connect());
    assert!(
        markers_seen(&mut shared.connect()) >= 2,
        "a shared instance keeps them"
    );

    let host = Host::start(&["--guest", guest, "--isolation", "connection"]);
    for round in 0..40 {
        let mut marking = host.connect();
        assert_eq!(
            markers_seen(&mut marking),
            0,
            "round {round}: a fresh instance"
        );
        mark(&mut marking);
        assert!(markers_seen(&mut marking) >= 2, "round {round}: its own");
        drop(marking);
        // The next connection's instance often gets the slot just given back.
        assert_eq!(
            markers_seen(&mut host.connect()),
            0,
            "round {round}: the next"
        );
    }
}
