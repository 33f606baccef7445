//! The `http` guest: keep-alive, `Connection: close`, pipelining, a request sent byte
//! by byte, and the error answers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{Host, read_to_end, read_until_closed};

const GET: &str = "GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// Reads one response (head and Content-Length body); returns (head, body).
fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read a response head");
        assert_eq!(
            n,
            1,
            "closed mid-head after {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    let body = common::read_exact_n(stream, length);
    (head, String::from_utf8(body).unwrap())
}

fn assert_hello(head: &str, body: &str) {
    assert!(head.starts_with("HTTP/1.1 200"), "status line of {head:?}");
    assert_eq!(body, "hello\n");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let host = Host::start(&["--guest", "http"]);
    let mut client = host.connect();
    for _ in 0..5 {
        client.write_all(GET.as_bytes()).unwrap();
        let (head, body) = read_response(&mut client);
        assert_hello(&head, &body);
        assert!(!head.to_ascii_lowercase().contains("connection: close"));
    }
}

#[test]
fn connection_close_is_answered_then_closed() {
    let host = Host::start(&["--guest", "http"]);
    let mut client = host.connect();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut client);
    assert_hello(&head, &body);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(
        read_to_end(&mut client).is_empty(),
        "bytes after the last response"
    );
}

#[test]
fn http_1_0_closes_after_one_response() {
    let host = Host::start(&["--guest", "http"]);
    let mut client = host.connect();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let response = String::from_utf8(read_to_end(&mut client)).unwrap();
    assert!(response.starts_with("HTTP/1."), "{response}");
    assert!(response.contains(" 200 "), "{response}");
    assert!(response.ends_with("\r\n\r\nhello\n"), "{response}");
}

#[test]
fn three_pipelined_requests_are_answered_in_order() {
    let host = Host::start(&["--guest", "http"]);
    let mut client = host.connect();
    // GET, HEAD, GET: only the middle answer lacks a body, which shows the order.
    let batch = format!("{GET}HEAD / HTTP/1.1\r\nHost: test\r\n\r\n{GET}");
    client.write_all(batch.as_bytes()).unwrap();
    let (head, body) = read_response(&mut client);
    assert_hello(&head, &body);

    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(client.read(&mut byte).unwrap(), 1);
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Length: 6"),
        "HEAD answer must announce the GET's length: {head}"
    );

    let (head, body) = read_response(&mut client);
    assert_hello(&head, &body);
}

#[test]
fn a_request_sent_byte_by_byte_is_answered() {
    let host = Host::start(&["--guest", "http"]);
    let mut client = host.connect();
    for byte in GET.as_bytes() {
        client.write_all(&[*byte]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let (head, body) = read_response(&mut client);
    assert_hello(&head, &body);
}

#[test]
fn a_malformed_request_gets_400_and_close() {
    let host = Host::start(&["--guest", "http"]);
    let mut client = host.connect();
    client.write_all(b"NOT HTTP AT ALL\x01\r\n\r\n").unwrap();
    let response = String::from_utf8_lossy(&read_until_closed(&mut client)).into_owned();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
}

#[test]
fn a_head_over_16_kib_gets_431_and_close() {
    let host = Host::start(&["--guest", "http"]);
    let mut client = host.connect();
    let filler = "a".repeat(17 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: test\r\nX-Filler: {filler}\r\n\r\n");
    // The host may close before it has read all of it: a failed write is fine.
    let _ = client.write_all(request.as_bytes());
    let response = String::from_utf8_lossy(&read_until_closed(&mut client)).into_owned();
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
}
