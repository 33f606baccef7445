//! The `echo` guest against real sockets: many clients, a slow reader of a large
//! payload, half-close, and a reset in the middle of a stream.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Host, pattern, read_exact_n, reset, send_finish_and_read_all};

#[test]
fn a_thousand_concurrent_connections_each_make_ten_round_trips() {
    let host = Host::start(&["--guest", "echo"]);
    let mut clients: Vec<TcpStream> = (0..1000).map(|_| host.connect()).collect();
    for round in 0..10 {
        for (i, client) in clients.iter_mut().enumerate() {
            client
                .write_all(format!("client {i} round {round}\n").as_bytes())
                .unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let expected = format!("client {i} round {round}\n");
            let got = read_exact_n(client, expected.len());
            assert_eq!(got, expected.as_bytes(), "client {i} round {round}");
        }
    }
}

#[test]
fn sixteen_mib_reach_a_slow_reader_intact_with_bounded_host_memory() {
    const LEN: usize = 16 << 20;
    /// `--max-buffer`: what the host holds unsent for one connection, at most.
    const MAX_BUFFER: f64 = (1 << 20) as f64;
    /// What the SDK's echo queues before it stops reading (`HIGH_WATER` in
    /// guest/sdk/src/io.rs).
    const HIGH_WATER: f64 = (256 * 1024) as f64;
    let host = Host::start(&[
        "--guest",
        "echo",
        "--max-buffer",
        "1MiB",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut client = host.connect();
    // Measure from a host that has taken this connection in and served it: a
    // round trip (its bytes come back before the payload's).
    client.write_all(b"ready?\n").unwrap();
    assert_eq!(read_exact_n(&mut client, 7), b"ready?\n");
    let rss_before = host.rss();

    let payload = pattern(LEN, 7);
    let mut writer = client.try_clone().unwrap();
    let sent = payload.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });

    // Read nothing until everything upstream has filled and pushes back: the host
    // holds a full buffer for the connection, and the guest, its own queue past
    // the SDK's high-water mark, has stopped reading (what it read and the host did
    // not take yet is what it queues). Or, with kernel buffers large enough for
    // the lot, until every byte has gone through the guest.
    host.wait_metrics(
        "a full write buffer and a paused guest, or the whole payload echoed",
        |scrape| {
            let value = |name| common::metric_value(scrape, name, &[]);
            let read = value("sandsock_read_bytes_total");
            let written = value("sandsock_written_bytes_total");
            let full = value("sandsock_write_buffer_bytes") >= MAX_BUFFER;
            (full && read - written >= HIGH_WATER) || written >= (LEN + 7) as f64
        },
        Duration::from_secs(60),
    );
    let mut peak = host.rss();
    let mut received = Vec::with_capacity(LEN);
    let mut chunk = vec![0; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "echo of 16 MiB took too long");
        let n = client.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        if received.len() % (256 * 1024) < n {
            peak = peak.max(host.rss());
            thread::sleep(Duration::from_millis(2)); // a slow reader
        }
    }
    sender.join().unwrap();
    assert_eq!(received.len(), LEN, "echo length");
    assert!(
        received == payload,
        "echoed bytes differ from the sent ones"
    );
    let growth = peak.saturating_sub(rss_before);
    assert!(growth < 64 << 20, "host RSS grew by {} MiB", growth >> 20);
}

#[test]
fn a_client_that_shuts_down_its_write_side_still_receives_the_whole_echo() {
    let host = Host::start(&["--guest", "echo"]);
    let mut client = host.connect();
    let payload = pattern(300_000, 3);
    let echoed = send_finish_and_read_all(&mut client, &payload);
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload);
}

#[test]
fn a_client_reset_mid_stream_does_not_disturb_the_others() {
    let host = Host::start(&["--guest", "echo"]);
    let mut others: Vec<TcpStream> = (0..20).map(|_| host.connect()).collect();
    let round_trip = |clients: &mut Vec<TcpStream>, tag: &str| {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(format!("{tag} {i}\n").as_bytes()).unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let expected = format!("{tag} {i}\n");
            assert_eq!(read_exact_n(c, expected.len()), expected.as_bytes());
        }
    };
    round_trip(&mut others, "before");

    // A client streams, reads a little of its echo, and resets with data in flight.
    let mut victim = host.connect();
    victim.write_all(&pattern(200_000, 9)).unwrap();
    let _ = read_exact_n(&mut victim, 1000);
    reset(victim);

    round_trip(&mut others, "after");
    let mut fresh = vec![host.connect()];
    round_trip(&mut fresh, "fresh");
}
