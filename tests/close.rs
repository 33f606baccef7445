//! How a connection the guest closed ends: the answer arrives whole, then
//! end-of-stream, never a reset, when the client sends more after its request
//! (pipelined in the same write, or a request body still arriving), under both
//! `--lingering-close` policies. The host lingers for what it can see pending in
//! the socket; a body still on its way is the `http` example's to drain.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::thread;

use common::{Host, IO_TIMEOUT, read_to_end, wait_for_fin};

const POLICIES: [&str; 2] = ["auto", "always"];

#[test]
fn a_request_pipelined_behind_a_closing_one_does_not_reset_the_answer() {
    for policy in POLICIES {
        let host = Host::start(&["--guest", "http", "--lingering-close", policy]);
        for _ in 0..20 {
            let mut client = host.connect();
            client
                .write_all(
                    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\
                      GET / HTTP/1.1\r\nHost: t\r\n\r\n",
                )
                .unwrap();
            let answer = String::from_utf8(read_to_end(&mut client)).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{policy}: {answer}");
            assert!(
                answer.ends_with("\r\n\r\nhello\n"),
                "{policy}: one answer, whole: {answer}"
            );
        }
    }
}

#[test]
fn a_body_still_arriving_when_the_guest_answers_and_closes_does_not_reset_the_answer() {
    for policy in POLICIES {
        let host = Host::start(&["--guest", "http", "--lingering-close", policy]);
        let mut client = host.connect();
        // The body is over the example's 64 KiB limit: it answers 413 and closes as
        // soon as it has the head, while the body is still on its way.
        const BODY: usize = 1 << 20;
        let head = format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n");
        client.write_all(head.as_bytes()).unwrap();
        // The refusal goes out while nothing more is waiting in the socket: the
        // case no look at the socket can tell from a finished request, which only
        // the guest (it read `Content-Length`) knows is not finished. The body
        // starts once the refusal is complete, the answer sent and the write side
        // shut (the FIN is in; the answer stays unread, for the reading below).
        wait_for_fin(&client, IO_TIMEOUT);
        let mut writer = client.try_clone().unwrap();
        let sender = thread::spawn(move || {
            for _ in 0..BODY / 65536 {
                writer
                    .write_all(&[b'x'; 65536])
                    .expect("the host takes the body in");
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let answer = String::from_utf8(read_to_end(&mut client)).unwrap();
        sender.join().expect("the body went out without a reset");
        assert!(
            answer.starts_with("HTTP/1.1 413 "),
            "{policy}: the whole answer, then end-of-stream: {answer}"
        );
    }
}
