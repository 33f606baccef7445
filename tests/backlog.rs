//! The listening socket's backlog, checked by what it does: with the host stopped
//! (SIGSTOP), the kernel completes handshakes for as many connections as the
//! backlog allows (one more, on Linux), and drops the SYNs of the rest.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Host;
use common::upgrade::raise_open_file_limit;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Starts `connections` non-blocking connects to `addr` at once and counts those
/// whose handshake completes within `within`.
fn handshakes_completed(addr: SocketAddr, connections: usize, within: Duration) -> usize {
    let mut poll = Poll::new().unwrap();
    let mut streams: Vec<TcpStream> = (0..connections)
        .map(|i| {
            let mut stream = TcpStream::connect(addr).expect("start a connect");
            poll.registry()
                .register(&mut stream, Token(i), Interest::WRITABLE)
                .unwrap();
            stream
        })
        .collect();
    let mut done = vec![false; connections];
    let mut events = Events::with_capacity(1024);
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        poll.poll(&mut events, Some(left)).unwrap();
        for event in events.iter() {
            let stream = &mut streams[event.token().0];
            if stream.take_error().unwrap().is_none() && stream.peer_addr().is_ok() {
                done[event.token().0] = true;
            }
        }
    }
    done.iter().filter(|&&d| d).count()
}

/// What the kernel allows a listen backlog to be.
fn somaxconn() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read net.core.somaxconn")
        .trim()
        .parse()
        .unwrap()
}

fn completed_with(flags: &[&str], connections: usize) -> usize {
    let mut args = vec!["--guest", "echo"];
    args.extend_from_slice(flags);
    let mut host = Host::start(&args);
    host.stop();
    let completed = handshakes_completed(host.addr, connections, Duration::from_millis(500));
    host.signal(libc::SIGCONT);
    assert!(host.is_running());
    completed
}

#[test]
fn the_backlog_is_the_kernels_maximum_by_default_and_what_backlog_says_otherwise() {
    // The default case opens a few thousand sockets at once.
    raise_open_file_limit();
    let expected = somaxconn() + 1;
    assert_eq!(
        completed_with(&[], expected + 100),
        expected,
        "the default backlog: net.core.somaxconn (the standard library's gives 129)"
    );
    assert_eq!(completed_with(&["--backlog", "64"], 200), 65);
}
