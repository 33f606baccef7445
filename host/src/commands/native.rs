//! [`NativeHttp`], the benchmark's baseline: the `http` example's logic compiled
//! natively, driven by the same event loop and the same `Net` calls as the wasm guest.
//!
//! The HTTP code is the guest's own `http.rs`, included by path, and the connection
//! handling mirrors what the guest SDK does (read until `would-block`, keep what the
//! host did not accept, close after the last answer). The difference between the two
//! is then the sandbox: the call into wasm, the copies across its boundary, the
//! guest's own allocator.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::shared::limits::MAX_READ_CHUNK;
use crate::shared::wit::{Conn, WriteResult};
use crate::sockets::batch::Batch;
use crate::sockets::events::{Event, Read};
use crate::sockets::handler::EventHandler;
use crate::sockets::net::Net;

#[path = "../../../guest/examples/http/src/http.rs"]
#[allow(dead_code, missing_docs)]
mod http;

/// Per connection: input that holds an unfinished request, and output the host did not
/// take yet.
#[derive(Default)]
struct Pending {
    input: Vec<u8>,
    output: Vec<u8>,
    close_after_output: bool,
}

/// The SDK's `ConnMap` hasher (Fibonacci hashing of the handle), so that the
/// baseline's connection lookups cost what the guest's do.
#[derive(Default)]
struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, handle: u64) {
        self.0 = (self.0 ^ handle).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
}

/// The `http` logic as a native [`EventHandler`].
#[derive(Default)]
pub struct NativeHttp {
    conns: HashMap<Conn, Pending, BuildHasherDefault<HandleHasher>>,
    /// Answers to one read, reused.
    out: Vec<u8>,
    /// What one read brings, reused: a read into it allocates nothing, as the
    /// guest's path reads straight into the call's input.
    input: Vec<u8>,
}

impl EventHandler for NativeHttp {
    fn handle(&mut self, batch: &Batch, net: &mut Net) {
        for event in batch.events() {
            match *event {
                Event::Accepted(conn) | Event::Adopted(conn) => {
                    self.conns.insert(conn, Pending::default());
                }
                Event::Readable(conn) => self.on_readable(conn, net),
                Event::Writable(conn) => self.on_writable(conn, net),
                Event::Hangup(hangup) => {
                    self.conns.remove(&hangup.conn);
                }
                Event::Connected(_) | Event::Timer(_) | Event::Shutdown | Event::Mail => {}
            }
        }
    }

    fn shutdown(&mut self, net: &mut Net) {
        // Idle keep-alive connections would only wait out the timeout.
        let idle: Vec<Conn> = self
            .conns
            .iter()
            .filter(|(_, state)| state.input.is_empty() && state.output.is_empty())
            .map(|(&conn, _)| conn)
            .collect();
        for conn in idle {
            self.close(conn, net);
        }
    }
}

impl NativeHttp {
    /// One read, as the host makes for a 1.0 guest: a full one leaves the
    /// connection readable, and the rest comes next turn.
    fn on_readable(&mut self, conn: Conn, net: &mut Net) {
        let mut input = std::mem::take(&mut self.input);
        input.resize(MAX_READ_CHUNK, 0);
        match net.read_into(conn, &mut input) {
            Read::Data(n) => self.on_data(conn, &input[..n], net),
            Read::WouldBlock => {}
            Read::Eof => self.close_when_sent(conn, net),
            Read::Failed(_) => {} // a hangup follows
        }
        self.input = input;
    }

    /// Answers what `data` completes.
    fn on_data(&mut self, conn: Conn, data: &[u8], net: &mut Net) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        self.out.clear();
        let answers = if state.input.is_empty() {
            let answers = http::answer_all(data, &mut self.out);
            state.input.extend_from_slice(&data[answers.consumed..]);
            answers
        } else {
            state.input.extend_from_slice(data);
            let answers = http::answer_all(&state.input, &mut self.out);
            state.input.drain(..answers.consumed);
            answers
        };
        if answers.close {
            state.input.clear();
        }
        self.send(conn, net, answers.close);
    }

    /// Writes `self.out`, keeping what the host does not take.
    fn send(&mut self, conn: Conn, net: &mut Net, close: bool) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        if state.output.is_empty() {
            let taken = match net.write(conn, &self.out) {
                WriteResult::Accepted(n) => n as usize,
                WriteResult::WouldBlock => 0,
                WriteResult::Failed(_) => return,
            };
            state.output.extend_from_slice(&self.out[taken..]);
        } else {
            state.output.extend_from_slice(&self.out);
        }
        state.close_after_output |= close;
        if state.output.is_empty() {
            if close {
                self.close(conn, net);
            }
        } else {
            net.set_interest(conn, !close, true);
        }
    }

    fn on_writable(&mut self, conn: Conn, net: &mut Net) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        while !state.output.is_empty() {
            match net.write(conn, &state.output) {
                WriteResult::Accepted(n) => {
                    state.output.drain(..n as usize);
                }
                WriteResult::WouldBlock | WriteResult::Failed(_) => return,
            }
        }
        if state.close_after_output {
            self.close(conn, net);
        } else {
            net.set_interest(conn, true, false);
        }
    }

    /// Closes now, or after the output the host has not taken yet.
    fn close_when_sent(&mut self, conn: Conn, net: &mut Net) {
        match self.conns.get_mut(&conn) {
            Some(state) if !state.output.is_empty() => state.close_after_output = true,
            _ => self.close(conn, net),
        }
    }

    fn close(&mut self, conn: Conn, net: &mut Net) {
        self.conns.remove(&conn);
        let _ = net.close(conn);
    }
}
