//! The floor the http benchmark measures against: a minimal plain-mio HTTP/1.1
//! server, written for the benchmark and nothing else.
//!
//! It does what the `http` guest does for the load client's requests and no more:
//! one thread, edge-triggered mio, httparse for the request heads, `hello\n` for every
//! request, keep-alive, pipelining, `Connection: close` (and HTTP/1.0) answered then
//! closed, and close at end-of-stream. No sandbox, no guest, no buffering limits, no
//! lingering close: what any server must spend per request on this machine.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// Set (to an address) in the environment of a benchmark's own binary when it runs
/// as the minimal server: each benchmark that measures against it starts itself so.
pub const SERVE_AT: &str = "SANDSOCK_BENCH_MINIMAL_HTTP";

const LISTENER: Token = Token(usize::MAX);
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";
const CLOSE_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    close_after_output: bool,
}

/// Serves on `addr` for ever, printing `listening on ADDR` to stderr as the host does.
pub fn serve(addr: SocketAddr) -> ! {
    let mut poll = Poll::new().expect("poll");
    let mut listener = TcpListener::bind(addr).expect("bind");
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .expect("register the listener");
    eprintln!(
        "listening on {}",
        listener.local_addr().expect("local address")
    );
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None).expect("poll");
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let slot = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    poll.registry()
                        .register(
                            &mut stream,
                            Token(slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .expect("register a connection");
                    conns[slot] = Some(Conn {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        close_after_output: false,
                    });
                }
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let open = (!event.is_readable() || read_and_answer(conn, &mut chunk)) && write(conn);
            if !open {
                // Dropping the stream closes it (and takes it out of epoll).
                conns[slot] = None;
                free.push(slot);
            }
        }
    }
}

/// Reads until `WouldBlock` and queues an answer per complete request; false when
/// the connection is done (end-of-stream, an error, or a bad request).
fn read_and_answer(conn: &mut Conn, chunk: &mut [u8]) -> bool {
    loop {
        match conn.stream.read(chunk) {
            Ok(0) => return false,
            Ok(n) => conn.input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    answer(
        &mut conn.input,
        &mut conn.output,
        &mut conn.close_after_output,
    )
}

/// Queues an answer in `output` per complete request at the front of `input` (and
/// takes those requests out), up to one that asks to close (`close_after` set);
/// false on a bad request. The io_uring floor answers with it too.
pub fn answer(input: &mut Vec<u8>, output: &mut Vec<u8>, close_after: &mut bool) -> bool {
    let mut consumed = 0;
    while !*close_after {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&input[consumed..]) {
            Ok(httparse::Status::Complete(len)) => {
                let close = request.version == Some(0)
                    || request.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("connection")
                            && h.value.eq_ignore_ascii_case(b"close")
                    });
                output.extend_from_slice(if close { CLOSE_RESPONSE } else { RESPONSE });
                *close_after = close;
                consumed += len;
            }
            Ok(httparse::Status::Partial) => break,
            Err(_) => return false,
        }
    }
    input.drain(..consumed);
    true
}

/// Writes what is queued until `WouldBlock`; false when the connection is done
/// (its last answer sent, or an error).
fn write(conn: &mut Conn) -> bool {
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(n) => {
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    !conn.close_after_output
}
