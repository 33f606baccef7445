//! The store and topics the host keeps (contract 1.1): `kv` and `chat` correct with
//! any `--workers` on each backend, what an acknowledged write survives (a SIGKILL,
//! a guest trap, a recycle), limits and namespaces, and two processes on one file.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Host, IO_TIMEOUT, joined, read_line, run_host, scratch, test_guest};

fn say(stream: &mut TcpStream, line: &str) {
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Sends one request line on a new connection and answers the reply.
fn ask(host: &Host, line: &str) -> String {
    let mut stream = host.connect();
    say(&mut stream, line);
    read_line(&mut stream)
}

/// Sends every request at once (pipelined), then reads one reply line per request.
fn pipeline(stream: &mut TcpStream, requests: &[String]) -> Vec<String> {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(requests.concat().as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    (0..requests.len())
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line
        })
        .collect()
}

/// The backends under test: memory, and a fresh file in `dir`.
fn backends(dir: &Path) -> [String; 2] {
    [
        "memory".to_string(),
        dir.join("store.db").to_str().unwrap().to_string(),
    ]
}

#[test]
fn kv_with_two_workers_reads_what_any_connection_stored_on_each_backend() {
    let dir = scratch("store-workers");
    for store in backends(&dir) {
        let host = Host::start(&["--guest", "kv", "--workers", "2", "--store", &store]);
        assert_eq!(ask(&host, "SET colour deep blue"), "OK", "{store}");
        for i in 0..40 {
            assert_eq!(
                ask(&host, "GET colour"),
                "VALUE deep blue",
                "{store}: new connection {i}"
            );
        }

        // 20 clients at once, each pipelining 100 distinct keys, then reading back.
        let addr = host.addr;
        let clients: Vec<_> = (0..20)
            .map(|client| {
                std::thread::spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    let sets: Vec<String> = (0..100)
                        .map(|key| format!("SET c{client}k{key} v{client}.{key}\n"))
                        .collect();
                    for reply in pipeline(&mut stream, &sets) {
                        assert_eq!(reply, "OK\n");
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("a client failed");
        }
        for client in 0..20 {
            let gets: Vec<String> = (0..100)
                .map(|key| format!("GET c{client}k{key}\n"))
                .collect();
            let replies = pipeline(&mut host.connect(), &gets);
            for (key, reply) in replies.iter().enumerate() {
                assert_eq!(*reply, format!("VALUE v{client}.{key}\n"), "{store}");
            }
        }
    }
}

/// Answers larger than one call carries (about 256 KiB) wait for the next calls, in
/// order: 40 values of 60 KB read back pipelined on one connection.
#[test]
fn answers_past_one_calls_input_come_in_later_calls_in_order() {
    let host = Host::start(&["--guest", "kv"]);
    let value = |i: usize| format!("{i:05}{}", "v".repeat(60_000));
    let sets: Vec<String> = (0..40)
        .map(|i| format!("SET big{i} {}\n", value(i)))
        .collect();
    let mut stream = host.connect();
    for reply in pipeline(&mut stream, &sets) {
        assert_eq!(reply, "OK\n");
    }
    let gets: Vec<String> = (0..40).map(|i| format!("GET big{i}\n")).collect();
    for (i, reply) in pipeline(&mut stream, &gets).iter().enumerate() {
        assert_eq!(*reply, format!("VALUE {}\n", value(i)), "big{i}");
    }
}

#[test]
fn chat_with_two_workers_reaches_every_client() {
    let host = Host::start(&[
        "--guest",
        "chat",
        "--workers",
        "2",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut clients: Vec<TcpStream> = (0..6).map(|_| host.connect()).collect();
    // Every client is in the room once its worker accepted it (the two workers
    // accept in no order between them): the open connections say so.
    joined(&host, 6);
    for (i, client) in clients.iter_mut().enumerate() {
        say(client, &format!("hello from {i}"));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut heard: Vec<String> = (0..5).map(|_| read_line(client)).collect();
        heard.sort();
        let expected: Vec<String> = (0..6)
            .filter(|&j| j != i)
            .map(|j| format!("hello from {j}"))
            .collect();
        assert_eq!(heard, expected, "client {i}");
    }
}

/// Pipelines `count` SETs of `prefix` keys and waits for every `OK`; answers the
/// connection, still open.
fn set_acknowledged(host: &Host, prefix: &str, count: usize) -> TcpStream {
    let mut stream = host.connect();
    let sets: Vec<String> = (0..count)
        .map(|key| format!("SET {prefix}{key} value-{key}\n"))
        .collect();
    for reply in pipeline(&mut stream, &sets) {
        assert_eq!(reply, "OK\n");
    }
    stream
}

/// Every key `set_acknowledged` stored with `prefix` reads back.
fn all_there(host: &Host, prefix: &str, count: usize) {
    let gets: Vec<String> = (0..count)
        .map(|key| format!("GET {prefix}{key}\n"))
        .collect();
    let replies = pipeline(&mut host.connect(), &gets);
    for (key, reply) in replies.iter().enumerate() {
        assert_eq!(*reply, format!("VALUE value-{key}\n"), "{prefix}{key}");
    }
}

#[test]
fn values_acknowledged_before_a_sigkill_are_read_after_a_restart() {
    let dir = scratch("store-sigkill");
    let store = dir.join("kv.db");
    let store = store.to_str().unwrap();
    for round in 0..3 {
        let mut host = Host::start(&["--guest", "kv", "--workers", "2", "--store", store]);
        if round > 0 {
            all_there(&host, &format!("r{}-", round - 1), 300);
        }
        let _open = set_acknowledged(&host, &format!("r{round}-"), 300);
        // At once after the last `OK`: nothing gets a chance to flush on the way out.
        host.signal(libc::SIGKILL);
        host.wait_exit(Duration::from_secs(10)).expect("killed");
    }
    let host = Host::start(&["--guest", "kv", "--store", store]);
    for round in 0..3 {
        all_there(&host, &format!("r{round}-"), 300);
    }
}

#[test]
fn values_acknowledged_before_a_trap_or_a_recycle_are_read_after_it() {
    let dir = scratch("store-trap");
    let store = dir.join("store.db");
    let store = store.to_str().unwrap();
    let guest = test_guest("stores_then_panics");
    let guest = guest.to_str().unwrap();
    let host = Host::start(&["--guest", guest, "--store", store]);
    let mut stream = host.connect();
    for key in 0..50 {
        say(&mut stream, &format!("SET k{key} v{key}"));
        assert_eq!(read_line(&mut stream), "OK");
    }
    say(&mut stream, "PANIC");
    common::read_until_closed(&mut stream);
    host.wait_for_log("asked to", Duration::from_secs(10));
    let mut fresh = host.connect();
    for key in 0..50 {
        say(&mut fresh, &format!("GET k{key}"));
        assert_eq!(
            read_line(&mut fresh),
            format!("VALUE v{key}"),
            "after the trap"
        );
    }

    // A recycle after every 3 calls: the kv example keeps its requests, not its
    // data, in the instance.
    let host = Host::start(&["--guest", "kv", "--recycle-after", "3", "--store", store]);
    let mut stream = host.connect();
    for key in 0..30 {
        say(&mut stream, &format!("SET k{key} v{key}"));
        assert_eq!(read_line(&mut stream), "OK");
    }
    let mut fresh = host.connect();
    for key in 0..30 {
        say(&mut fresh, &format!("GET k{key}"));
        assert_eq!(
            read_line(&mut fresh),
            format!("VALUE v{key}"),
            "after recycles"
        );
    }
    assert!(
        host.log().contains("recycl"),
        "the instance was recycled:\n{}",
        host.log()
    );
}

#[test]
fn limits_answer_errors_and_a_full_namespace_takes_no_more() {
    let host = Host::start(&[
        "--guest",
        "kv",
        "--store-max-key",
        "8",
        "--store-max-value",
        "16",
        "--store-max-bytes",
        "64",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut stream = host.connect();
    let mut line = |request: &str| {
        say(&mut stream, request);
        read_line(&mut stream)
    };
    assert_eq!(line("SET 123456789 v"), "ERROR key too large");
    assert_eq!(
        line(&format!("SET k {}", "x".repeat(17))),
        "ERROR value too large"
    );
    // Each entry counts its bucket (`kv`), key and value: 2 + 2 + 16 = 20 bytes.
    for key in 0..3 {
        assert_eq!(line(&format!("SET k{key} {}", "x".repeat(16))), "OK");
    }
    assert_eq!(
        line(&format!("SET k3 {}", "x".repeat(16))),
        "ERROR store full"
    );
    assert_eq!(line("GET k3"), "NOT_FOUND", "nothing of it was stored");
    assert_eq!(line("DEL k0"), "DELETED");
    assert_eq!(
        line(&format!("SET k3 {}", "x".repeat(16))),
        "OK",
        "room again"
    );

    // What /metrics says of it. A worker publishes after its call, and the client
    // may read the last reply first: wait for the count to settle (or time out).
    let set = [("op", "set")];
    let settled = |n: f64| n >= 7.0;
    let sets = host.wait_metric("sandsock_store_operations_total", &set, settled, IO_TIMEOUT);
    assert_eq!(sets, 7.0, "every SET was answered");
    let errors = |error| host.metric("sandsock_store_errors_total", &[("error", error)]);
    assert_eq!(errors("key-too-large"), 1.0);
    assert_eq!(errors("value-too-large"), 1.0);
    assert_eq!(errors("namespace-full"), 1.0);
    let labels = [("namespace", "kv"), ("store", "memory")];
    let bytes = host.metric("sandsock_store_bytes", &labels);
    assert_eq!(bytes, 60.0, "3 entries of 20 bytes");
}

#[test]
fn namespaces_keep_guests_apart_and_two_processes_share_one_file() {
    let dir = scratch("store-namespaces");
    let store = dir.join("shared.db");
    let store = store.to_str().unwrap();
    let a = Host::start(&["--guest", "kv", "--store", store, "--store-namespace", "a"]);
    let b = Host::start(&["--guest", "kv", "--store", store, "--store-namespace", "b"]);
    let a_too = Host::start(&["--guest", "kv", "--store", store, "--store-namespace", "a"]);
    assert_eq!(ask(&a, "SET secret 42"), "OK");
    assert_eq!(ask(&b, "GET secret"), "NOT_FOUND", "another namespace");
    assert_eq!(
        ask(&a_too, "GET secret"),
        "VALUE 42",
        "the same, from another process"
    );
    assert_eq!(ask(&b, "SET secret 7"), "OK");
    assert_eq!(ask(&a, "GET secret"), "VALUE 42");

    for bad in ["", "a b", "{x}", "ünï"] {
        let out = run_host(&[
            "--guest",
            "kv",
            "--store-namespace",
            bad,
            "--listen",
            "127.0.0.1:0",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "one line: {stderr}");
        assert!(errors[0].contains("not a store namespace"), "{stderr}");
    }
    let out = run_host(&[
        "--guest",
        "kv",
        "--store",
        "/nonexistent/dir/kv.db",
        "--listen",
        "127.0.0.1:0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the store /nonexistent/dir/kv.db"),
        "{stderr}"
    );
}
