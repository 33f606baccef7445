//! An upgrade that carries live connections (`--upgrade handover`, the default):
//! keep-alive clients, a chat room, a guest's state in its instance, an answer half
//! sent to a slow reader and a request half received, armed timers, a proxy's
//! outbound connection, a thousand idle connections, connections moving between an
//! epoll process and an io_uring one both ways; and a new process that dies in the
//! middle, which leaves every connection where it was.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::upgrade::{
    Load, copy_executable, field, install_binary, install_script, installed_binary, nth_line,
    raise_open_file_limit, start, successor_pid, wait_gone,
};
use common::{Host, IO_TIMEOUT, pattern, read_line};

/// Installs a fresh copy of the binary, signals `old` (the process serving now),
/// and waits for the `index`-th upgrade's new process to serve and for `old` to
/// exit; returns the new pid.
fn upgrade(host: &Host, binary: &Path, old: u32, index: usize) -> u32 {
    install_binary(binary);
    // SAFETY: kill has no memory preconditions; `old` is the host serving now.
    assert_eq!(unsafe { libc::kill(old as libc::pid_t, libc::SIGUSR2) }, 0);
    let new = successor_pid(host, index);
    assert_ne!(new, old);
    wait_gone(old);
    new
}

/// How many connections the `index`-th upgrade handed over, as the old process
/// logged it.
fn handed(host: &Host, index: usize) -> usize {
    let line = nth_line(host, "upgrade: the new process took", index);
    field(&line, "handed").parse().unwrap()
}

/// Sends the rest of a request whose first half (`GET / HTTP/1.1\r\nHo`) went
/// before an upgrade, and checks the answer.
fn finish_split_request(mut client: TcpStream) {
    client
        .write_all(b"st: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

fn ask(client: &mut BufReader<TcpStream>, line: &str) -> String {
    client.get_mut().write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    client.read_line(&mut answer).unwrap();
    answer
}

#[test]
fn keep_alive_load_rides_three_upgrades() {
    let binary = installed_binary("handover-load");
    let host = start(&binary, &["--guest", "http", "--workers", "2"]);
    // Keep-alive load, runs of 20,000 requests on 16 connections: each run's
    // connections live through whatever upgrade happens meanwhile.
    let load = Load::start(host.addr, 20_000, &[]);
    let mut old = host.pid();
    let mut moved = 0;
    for index in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        old = upgrade(&host, &binary, old, index);
        moved += handed(&host, index);
    }
    std::thread::sleep(Duration::from_millis(300));
    load.finish(&host);
    assert!(moved > 0, "the load's connections were handed over");
    assert_eq!(common::upgrade::get(host.addr), "HTTP/1.1 200 OK");
}

#[test]
fn a_chat_room_lives_through_three_upgrades_on_the_same_connections() {
    let binary = installed_binary("handover-chat");
    let host = start(&binary, &["--guest", "chat"]);
    let mut one = host.connect();
    let mut two = host.connect();
    one.write_all(b"hello before\n").unwrap();
    assert_eq!(read_line(&mut two), "hello before");
    let mut old = host.pid();
    for index in 0..3 {
        old = upgrade(&host, &binary, old, index);
        assert_eq!(handed(&host, index), 2);
        one.write_all(format!("from one after {index}\n").as_bytes())
            .unwrap();
        assert_eq!(read_line(&mut two), format!("from one after {index}"));
        two.write_all(format!("from two after {index}\n").as_bytes())
            .unwrap();
        assert_eq!(read_line(&mut one), format!("from two after {index}"));
    }
}

#[test]
fn state_in_the_instance_is_read_after_three_upgrades() {
    let binary = installed_binary("handover-kv");
    let guest = binary.parent().unwrap().join("kv_in_instance.wasm");
    std::fs::copy(common::test_guest("kv_in_instance"), &guest).unwrap();
    let host = start(&binary, &["--guest", guest.to_str().unwrap()]);
    let mut client = BufReader::new(host.connect());
    assert_eq!(ask(&mut client, "SET colour blue\n"), "OK\n");
    let mut old = host.pid();
    for index in 0..3 {
        old = upgrade(&host, &binary, old, index);
    }
    assert_eq!(
        ask(&mut client, "GET colour\n"),
        "VALUE blue\n",
        "same connection"
    );
    let mut fresh = BufReader::new(host.connect());
    assert_eq!(
        ask(&mut fresh, "GET colour\n"),
        "VALUE blue\n",
        "a new connection"
    );
}

#[test]
fn an_answer_half_sent_to_a_slow_reader_completes_byte_exact() {
    const LEN: usize = 8 << 20;
    let binary = installed_binary("handover-slow");
    let host = start(&binary, &["--guest", "echo", "--max-buffer", "1MiB"]);
    // A slow reader of an 8 MiB echo: it reads nothing until the host holds a full
    // buffer of answer for it (and the guest more, queued), then the upgrade.
    let mut reader = host.connect();
    let payload = pattern(LEN, 11);
    let mut writer = reader.try_clone().unwrap();
    let sent = payload.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    host.wait_metric(
        "sandsock_write_buffer_bytes",
        &[],
        |bytes| bytes >= (1 << 20) as f64,
        Duration::from_secs(60),
    );
    upgrade(&host, &binary, host.pid(), 0);
    assert_eq!(handed(&host, 0), 1);
    let mut received = Vec::with_capacity(LEN);
    let mut chunk = vec![0; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the echo took too long");
        let n = reader.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    sender.join().unwrap();
    assert_eq!(received.len(), LEN, "every byte, once");
    assert!(received == payload, "the bytes in order");
}

#[test]
fn a_request_split_across_an_upgrade_is_answered() {
    let binary = installed_binary("handover-split");
    let host = start(&binary, &["--guest", "http"]);
    let mut client = host.connect();
    client.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    // The first half reaches the guest, which holds it, unanswered.
    host.wait_metric("sandsock_read_bytes_total", &[], |n| n >= 18.0, IO_TIMEOUT);
    upgrade(&host, &binary, host.pid(), 0);
    assert_eq!(handed(&host, 0), 1);
    finish_split_request(client);
}

#[test]
fn a_guest_using_the_store_finds_its_values_on_the_same_connection() {
    let binary = installed_binary("handover-store");
    let host = start(&binary, &["--guest", "kv", "--store", "memory"]);
    let mut client = BufReader::new(host.connect());
    let mut old = host.pid();
    for index in 0..3 {
        assert_eq!(
            ask(&mut client, &format!("SET k{index} v{index}\n")),
            "OK\n"
        );
        old = upgrade(&host, &binary, old, index);
        assert_eq!(handed(&host, index), 1);
        for seen in 0..=index {
            assert_eq!(
                ask(&mut client, &format!("GET k{seen}\n")),
                format!("VALUE v{seen}\n"),
                "after upgrade {index}"
            );
        }
    }
}

/// Sets its flag when dropped, a panic's unwinding included.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn pipelined_store_writes_lose_nothing_across_three_upgrades() {
    let binary = installed_binary("handover-pipelined");
    let host = start(&binary, &["--guest", "kv", "--store", "memory"]);
    let client = host.connect();
    // One writer sends SETs without waiting for their answers (up to 1,000 ahead,
    // under the store's bound on operations in flight) while the upgrades happen:
    // each handover finds operations in flight, answers on their way, and requests
    // half read.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let writer = {
        let (mut stream, stop) = (client.try_clone().unwrap(), stop.clone());
        let answered = answered.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Acquire) {
                if sent - answered.load(Ordering::Acquire) > 1000 {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let batch: String = (sent..sent + 100)
                    .map(|i| format!("SET k{i} v{i}\n"))
                    .collect();
                stream.write_all(batch.as_bytes()).unwrap();
                sent += 100;
            }
            stream.shutdown(Shutdown::Write).unwrap();
            sent
        })
    };
    // Every answer in order, or what went wrong after how many.
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(client);
        let mut oks = 0u64;
        let mut line = String::new();
        loop {
            match lines.read_line(&mut line) {
                Ok(0) => return Ok(oks),
                Ok(_) if line == "OK\n" => {
                    oks += 1;
                    answered.store(oks, Ordering::Release);
                }
                Ok(_) => return Err(format!("{line:?} after {oks} answers")),
                Err(e) => return Err(format!("{e} after {oks} answers")),
            }
            line.clear();
        }
    });
    // The writer stops however this test ends.
    let stopping = StopOnDrop(stop);
    let mut old = host.pid();
    for index in 0..3 {
        std::thread::sleep(Duration::from_millis(100));
        old = upgrade(&host, &binary, old, index);
    }
    drop(stopping);
    let sent = writer.join().unwrap();
    // The guest closes the connection once it has answered every SET.
    let oks = reader.join().unwrap();
    assert_eq!(oks, Ok(sent), "every SET answered once\n{}", host.log());
    let mut check = BufReader::new(host.connect());
    for i in (0..sent).step_by(97).chain([sent - 1]) {
        assert_eq!(
            ask(&mut check, &format!("GET k{i}\n")),
            format!("VALUE v{i}\n")
        );
    }
}

#[test]
fn armed_timers_move_with_their_guest() {
    let binary = installed_binary("handover-timers");
    let guest = binary.parent().unwrap().join("sets_timers.wasm");
    std::fs::copy(common::test_guest("sets_timers"), &guest).unwrap();
    let host = start(
        &binary,
        &["--guest", guest.to_str().unwrap(), "--max-timers", "5"],
    );
    let mut client = BufReader::new(host.connect());
    assert_eq!(
        ask(&mut client, "TRIGGER\n"),
        "timers: 5 armed, then limit-exceeded\n"
    );
    upgrade(&host, &binary, host.pid(), 0);
    host.wait_metric("sandsock_timers_armed", &[], |n| n == 5.0, IO_TIMEOUT);
    assert_eq!(ask(&mut client, "still here\n"), "still here\n");
}

#[test]
fn a_proxied_pair_and_its_outbound_connection_move_together() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = upstream.local_addr().unwrap().to_string();
    let binary = installed_binary("handover-proxy");
    let host = start(
        &binary,
        &[
            "--guest",
            "proxy",
            "--env",
            &format!("UPSTREAM={target}"),
            "--allow-connect",
            &target,
        ],
    );
    let mut client = host.connect();
    client.write_all(b"up 0\n").unwrap();
    let (mut server, _) = upstream.accept().unwrap();
    server.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(read_line(&mut server), "up 0");
    server.write_all(b"down 0\n").unwrap();
    assert_eq!(read_line(&mut client), "down 0");
    upgrade(&host, &binary, host.pid(), 0);
    assert_eq!(
        handed(&host, 0),
        2,
        "the client's connection and the host's own"
    );
    client.write_all(b"up 1\n").unwrap();
    assert_eq!(read_line(&mut server), "up 1");
    server.write_all(b"down 1\n").unwrap();
    assert_eq!(read_line(&mut client), "down 1");
}

/// Every echo connection answers a line starting with `word`.
fn all_answer(clients: &mut [BufReader<TcpStream>], word: &str) {
    for (i, client) in clients.iter_mut().enumerate() {
        let line = format!("{word} {i}\n");
        assert_eq!(ask(client, &line), line, "connection {i}");
    }
}

/// `count` echo connections, each proved open with a round trip.
fn open_echo_connections(host: &Host, count: usize) -> Vec<BufReader<TcpStream>> {
    let mut clients: Vec<BufReader<TcpStream>> =
        (0..count).map(|_| BufReader::new(host.connect())).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(ask(client, &format!("{i}\n")), format!("{i}\n"));
    }
    clients
}

#[test]
fn a_thousand_connections_are_handed_over_with_none_lost() {
    raise_open_file_limit();
    let binary = installed_binary("handover-thousand");
    let host = start(&binary, &["--guest", "echo", "--workers", "2"]);
    let mut clients = open_echo_connections(&host, 1000);
    upgrade(&host, &binary, host.pid(), 0);
    assert_eq!(handed(&host, 0), 1000);
    host.wait_metric(
        "sandsock_upgrade_connections_taken",
        &[],
        |n| n == 1000.0,
        IO_TIMEOUT,
    );
    all_answer(&mut clients, "after");
}

#[test]
fn a_new_process_killed_in_the_middle_leaves_every_connection_with_the_old_one() {
    raise_open_file_limit();
    let binary = installed_binary("handover-killed");
    let host = start(&binary, &["--guest", "echo"]);
    let mut clients = open_echo_connections(&host, 1000);
    // A stand-in for the new binary that says it is ready, reads the start of what
    // the old process hands over (some of the connections' parcel), and is killed.
    install_script(
        &binary,
        "printf '\\002\\000\\000\\000\\000' >&3\nhead -c 4000 <&3 >/dev/null\nkill -9 $$\n",
    );
    host.signal(libc::SIGUSR2);
    let line = nth_line(&host, "upgrade failed", 0);
    assert!(line.contains("SIGKILL"), "{line}");
    assert!(line.contains("this process goes on serving"), "{line}");
    let log = host.log();
    assert!(
        log.contains("the new process did not take the connections; this process keeps all 1000"),
        "{log}"
    );
    all_answer(&mut clients, "still");
    // And it accepts again.
    let mut fresh = BufReader::new(host.connect());
    assert_eq!(ask(&mut fresh, "new\n"), "new\n");
}

#[test]
fn a_new_process_whose_open_file_limit_is_too_low_takes_nothing() {
    raise_open_file_limit();
    let binary = installed_binary("handover-nofile");
    let host = start(&binary, &["--guest", "echo"]);
    let mut clients = open_echo_connections(&host, 300);
    // The next version runs under a limit of 200 open files (a unit's LimitNOFILE=,
    // say): it must refuse the 300 connections before it takes any.
    let real = binary.with_file_name("host.real");
    copy_executable(Path::new(common::host_bin()), &real);
    install_script(
        &binary,
        &format!("ulimit -n 200\nexec {} \"$@\"\n", real.display()),
    );
    host.signal(libc::SIGUSR2);
    let line = nth_line(&host, "upgrade failed", 0);
    assert!(
        line.contains("300 connections are handed over and this process may open 200 files"),
        "{line}"
    );
    assert!(
        host.log()
            .contains("the new process did not take the connections; this process keeps all 300"),
        "{}",
        host.log()
    );
    all_answer(&mut clients, "kept");
}

#[test]
fn with_upgrade_drain_nothing_moves_and_the_old_process_keeps_to_the_drain_timeout() {
    let binary = installed_binary("handover-drain");
    let host = start(
        &binary,
        &[
            "--guest",
            "echo",
            "--upgrade",
            "drain",
            "--drain-timeout",
            "1s",
            "--shutdown-timeout",
            "30s",
        ],
    );
    let mut idle = BufReader::new(host.connect());
    assert_eq!(ask(&mut idle, "hello\n"), "hello\n");
    upgrade(&host, &binary, host.pid(), 0);
    let log = host.log();
    assert!(
        log.contains("upgrade: the new process serves; this one finishes its connections"),
        "{log}"
    );
    assert!(!log.contains("upgrade: the new process took"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("shutting down: no new connections") && l.contains("timeout=1s")),
        "the drain is bounded by --drain-timeout:\n{log}"
    );
    // The echo guest keeps an idle connection open at a shutdown: the old process
    // closes it at the drain timeout, having exited.
    let mut rest = Vec::new();
    idle.get_mut().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    idle.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn connections_move_between_an_epoll_process_and_an_io_uring_one_both_ways() {
    // Each new binary is a stand-in that picks the other loop and runs a copy of
    // the real host, which the next upgrade then runs (the path a process was
    // started from is the one it upgrades from).
    let binary = installed_binary("handover-loops");
    let mut command = std::process::Command::new(&binary);
    command
        .args(["--guest", "http", "--listen", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .env("SANDSOCK_IO", "epoll");
    let host = Host::start_command(command, true);
    let mut current = binary.clone();
    let mut old = host.pid();
    let mut waiting: Vec<TcpStream> = Vec::new();
    for (index, io) in ["uring", "epoll", "uring"].into_iter().enumerate() {
        // Half a request, read by the guest (which holds it) before the upgrade.
        let read = host.metric("sandsock_read_bytes_total", &[]);
        let mut client = host.connect();
        client.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
        host.wait_metric(
            "sandsock_read_bytes_total",
            &[],
            |n| n >= read + 18.0,
            IO_TIMEOUT,
        );
        waiting.push(client);
        let next = binary.with_file_name(format!("host-{index}"));
        install_binary(&next);
        install_script(
            &current,
            &format!("SANDSOCK_IO={io} exec '{}' \"$@\"\n", next.display()),
        );
        // SAFETY: kill has no memory preconditions; `old` is the host serving now.
        assert_eq!(unsafe { libc::kill(old as libc::pid_t, libc::SIGUSR2) }, 0);
        let new = successor_pid(&host, index);
        wait_gone(old);
        assert_eq!(handed(&host, index), waiting.len(), "{io}");
        let serving = nth_line(&host, "serving handler=", index + 1);
        let named = if io == "uring" {
            "io=Uring"
        } else {
            "io=Epoll"
        };
        assert!(serving.contains(named), "{serving}");
        (old, current) = (new, next);
    }
    // Every half request, carried across one to three changes of loop, completes.
    for client in waiting {
        finish_split_request(client);
    }
}
