//! The host calls the buffered layer makes, in one place. It makes no reads: since
//! contract 1.0 the host reads for the guest and hands the bytes over with the
//! events.
//!
//! In a wasm build [`Host`] is [`WasmHost`], a zero-sized wrapper over the
//! [`raw`](crate::raw) imports. In this crate's unit tests it is
//! [`fake::FakeHost`], which scripts the host's answers natively, so the buffering,
//! backpressure and close logic is tested without a wasm runtime.

use crate::raw::store::{self, Outcome};
use crate::raw::topics;
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

/// The store and topics (contract 1.1), each call one import.
#[cfg_attr(test, allow(dead_code))]
impl WasmHost {
    pub(crate) fn store_open(&mut self, name: &str) -> Result<u32, Outcome> {
        store::open(name)
    }

    pub(crate) fn store_get(&mut self, bucket: u32, key: &str) -> u64 {
        store::get(bucket, key)
    }

    pub(crate) fn store_set(&mut self, bucket: u32, key: &str, value: &[u8]) -> u64 {
        store::set(bucket, key, value)
    }

    pub(crate) fn store_delete(&mut self, bucket: u32, key: &str) -> u64 {
        store::delete(bucket, key)
    }

    pub(crate) fn store_exists(&mut self, bucket: u32, key: &str) -> u64 {
        store::exists(bucket, key)
    }

    pub(crate) fn store_list_keys(&mut self, bucket: u32, cursor: Option<&str>) -> u64 {
        store::list_keys(bucket, cursor)
    }

    pub(crate) fn store_increment(&mut self, bucket: u32, key: &str, delta: i64) -> u64 {
        store::increment(bucket, key, delta)
    }

    pub(crate) fn store_compare_and_swap(
        &mut self,
        bucket: u32,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> u64 {
        store::compare_and_swap(bucket, key, old, new)
    }

    pub(crate) fn store_get_many(&mut self, bucket: u32, keys: &[&str]) -> u64 {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        store::get_many(bucket, &keys)
    }

    pub(crate) fn store_set_many(&mut self, bucket: u32, entries: &[(&str, &[u8])]) -> u64 {
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        store::set_many(bucket, &entries)
    }

    pub(crate) fn store_delete_many(&mut self, bucket: u32, keys: &[&str]) -> u64 {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        store::delete_many(bucket, &keys)
    }

    pub(crate) fn subscribe(&mut self, topic: &str) -> Result<u64, Outcome> {
        topics::subscribe(topic)
    }

    pub(crate) fn unsubscribe(&mut self, subscription: u64) {
        topics::unsubscribe(subscription)
    }

    pub(crate) fn publish(&mut self, topic: &str, message: &[u8]) -> Result<(), Outcome> {
        topics::publish(topic, message)
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
        /// The store: buckets by handle, entries, and answers not yet delivered.
        pub(crate) buckets: Vec<String>,
        pub(crate) entries: HashMap<(String, String), Vec<u8>>,
        pub(crate) answers: Vec<FakeAnswer>,
        pub(crate) next_op: u64,
        /// Topics subscribed to (a subscription's id is its place + 1), and what
        /// was published.
        pub(crate) subscriptions: Vec<String>,
        pub(crate) published: Vec<(String, Vec<u8>)>,
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
                buckets: Vec::new(),
                entries: HashMap::new(),
                answers: Vec::new(),
                next_op: 0,
                subscriptions: Vec::new(),
                published: Vec::new(),
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

    /// The store, as a map that answers each operation at once into `answers`
    /// (the tests turn them into `store` events, as the host answers in a later
    /// batch); topics record what was published.
    impl FakeHost {
        pub(crate) fn store_open(&mut self, name: &str) -> Result<u32, Outcome> {
            if name.is_empty() {
                return Err(Outcome::BadName);
            }
            let at = match self.buckets.iter().position(|b| b == name) {
                Some(at) => at,
                None => {
                    self.buckets.push(name.to_owned());
                    self.buckets.len() - 1
                }
            };
            Ok(at as u32)
        }

        fn answer(&mut self, code: u32, value: u64, bytes: &[u8]) -> u64 {
            self.next_op += 1;
            self.answers.push(FakeAnswer {
                op: self.next_op,
                code,
                value,
                bytes: bytes.to_vec(),
            });
            self.next_op
        }

        fn key(&self, bucket: u32, key: &str) -> (String, String) {
            let name = self
                .buckets
                .get(bucket as usize)
                .cloned()
                .unwrap_or_default();
            (name, key.to_owned())
        }

        pub(crate) fn store_get(&mut self, bucket: u32, key: &str) -> u64 {
            match self.entries.get(&self.key(bucket, key)).cloned() {
                Some(value) => self.answer(0, 0, &value),
                None => self.answer(1, 0, b""),
            }
        }

        pub(crate) fn store_set(&mut self, bucket: u32, key: &str, value: &[u8]) -> u64 {
            let at = self.key(bucket, key);
            self.entries.insert(at, value.to_vec());
            self.answer(0, 0, b"")
        }

        pub(crate) fn store_delete(&mut self, bucket: u32, key: &str) -> u64 {
            let at = self.key(bucket, key);
            let found = self.entries.remove(&at).is_some();
            self.answer(if found { 0 } else { 1 }, 0, b"")
        }

        pub(crate) fn store_exists(&mut self, bucket: u32, key: &str) -> u64 {
            let found = self.entries.contains_key(&self.key(bucket, key));
            self.answer(if found { 0 } else { 1 }, 0, b"")
        }

        pub(crate) fn store_list_keys(&mut self, _bucket: u32, _cursor: Option<&str>) -> u64 {
            self.answer(0, 0, b"")
        }

        pub(crate) fn store_increment(&mut self, bucket: u32, key: &str, delta: i64) -> u64 {
            let at = self.key(bucket, key);
            let now: i64 = self
                .entries
                .get(&at)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            self.entries
                .insert(at, (now + delta).to_string().into_bytes());
            self.answer(0, (now + delta) as u64, b"")
        }

        pub(crate) fn store_compare_and_swap(
            &mut self,
            bucket: u32,
            key: &str,
            old: Option<&[u8]>,
            new: &[u8],
        ) -> u64 {
            let at = self.key(bucket, key);
            if self.entries.get(&at).map(Vec::as_slice) != old {
                return self.answer(2, 0, b"");
            }
            self.entries.insert(at, new.to_vec());
            self.answer(0, 0, b"")
        }

        pub(crate) fn store_get_many(&mut self, bucket: u32, keys: &[&str]) -> u64 {
            let op = self.next_op + 1;
            for (i, key) in keys.iter().enumerate() {
                let (code, value) = match self.entries.get(&self.key(bucket, key)) {
                    Some(value) => (0, value.clone()),
                    None => (1, Vec::new()),
                };
                self.answers.push(FakeAnswer {
                    op,
                    code,
                    value: i as u64,
                    bytes: value,
                });
            }
            self.next_op = op;
            op
        }

        pub(crate) fn store_set_many(&mut self, bucket: u32, entries: &[(&str, &[u8])]) -> u64 {
            for (key, value) in entries {
                let at = self.key(bucket, key);
                self.entries.insert(at, value.to_vec());
            }
            self.answer(0, 0, b"")
        }

        pub(crate) fn store_delete_many(&mut self, bucket: u32, keys: &[&str]) -> u64 {
            for key in keys {
                let at = self.key(bucket, key);
                self.entries.remove(&at);
            }
            self.answer(0, 0, b"")
        }

        pub(crate) fn subscribe(&mut self, topic: &str) -> Result<u64, Outcome> {
            self.subscriptions.push(topic.to_owned());
            Ok(self.subscriptions.len() as u64)
        }

        pub(crate) fn unsubscribe(&mut self, _subscription: u64) {}

        pub(crate) fn publish(&mut self, topic: &str, message: &[u8]) -> Result<(), Outcome> {
            self.published.push((topic.to_owned(), message.to_vec()));
            Ok(())
        }
    }

    /// One answer of the fake store, as a `store` event would carry it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) struct FakeAnswer {
        pub(crate) op: u64,
        pub(crate) code: u32,
        pub(crate) value: u64,
        pub(crate) bytes: Vec<u8>,
    }
}
