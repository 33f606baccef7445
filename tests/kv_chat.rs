//! Guest state that lives across connections: `kv`'s store and `chat`'s room.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{Host, read_line};

fn say(stream: &mut TcpStream, line: &str) {
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
}

#[test]
fn kv_values_set_on_one_connection_are_read_on_another() {
    let host = Host::start(&["--guest", "kv"]);
    let mut a = host.connect();
    let mut b = host.connect();
    say(&mut a, "SET colour deep blue");
    assert_eq!(read_line(&mut a), "OK");
    say(&mut b, "GET colour");
    assert_eq!(read_line(&mut b), "VALUE deep blue");
    say(&mut b, "GET missing");
    assert_eq!(read_line(&mut b), "NOT_FOUND");
    say(&mut b, "DEL colour");
    assert_eq!(read_line(&mut b), "DELETED");
    say(&mut a, "GET colour");
    assert_eq!(read_line(&mut a), "NOT_FOUND");
    say(&mut a, "FROB x");
    assert!(read_line(&mut a).starts_with("ERROR"));
}

#[test]
fn chat_lines_reach_every_other_client_but_not_the_sender() {
    let host = Host::start(&["--guest", "chat"]);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| host.connect()).collect();
    // Each client proves it is in the room before anyone speaks: a line from the
    // last one reaches the first two.
    say(&mut clients[2], "hello from 2");
    assert_eq!(read_line(&mut clients[0]), "hello from 2");
    assert_eq!(read_line(&mut clients[1]), "hello from 2");

    say(&mut clients[0], "hello from 0");
    assert_eq!(read_line(&mut clients[1]), "hello from 0");
    assert_eq!(read_line(&mut clients[2]), "hello from 0");

    // The sender got neither of its own lines: its next line is from client 1.
    say(&mut clients[1], "hello from 1");
    assert_eq!(read_line(&mut clients[0]), "hello from 1");
    assert_eq!(read_line(&mut clients[2]), "hello from 1");
    clients[2]
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let echoed = std::io::Read::read(&mut clients[2], &mut byte);
    assert!(
        echoed.is_err(),
        "client 2 received an unexpected byte: {byte:?}"
    );
}

/// Connections accepted together share one call's input (256 KiB): eight whose
/// first line (60,000 bytes) is longer than their share (32 KiB) are read in two
/// calls each. The rest of each line is already there, and on io_uring already
/// received, so no readiness or completion will tell of it: the loop has to come
/// back to them by itself, or they would wait forever for an answer.
#[test]
fn long_first_lines_on_connections_accepted_together_are_read_whole() {
    // One worker: every client in one loop's queue (with two, four apiece would fit).
    let host = Host::start(&["--guest", "kv", "--workers", "1"]);
    let value = "v".repeat(60_000);
    // Stopped, the host accepts nothing: the kernel completes the handshakes and
    // keeps what each client sends, and the host then takes all eight in one turn.
    host.stop();
    let mut clients: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut client = host.connect();
            say(&mut client, &format!("SET k{i} {i}{value}"));
            client
        })
        .collect();
    host.signal(libc::SIGCONT);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_line(client), "OK", "connection {i}");
    }
    let mut reader = std::io::BufReader::new(host.connect());
    for i in 0..8 {
        say(reader.get_mut(), &format!("GET k{i}"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(
            line == format!("VALUE {i}{value}\n"),
            "k{i}: {} bytes",
            line.len()
        );
    }
}
