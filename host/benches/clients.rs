//! The clients the store benchmarks share: `kv` requests, pipelined and checked,
//! and the `chat` room's relay rate.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Request `n` of a run whose keys are named `prefix`: even ones `SET` a fresh key,
/// odd ones `GET` the key the one before set. Appends it to `batch`, and the reply
/// it must get to `expected`.
fn request(prefix: &str, n: usize, batch: &mut Vec<u8>, expected: &mut impl Extend<String>) {
    let key = format!("{prefix}k{}", n / 2);
    if n.is_multiple_of(2) {
        batch.extend_from_slice(format!("SET {key} value-{n}\n").as_bytes());
        expected.extend(["OK\n".to_string()]);
    } else {
        batch.extend_from_slice(format!("GET {key}\n").as_bytes());
        expected.extend([format!("VALUE value-{}\n", n - 1)]);
    }
}

/// Sends `requests` kv requests (keys named for `round`, half `SET`s of fresh keys,
/// half `GET`s of keys set before) on `connections` connections, each pipelining
/// `depth` deep, checking every reply; answers the wall time and how many were sent.
pub fn kv_round(
    addr: SocketAddr,
    round: usize,
    requests: usize,
    connections: usize,
    depth: usize,
) -> (Duration, u32) {
    let mut clients: Vec<(TcpStream, BufReader<TcpStream>)> = (0..connections)
        .map(|_| {
            let stream = TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).unwrap();
            let reader = BufReader::new(stream.try_clone().unwrap());
            (stream, reader)
        })
        .collect();
    let started = Instant::now();
    let mut done = 0;
    let mut batch = Vec::new();
    let mut line = String::new();
    let mut expected: Vec<String> = Vec::with_capacity(depth);
    let prefix = format!("r{round}");
    while done < requests {
        for (c, (stream, reader)) in clients.iter_mut().enumerate() {
            batch.clear();
            expected.clear();
            for i in 0..depth {
                request(&prefix, done + c * depth + i, &mut batch, &mut expected);
            }
            stream.write_all(&batch).expect("send");
            for want in &expected {
                line.clear();
                reader.read_line(&mut line).expect("a reply");
                assert_eq!(&line, want, "kv answered wrong");
            }
        }
        done += connections * depth;
    }
    (started.elapsed(), done as u32)
}

/// The chat example's room across the hosts at `addrs` (each of `clients` clients
/// joins them in turn): each sends `lines` lines, which every other client must
/// receive; answers the lines relayed per second.
pub fn chat_lines(addrs: &[SocketAddr], clients: usize, lines: usize) -> f64 {
    let streams: Vec<TcpStream> = (0..clients)
        .map(|i| TcpStream::connect(addrs[i % addrs.len()]).expect("connect"))
        .collect();
    // The workers accept in no order between them: give them time to take their
    // clients into the room, then check that a line goes round.
    std::thread::sleep(Duration::from_millis(300));
    let mut first = BufReader::new(streams[0].try_clone().unwrap());
    let mut last = streams[clients - 1].try_clone().unwrap();
    last.write_all(b"ready\n").unwrap();
    let mut line = String::new();
    first.read_line(&mut line).unwrap();
    let readers: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, stream)| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let skip = usize::from(i != 0 && i != clients - 1);
            std::thread::spawn(move || {
                let mut line = String::new();
                for _ in 0..skip + (clients - 1) * lines {
                    line.clear();
                    reader.read_line(&mut line).expect("a relayed line");
                }
            })
        })
        .collect();
    let started = Instant::now();
    let writers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            std::thread::spawn(move || {
                let mut text = String::new();
                for n in 0..lines {
                    text.push_str(&format!("client {i} line {n}\n"));
                }
                stream.write_all(text.as_bytes()).expect("send");
                stream
            })
        })
        .collect();
    let _open: Vec<TcpStream> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for reader in readers {
        reader.join().expect("a client heard every line");
    }
    let elapsed = started.elapsed();
    (clients * (clients - 1) * lines) as f64 / elapsed.as_secs_f64()
}

/// Like [`kv_round`], with every connection in flight at once from one thread
/// (non-blocking, mio), as `redis-benchmark -c CONNECTIONS -P DEPTH` drives Redis:
/// each connection sends `depth` requests, reads their replies, and sends the next
/// `depth`; each connection's keys are its own.
pub fn kv_evented(
    addr: SocketAddr,
    round: usize,
    requests: usize,
    connections: usize,
    depth: usize,
) -> (Duration, u32) {
    use mio::{Events, Interest, Poll, Token};
    use std::io::{ErrorKind, Read};

    struct Conn {
        stream: mio::net::TcpStream,
        /// The next request's number on this connection.
        next: usize,
        /// What is left to send of the current batch.
        out: Vec<u8>,
        sent: usize,
        /// The replies the current batch waits for, in order.
        expected: std::collections::VecDeque<String>,
        /// Bytes read and not yet a whole line.
        partial: Vec<u8>,
    }

    impl Conn {
        /// Queues the next `depth` requests; false when the connection is done.
        fn refill(&mut self, round: usize, c: usize, depth: usize, last: usize) -> bool {
            if self.next >= last {
                return false;
            }
            self.out.clear();
            self.sent = 0;
            for n in self.next..self.next + depth {
                let key = format!("r{round}c{c}k{}", n / 2);
                if n.is_multiple_of(2) {
                    self.out
                        .extend_from_slice(format!("SET {key} value-{n}\n").as_bytes());
                    self.expected.push_back("OK\n".into());
                } else {
                    self.out
                        .extend_from_slice(format!("GET {key}\n").as_bytes());
                    self.expected.push_back(format!("VALUE value-{}\n", n - 1));
                }
            }
            self.next += depth;
            true
        }

        fn send(&mut self) {
            while self.sent < self.out.len() {
                match self.stream.write(&self.out[self.sent..]) {
                    Ok(n) => self.sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) => panic!("send: {e}"),
                }
            }
        }
    }

    let per_connection = requests / connections / depth * depth;
    let mut poll = Poll::new().expect("a poll");
    let mut conns: Vec<Conn> = (0..connections)
        .map(|c| {
            let std = TcpStream::connect(addr).expect("connect");
            std.set_nodelay(true).unwrap();
            std.set_nonblocking(true).unwrap();
            let mut stream = mio::net::TcpStream::from_std(std);
            poll.registry()
                .register(
                    &mut stream,
                    Token(c),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .expect("register");
            Conn {
                stream,
                next: 0,
                out: Vec::new(),
                sent: 0,
                expected: Default::default(),
                partial: Vec::new(),
            }
        })
        .collect();
    let started = Instant::now();
    let mut open = 0;
    for (c, conn) in conns.iter_mut().enumerate() {
        if conn.refill(round, c, depth, per_connection) {
            conn.send();
            open += 1;
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    while open > 0 {
        poll.poll(&mut events, Some(Duration::from_secs(20)))
            .expect("poll");
        assert!(!events.is_empty(), "no reply within 20 s");
        for event in &events {
            let c = event.token().0;
            let conn = &mut conns[c];
            if event.is_writable() {
                conn.send();
            }
            if !event.is_readable() {
                continue;
            }
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => panic!("the server closed connection {c}"),
                    Ok(n) => conn.partial.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            while let Some(end) = conn.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = conn.partial.drain(..=end).collect();
                let want = conn
                    .expected
                    .pop_front()
                    .expect("a reply that was asked for");
                assert_eq!(String::from_utf8_lossy(&line), want, "kv answered wrong");
            }
            if conn.expected.is_empty() && conn.sent == conn.out.len() {
                if conn.refill(round, c, depth, per_connection) {
                    conn.send();
                } else {
                    conn.out.clear();
                    conn.sent = 0;
                    open -= 1;
                }
            }
        }
    }
    (started.elapsed(), (per_connection * connections) as u32)
}
