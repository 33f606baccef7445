//! SIGTERM and SIGINT: stop accepting, let the open connections finish, exit 0 within
//! the shutdown timeout; a second signal exits at once.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Host, read_exact_n, read_to_end, test_guest};

/// The `http` guest, told to shut down, answers the request in flight (with
/// `Connection: close`) and closes its connections; the host then exits at once.
#[test]
fn a_request_in_flight_is_answered_then_the_host_exits_zero() {
    let mut host = Host::start(&[
        "--guest",
        "http",
        "--shutdown-timeout",
        "20s",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut busy = host.connect();
    let half = b"GET / HTTP/1.1\r\nHost: t\r\n";
    busy.write_all(half).unwrap(); // half a request
    let mut idle = host.connect();
    let whole = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    idle.write_all(whole).unwrap();
    let mut answer = [0u8; 64];
    assert!(idle.read(&mut answer).unwrap() > 0);
    // The half request is in flight only once the guest has read it: before, the
    // connection is an idle one to the guest, which it closes at the shutdown.
    host.wait_metric(
        "sandsock_read_bytes_total",
        &[],
        |read| read >= (half.len() + whole.len()) as f64,
        Duration::from_secs(10),
    );

    let started = Instant::now();
    host.signal(libc::SIGTERM);
    host.wait_for_log("shutting down", Duration::from_secs(5));
    // The idle connection is closed: the guest closes it when it hears `shutdown`,
    // which the loop tells it once its listeners are closed (the log line comes
    // before that, the supervisor's even before the loop has begun)...
    read_to_end(&mut idle);
    // ...so new connections are refused...
    assert!(TcpStream::connect_timeout(&host.addr, Duration::from_secs(2)).is_err());
    // ...the rest of the request in flight is answered, and that connection closed.
    busy.write_all(b"\r\n").unwrap();
    let answer = String::from_utf8(read_to_end(&mut busy)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    assert!(answer.ends_with("hello\n"), "{answer}");
    // Both clients end their side, as clients do (the host lingers on a closed
    // connection until then).
    drop((busy, idle));
    let status = host
        .wait_exit(Duration::from_secs(5))
        .expect("exit after the last connection");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited for the timeout"
    );
}

/// A guest that ignores `shutdown` (the raw `partial_read`) leaves its connection
/// open: the host closes it when the shutdown timeout runs out, and exits 0.
#[test]
fn connections_left_open_are_closed_at_the_shutdown_timeout() {
    let guest = test_guest("partial_read");
    let mut host = Host::start(&[
        "--guest",
        guest.to_str().unwrap(),
        "--shutdown-timeout",
        "1s",
    ]);
    let mut idle = host.connect();
    idle.write_all(b"x").unwrap();
    assert_eq!(read_exact_n(&mut idle, 1), b"x");
    let started = Instant::now();
    host.signal(libc::SIGINT);
    host.wait_for_log("shutting down", Duration::from_secs(5));
    // Through the grace period the connection is still served...
    idle.write_all(b"y").unwrap();
    assert_eq!(read_exact_n(&mut idle, 1), b"y");
    // ...and at its end the host closes it in order: end-of-stream, not a reset and
    // not a hang, and not before the timeout.
    assert_eq!(read_to_end(&mut idle), b"", "nothing more was sent");
    let ended = started.elapsed();
    assert!(
        ended >= Duration::from_millis(900),
        "closed before the shutdown timeout: {ended:?}"
    );
    let status = host
        .wait_exit(Duration::from_secs(10))
        .expect("exit at the shutdown timeout");
    assert!(status.success(), "{status:?}");
    // The host closed it (the kernel would close it at exit too, so say who did).
    host.wait_for_log(
        "shutdown timeout reached; closed the remaining connections closed=1",
        Duration::from_secs(1),
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let guest = test_guest("partial_read");
    let mut host = Host::start(&[
        "--guest",
        guest.to_str().unwrap(),
        "--shutdown-timeout",
        "60s",
    ]);
    // A connection the guest holds (it echoes), so that the first signal has one
    // to wait for.
    let mut idle = host.connect();
    idle.write_all(b"x").unwrap();
    assert_eq!(read_exact_n(&mut idle, 1), b"x");
    host.signal(libc::SIGTERM);
    host.wait_for_log("shutting down", Duration::from_secs(5));
    host.signal(libc::SIGTERM);
    let status = host
        .wait_exit(Duration::from_secs(5))
        .expect("the second signal ends it");
    assert!(
        !status.success(),
        "a forced exit is not a clean one: {status:?}"
    );
}

/// The `http` guest closes each connection after its answer (`Connection: close`).
/// A SIGTERM in the middle of a flood of such connections must never cut an answer
/// short: a client either gets its whole answer or is refused outright.
#[test]
fn sigterm_during_a_flood_loses_no_byte_of_an_answer() {
    let mut host = Host::start(&["--guest", "http", "--shutdown-timeout", "10s"]);
    let addr = host.addr;
    // Every client's answers and refusals, counted as they come; the clients go on
    // until told to stop (or a bound, for a test gone wrong).
    let whole = Arc::new(AtomicU32::new(0));
    let refused = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (whole, refused, stop) = (whole.clone(), refused.clone(), stop.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok(mut client) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    client
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
                    if client.write_all(request).is_err() {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut answer = Vec::new();
                    match client.read_to_end(&mut answer) {
                        Ok(_) if answer.is_empty() => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == ErrorKind::ConnectionReset && answer.is_empty() => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&answer);
                            assert!(
                                text.starts_with("HTTP/1.1 200")
                                    && text.ends_with("\r\n\r\nhello\n"),
                                "an answer was cut short: {text:?}"
                            );
                            whole.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("an answer failed after {} bytes: {e}", answer.len()),
                    }
                }
            })
        })
        .collect();
    // The signal comes in the middle of the flood: once it is answering (and no
    // client has failed).
    let deadline = Instant::now() + Duration::from_secs(30);
    while whole.load(Ordering::Relaxed) < 100 && !workers.iter().any(|w| w.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "the flood is not answered: {} answers",
            whole.load(Ordering::Relaxed)
        );
        thread::sleep(Duration::from_millis(5));
    }
    host.signal(libc::SIGTERM);
    let status = host
        .wait_exit(Duration::from_secs(15))
        .expect("exit after the flood");
    assert!(status.success(), "{status:?}");
    // The clients go on until one was refused, which a closed port does at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused.load(Ordering::Relaxed) == 0 && !workers.iter().any(|w| w.is_finished()) {
        assert!(Instant::now() < deadline, "no client was refused");
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a client saw a cut answer");
    }
    let (whole, refused) = (
        whole.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    assert!(
        whole > 0 && refused > 0,
        "answered {whole}, refused {refused}"
    );
}

/// Traps of one cause are logged in full once per 10 s and summed up after; a trap
/// counted just before SIGTERM still gets its summing-up line before the host exits.
#[test]
fn a_trap_counted_just_before_sigterm_still_has_its_line() {
    let guest = test_guest("panics");
    let mut host = Host::start(&["--guest", guest.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    // Two traps. A connection that comes while the guest backs off (10 ms after a
    // second failure) is closed unserved, and counted so: each attempt is settled by
    // one of the two counts moving before the next.
    let outcomes = |scrape: &prometheus_parse::Scrape| {
        common::metric_value(scrape, "sandsock_guest_traps_total", &[])
            + common::metric_value(
                scrape,
                "sandsock_connections_refused_total",
                &[("reason", "guest_down")],
            )
    };
    for attempt in 0..20 {
        let traps = host.metric("sandsock_guest_traps_total", &[]);
        if traps >= 2.0 {
            break;
        }
        assert!(attempt < 19, "two traps never came:\n{}", host.log());
        let before = outcomes(&host.metrics());
        let mut victim = host.connect();
        let _ = victim.write_all(b"TRIGGER\n");
        let _ = victim.read_to_end(&mut Vec::new());
        host.wait_metrics(
            "the attempt trapped or was refused",
            |scrape| outcomes(scrape) > before,
            Duration::from_secs(5),
        );
    }
    host.signal(libc::SIGTERM);
    let status = host
        .wait_exit(Duration::from_secs(10))
        .expect("the host exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", host.log());
    // The line is written as the host exits; the test's reader may still be taking
    // in the pipe.
    host.wait_for_log(
        "guest trapped 1 more time(s) (unreachable)",
        Duration::from_secs(10),
    );
    let log = host.log();
    assert_eq!(log.matches("guest trapped: ").count(), 1, "{log}");
}
