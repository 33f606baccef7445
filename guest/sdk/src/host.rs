//! The host calls the buffered layer makes, in one place. It makes no reads: since
//! contract 1.0 the host reads for the guest and hands the bytes over with the
//! events.
//!
//! In a wasm build [`Host`] is [`WasmHost`], a zero-sized wrapper over the
//! [`raw`](crate::raw) imports. In this crate's unit tests it is
//! [`fake::FakeHost`], which scripts the host's answers natively, so the buffering,
//! backpressure and close logic is tested without a wasm runtime.

use crate::raw::types::{IoError, TlsInfo, WriteResult};

#[cfg(not(test))]
pub(crate) type Host = WasmHost;
#[cfg(test)]
pub(crate) type Host = fake::FakeHost;

/// The real host, reached through the component's imports.
#[cfg_attr(test, allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct WasmHost;

#[cfg_attr(test, allow(dead_code))]
impl WasmHost {
    pub(crate) fn write(&mut self, conn: u64, bytes: &[u8]) -> WriteResult {
        crate::raw::io::write(conn, bytes)
    }

    pub(crate) fn set_interest(&mut self, conn: u64, readable: bool, writable: bool) {
        crate::raw::io::set_interest(conn, readable, writable)
    }

    pub(crate) fn shutdown_write(&mut self, conn: u64) {
        crate::raw::io::shutdown_write(conn)
    }

    pub(crate) fn close(&mut self, conn: u64) {
        crate::raw::io::close(conn)
    }

    pub(crate) fn peer(&self, conn: u64) -> Option<String> {
        crate::raw::io::peer(conn)
    }

    pub(crate) fn tls(&self, conn: u64) -> Option<TlsInfo> {
        crate::raw::io::tls(conn)
    }

    pub(crate) fn set_timer(&mut self, id: u64, after_ms: u32) -> Result<(), IoError> {
        crate::raw::io::set_timer(id, after_ms)
    }

    pub(crate) fn cancel_timer(&mut self, id: u64) {
        crate::raw::io::cancel_timer(id)
    }

    pub(crate) fn connect(&mut self, addr: &str) -> Result<u64, IoError> {
        crate::raw::io::connect(addr)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted host for unit tests. It keeps to the io contract that
    //! `wit/io-cases.json` writes down (`contract.rs` runs it), so what the SDK is
    //! tested against is what a real host does.

    use super::*;
    use std::collections::{HashMap, VecDeque};

    /// What one read of a connection finds: the host's reads for the guest, as the
    /// tests script them (the tests turn them into `data` and `eof` events, as the
    /// host does before a call), and the io table's `read`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum ReadResult {
        Data(Vec<u8>),
        WouldBlock,
        Eof,
        Failed(IoError),
    }
    use std::net::SocketAddr;

    /// The most one `read` answers, whatever `max` asks.
    pub(crate) const MAX_READ: u32 = 64 * 1024;
    /// The longest `set-timer` delay: a day.
    pub(crate) const MAX_TIMER_MS: u32 = 86_400_000;

    /// What the fake host knows about one connection.
    #[derive(Debug, Default)]
    pub(crate) struct FakeConn {
        /// What the host's reads find, in order; `would-block` once they run out. An `eof` or
        /// a failure is final: every later read answers it again.
        pub(crate) reads: VecDeque<ReadResult>,
        /// How many more bytes `write` accepts before it answers `would-block`.
        pub(crate) room: usize,
        /// Answer every `write` with this failure instead.
        pub(crate) write_error: Option<IoError>,
        /// Everything `write` accepted, in order.
        pub(crate) written: Vec<u8>,
        /// The last `set-interest` call: (readable, writable).
        pub(crate) interest: (bool, bool),
        pub(crate) read_calls: usize,
        pub(crate) shut_down: bool,
        pub(crate) closed: bool,
    }

    #[derive(Debug)]
    pub(crate) struct FakeHost {
        pub(crate) conns: HashMap<u64, FakeConn>,
        pub(crate) timers: HashMap<u64, u32>,
        /// How many timers may be outstanding at once.
        pub(crate) max_timers: usize,
        /// Whether `connect` may connect out (to any `ip:port`).
        pub(crate) allow_connect: bool,
        /// The addresses `connect` handed out a connection for, in order.
        pub(crate) connects: Vec<String>,
        /// Breaks the contract on purpose: an `eof` is answered once, then
        /// `would-block`. Only `contract.rs` sets it, to show its runner can fail.
        pub(crate) eof_once: bool,
    }

    impl Default for FakeHost {
        /// Connecting allowed and two timers, so that tests need not ask.
        fn default() -> Self {
            Self {
                conns: HashMap::new(),
                timers: HashMap::new(),
                max_timers: 2,
                allow_connect: true,
                connects: Vec::new(),
                eof_once: false,
            }
        }
    }

    /// The first handle `connect` hands out; then one more per call.
    pub(crate) const FIRST_OUTBOUND: u64 = 1000;

    impl FakeHost {
        /// Hands out a connection, as the host does before `accepted`.
        pub(crate) fn add_conn(&mut self, conn: u64, room: usize) -> &mut FakeConn {
            self.conns.entry(conn).or_insert(FakeConn {
                room,
                interest: (true, false),
                ..FakeConn::default()
            })
        }

        pub(crate) fn conn(&mut self, conn: u64) -> &mut FakeConn {
            self.conns
                .get_mut(&conn)
                .expect("test uses a connected handle")
        }

        pub(crate) fn read(&mut self, conn: u64, max: u32) -> ReadResult {
            let eof_once = self.eof_once;
            let Some(state) = self.live(conn) else {
                return ReadResult::Failed(IoError::UnknownConn);
            };
            state.read_calls += 1;
            let max = max.min(MAX_READ) as usize;
            match state.reads.pop_front() {
                Some(ReadResult::Data(mut bytes)) if bytes.len() > max => {
                    let rest = bytes.split_off(max);
                    state.reads.push_front(ReadResult::Data(rest));
                    ReadResult::Data(bytes)
                }
                Some(ReadResult::Eof) if eof_once => ReadResult::Eof,
                Some(end @ (ReadResult::Eof | ReadResult::Failed(_))) => {
                    state.reads.push_front(end.clone());
                    end
                }
                Some(answer) => answer,
                None => ReadResult::WouldBlock,
            }
        }

        pub(crate) fn write(&mut self, conn: u64, bytes: &[u8]) -> WriteResult {
            let Some(state) = self.live(conn) else {
                return WriteResult::Failed(IoError::UnknownConn);
            };
            if let Some(error) = state.write_error {
                return WriteResult::Failed(error);
            }
            if state.shut_down {
                return WriteResult::Failed(IoError::Closed);
            }
            let n = bytes.len().min(state.room);
            if n == 0 && !bytes.is_empty() {
                return WriteResult::WouldBlock;
            }
            state.room -= n;
            state.written.extend_from_slice(&bytes[..n]);
            WriteResult::Accepted(n as u32)
        }

        pub(crate) fn set_interest(&mut self, conn: u64, readable: bool, writable: bool) {
            if let Some(state) = self.live(conn) {
                state.interest = (readable, writable);
            }
        }

        pub(crate) fn shutdown_write(&mut self, conn: u64) {
            if let Some(state) = self.live(conn) {
                state.shut_down = true;
            }
        }

        pub(crate) fn close(&mut self, conn: u64) {
            if let Some(state) = self.live(conn) {
                state.closed = true;
            }
        }

        pub(crate) fn peer(&self, conn: u64) -> Option<String> {
            self.conns
                .get(&conn)
                .filter(|state| !state.closed)
                .map(|_| format!("127.0.0.1:{}", 40000 + conn))
        }

        /// Plaintext, as every scripted connection is.
        pub(crate) fn tls(&self, _conn: u64) -> Option<TlsInfo> {
            None
        }

        /// Re-arming a timer does not count against the limit.
        pub(crate) fn set_timer(&mut self, id: u64, after_ms: u32) -> Result<(), IoError> {
            let full = self.timers.len() >= self.max_timers && !self.timers.contains_key(&id);
            if full || after_ms > MAX_TIMER_MS {
                return Err(IoError::LimitExceeded);
            }
            self.timers.insert(id, after_ms);
            Ok(())
        }

        pub(crate) fn cancel_timer(&mut self, id: u64) {
            self.timers.remove(&id);
        }

        /// Hands out an outbound connection at once, taking writes without bound
        /// (the host buffers them until connected); the test then delivers
        /// `connected` or `hangup`.
        pub(crate) fn connect(&mut self, addr: &str) -> Result<u64, IoError> {
            if addr.parse::<SocketAddr>().is_err() {
                return Err(IoError::InvalidAddress);
            }
            if !self.allow_connect {
                return Err(IoError::NotPermitted);
            }
            self.connects.push(addr.to_owned());
            let conn = FIRST_OUTBOUND + self.connects.len() as u64 - 1;
            self.add_conn(conn, usize::MAX);
            Ok(conn)
        }

        fn live(&mut self, conn: u64) -> Option<&mut FakeConn> {
            self.conns.get_mut(&conn).filter(|state| !state.closed)
        }
    }
}
