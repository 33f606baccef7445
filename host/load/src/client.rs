//! [`Client`]: one of the `-c` client connection slots, driven through its requests,
//! and [`Shared`], what all of them share.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::inbox::Inbox;
use crate::protocol::{Protocol, ResponseState};
use crate::report::Stats;
use crate::transport::{TlsClient, Transport};

/// Bytes of response a client can hold unparsed: bounds an HTTP response head (8 KiB,
/// the common server limit for request heads). Echo answers are checked as they arrive,
/// so their size is not bounded by it.
pub(crate) const READ_BUFFER_BYTES: usize = 8 * 1024;
/// errno for "too many open files" (the same on Linux, macOS and the BSDs): hinted at, since
/// `-c` past the descriptor limit fails every connect beyond it.
const EMFILE: i32 = 24;
/// Low bits of a mio token that name the client slot; the high bits hold the slot's
/// generation, so events of a socket closed earlier in the same batch are ignored.
pub(crate) const CLIENT_SLOT_BITS: u32 = 24;

/// The state all connections share: what to send, where, the request counter and the tallies.
pub(crate) struct Shared {
    pub(crate) protocol: Protocol,
    pub(crate) addr: SocketAddr,
    /// With `--tls-ca`: how every connection speaks TLS.
    pub(crate) tls: Option<TlsClient>,
    /// Whether a connection carries more than one request (no `--close`).
    pub(crate) keep_alive: bool,
    /// Requests to issue in all (`-n`).
    pub(crate) total: u64,
    /// Requests handed out so far.
    pub(crate) issued: u64,
    /// Requests handed out and not yet settled.
    pub(crate) in_flight: u64,
    pub(crate) stats: Stats,
}

impl Shared {
    /// Hands out the next request, if any are left.
    fn take_request(&mut self) -> bool {
        if self.issued == self.total {
            return false;
        }
        self.issued += 1;
        self.in_flight += 1;
        true
    }
}

/// Where a client slot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// No request: the run has none left for it.
    Idle,
    /// A request is waiting for the non-blocking connect to finish.
    Connecting,
    /// A request is being written and its response read.
    Active,
}

/// How a request ended.
enum Outcome {
    /// Answered correctly; `reusable` says whether the connection may carry another request.
    Done { reusable: bool },
    /// Failed, with the reason.
    Failed(String),
}

/// One of the `-c` client connection slots: its socket, where its request stands, and its
/// reused read buffer. A slot outlives its sockets: after a `--close` request or an error
/// it connects again for its next request.
pub(crate) struct Client {
    id: usize,
    /// Bumped at every close, so a stale event for an earlier socket is not taken for this one.
    pub(crate) generation: usize,
    stream: Option<Transport>,
    stage: Stage,
    /// Bytes of the shared request written so far.
    written: usize,
    /// Response bytes read for the current request.
    received: u64,
    response: ResponseState,
    inbox: Inbox,
    /// When the current request started, for its latency.
    started: Instant,
    /// Requests completed on the current socket, for error messages.
    served: u64,
}

impl Client {
    pub(crate) fn new(id: usize) -> Self {
        Self {
            id,
            generation: 0,
            stream: None,
            stage: Stage::Idle,
            written: 0,
            received: 0,
            response: ResponseState::Echo { matched: 0 },
            inbox: Inbox::new(READ_BUFFER_BYTES),
            started: Instant::now(),
            served: 0,
        }
    }

    fn token(&self) -> Token {
        Token((self.generation << CLIENT_SLOT_BITS) | self.id)
    }

    /// Moves the current request as far as it goes without blocking; settles it and takes the
    /// next one as often as answers are already there. Bounded: every pass that does not
    /// return settles one request.
    pub(crate) fn advance(&mut self, registry: &Registry, shared: &mut Shared) {
        loop {
            let outcome = match self.stage {
                Stage::Idle => return,
                Stage::Connecting => match self.connected() {
                    Ok(false) => return,
                    Ok(true) => {
                        self.stage = Stage::Active;
                        if shared.keep_alive {
                            // Keep-alive latency runs from the first write, not the connect.
                            self.started = Instant::now();
                        }
                        continue;
                    }
                    Err(message) => Outcome::Failed(message),
                },
                Stage::Active => match self.pump(shared) {
                    Ok(None) => return,
                    Ok(Some(reusable)) => Outcome::Done { reusable },
                    Err(message) => Outcome::Failed(message),
                },
            };
            self.settle(outcome, registry, shared);
            self.take_next(registry, shared);
        }
    }

    /// Whether the non-blocking connect has finished; `Err` if it failed.
    fn connected(&mut self) -> Result<bool, String> {
        let Some(stream) = &self.stream else {
            return Err("no socket".into());
        };
        let stream = stream.socket_ref();
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(err)) | Err(err) => return Err(format!("connect failed: {err}")),
        }
        match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(err) => Err(format!("connect failed: {err}")),
        }
    }

    /// Writes what is left of the request, then reads what has arrived. `Ok(Some(reusable))`
    /// once the response is complete and correct, `Ok(None)` when waiting for readiness.
    fn pump(&mut self, shared: &mut Shared) -> Result<Option<bool>, String> {
        let Some(stream) = &mut self.stream else {
            return Err("no socket".into());
        };
        let request = &shared.protocol.request;
        let stats = &mut shared.stats;
        while self.written < request.len() {
            match stream.write(&request[self.written..]) {
                Ok(0) => return Err("write accepted no bytes".into()),
                Ok(n) => {
                    self.written += n;
                    stats.bytes_sent += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("write failed: {err}")),
            }
        }
        loop {
            let spare = self.inbox.spare();
            if spare.is_empty() {
                return Err(format!(
                    "response head larger than {READ_BUFFER_BYTES} bytes"
                ));
            }
            match stream.read(spare) {
                Ok(0) => {
                    return Err(
                        "connection closed by the server before the response was complete".into(),
                    );
                }
                Ok(n) => {
                    stats.bytes_received += n as u64;
                    self.received += n as u64;
                    self.inbox.filled(n);
                    if let Some(reusable) =
                        self.inbox.check(&shared.protocol, &mut self.response)?
                    {
                        // A response may finish before the request was all written (an HTTP
                        // server answering early); the rest must not open the next request.
                        return Ok(Some(reusable && self.written == request.len()));
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(format!("read failed: {err}")),
            }
        }
    }

    /// Records how the current request ended and closes the socket unless it carries on.
    fn settle(&mut self, outcome: Outcome, registry: &Registry, shared: &mut Shared) {
        shared.in_flight -= 1;
        match outcome {
            Outcome::Done { reusable } => {
                shared.stats.record_ok(self.started.elapsed());
                self.served += 1;
                if !(reusable && shared.keep_alive) {
                    self.close(registry);
                }
            }
            Outcome::Failed(message) => {
                let request_len = shared.protocol.request.len();
                shared.stats.record_error(|| {
                    format!("{}: {message}", self.describe(shared.addr, request_len))
                });
                self.close(registry);
            }
        }
    }

    /// Takes the next request from the shared counter, connecting first if needed; goes idle
    /// when none are left. A connect that fails at once fails that request and takes another.
    pub(crate) fn take_next(&mut self, registry: &Registry, shared: &mut Shared) {
        while shared.take_request() {
            self.reset_request(&shared.protocol);
            if self.stream.is_some() {
                self.stage = Stage::Active;
                return;
            }
            match self.connect(registry, shared.addr, shared.tls.as_ref()) {
                Ok(()) => {
                    self.stage = Stage::Connecting;
                    return;
                }
                Err(message) => {
                    self.stage = Stage::Connecting;
                    self.settle(Outcome::Failed(message), registry, shared);
                }
            }
        }
        self.close(registry);
        self.stage = Stage::Idle;
    }

    /// Fails the request in flight, if any, with `message` (used at the timeout).
    pub(crate) fn abandon(&mut self, message: &str, registry: &Registry, shared: &mut Shared) {
        if self.stage != Stage::Idle {
            self.settle(Outcome::Failed(message.to_owned()), registry, shared);
            self.stage = Stage::Idle;
        }
    }

    fn reset_request(&mut self, protocol: &Protocol) {
        self.written = 0;
        self.received = 0;
        self.response = protocol.fresh_state();
        self.inbox.clear();
        self.started = Instant::now();
    }

    fn connect(
        &mut self,
        registry: &Registry,
        addr: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<(), String> {
        let stream = TcpStream::connect(addr).map_err(|err| {
            if err.raw_os_error() == Some(EMFILE) {
                format!("connect failed: {err} (each connection needs a descriptor: raise `ulimit -n` or lower -c)")
            } else {
                format!("connect failed: {err}")
            }
        })?;
        // Requests go out in one write and wait for their answer: never hold them back.
        stream
            .set_nodelay(true)
            .map_err(|err| format!("setting TCP_NODELAY: {err}"))?;
        let mut stream = Transport::new(stream, tls)?;
        registry
            .register(
                stream.socket(),
                self.token(),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|err| format!("registering the socket: {err}"))?;
        self.stream = Some(stream);
        self.served = 0;
        Ok(())
    }

    fn close(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            // Dropping the socket closes it; deregistering first keeps the poll tidy.
            let _ = registry.deregister(stream.socket());
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// The connection and where its request stands, for an error message.
    fn describe(&self, addr: SocketAddr, request_len: usize) -> String {
        let local = match self.stream.as_ref().map(|s| s.socket_ref().local_addr()) {
            Some(Ok(local)) => local.to_string(),
            _ => "unbound".into(),
        };
        let state = match self.stage {
            Stage::Idle => "idle".to_owned(),
            Stage::Connecting => "connecting".to_owned(),
            Stage::Active if self.written < request_len => {
                format!("sending, {} of {request_len} bytes written", self.written)
            }
            Stage::Active => format!("receiving, {} response bytes so far", self.received),
        };
        format!(
            "conn {} to {addr} from {local}, request {} on this connection, {state}",
            self.id,
            self.served + 1
        )
    }
}

/// Splits a token into the connection slot and the generation it was registered with.
pub(crate) fn split_token(token: Token) -> (usize, usize) {
    (
        token.0 & ((1 << CLIENT_SLOT_BITS) - 1),
        token.0 >> CLIENT_SLOT_BITS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let mut client = Client::new(12345);
        client.generation = 7;
        assert_eq!(split_token(client.token()), (12345, 7));
    }
}
