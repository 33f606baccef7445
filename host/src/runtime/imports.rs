//! [`GuestState`]: what one instance's store holds, and the host side of the world's
//! imports: WASI that grants nothing, the `io` interface, which forwards each call
//! to the [`Net`] lent to the store for the length of a call, and `log`, which writes
//! to the host's log within the guest's budget. (`store` and `topics` are in
//! `store_imports.rs`.)

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::environment::{Journal, Reading};
use super::guest_log::{GuestBudget, GuestLog};
use super::limiter::Limiter;
use super::shadow::ShadowIo;
use super::store_session::StoreSession;
use crate::shared::limits::MAX_TIMER_DELAY_MS;
use crate::shared::wit::{Conn, IoError, LogLevel, TlsInfo, WriteResult, sandsock};
use crate::sockets::events::{Read, ReadResult};
use crate::sockets::net::Net;

/// The state of one guest instance's store: WASI (granting nothing but the given
/// environment), its limiter, and the connections lent to it during a call.
pub struct GuestState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    /// The loop's connections while a call runs; an empty placeholder otherwise.
    pub(super) net: Net,
    /// Where `log.write` goes: the instance's log, sharing its stdout's budget.
    log: GuestLog,
    /// A canary's shadow: its calls go here instead of to `net`.
    pub(super) shadow: Option<Box<ShadowIo>>,
    /// Its buckets, subscriptions and the answers waiting for it (contract 1.1).
    pub(super) store: StoreSession,
    /// With `--record`: where `connect`'s answers are noted, beside the clocks'.
    pub(super) journal: Option<Journal>,
}

impl GuestState {
    /// A store's state: `wasi` as built, memory held to `limiter`, `log.write`
    /// going to `log`.
    pub fn new(wasi: WasiCtx, limiter: Limiter, log: GuestLog) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            net: Net::default(),
            log,
            shadow: None,
            store: StoreSession::default(),
            journal: None,
        }
    }

    /// A state that lends its calls to `net`, outside any instance (no WASI, no
    /// memory, a log of its own): how the io contract's table reaches the older
    /// contracts' adapters (`tests/io_contract.rs`). [`GuestState::into_net`] gives
    /// `net` back.
    pub fn lending(net: Net) -> Self {
        let name: Arc<str> = "io-contract".into();
        let (log, _) = GuestLog::pair(name.clone(), Arc::new(GuestBudget::new(name)));
        let mut state = Self::new(WasiCtx::builder().build(), Limiter::new(0), log);
        state.net = net;
        state
    }

    /// The `Net` it was lent.
    pub fn into_net(self) -> Net {
        self.net
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

// What the host reads for a contract that hands the guest its bytes, and what the
// older contracts have that today's does not: `contracts/` calls these. Like every
// call, each goes to the shadow's `io` when the instance is a canary's shadow.
impl GuestState {
    /// One read of `c` into `buf` (at most 64 KiB).
    pub(super) fn read_into(&mut self, c: Conn, buf: &mut [u8]) -> Read {
        match self.shadow.as_deref_mut() {
            None => self.net.read_into(c, buf),
            Some(shadow) => shadow.read_into(c, buf),
        }
    }

    /// One read of `c`, just handed over, into `buf`, before its first edge.
    pub(super) fn read_fresh(&mut self, c: Conn, buf: &mut [u8]) -> Read {
        match self.shadow.as_deref_mut() {
            None => self.net.read_fresh(c, buf),
            Some(shadow) => shadow.read_into(c, buf),
        }
    }

    /// The older contracts' `read`.
    pub fn read(&mut self, c: Conn, max: u32) -> ReadResult {
        match self.shadow.as_deref_mut() {
            None => self.net.read(c, max),
            Some(shadow) => shadow.read(c, max),
        }
    }

    /// `close`, with its answer (`unknown-conn` for a handle it does not know).
    pub(super) fn close_answered(&mut self, c: Conn) -> Result<(), IoError> {
        match self.shadow.as_deref_mut() {
            None => self.net.close_as_guest(c),
            Some(shadow) => shadow.close(c),
        }
    }

    /// `shutdown-write`, with its answer.
    pub(super) fn shutdown_write_answered(&mut self, c: Conn) -> Result<(), IoError> {
        match self.shadow.as_deref_mut() {
            None => self.net.shutdown_write(c),
            Some(shadow) => shadow.shutdown_write(c),
        }
    }

    /// `set-timer`, refusing a delay over `max_ms`.
    pub(super) fn set_timer_within(
        &mut self,
        id: u64,
        after_ms: u64,
        max_ms: u64,
    ) -> Result<(), IoError> {
        match self.shadow.as_deref_mut() {
            None => self.net.set_timer(id, after_ms, max_ms),
            Some(shadow) => shadow.set_timer(id, after_ms, max_ms),
        }
    }
}

/// The `types` interface has no functions: bindgen still asks for its trait.
impl sandsock::net::types::Host for GuestState {}

// Each call goes to the shadow's `io` when the instance is a canary's shadow: one
// test of an `Option` per call for every other instance.
impl sandsock::net::io::Host for GuestState {
    fn write(&mut self, c: Conn, data: Vec<u8>) -> WriteResult {
        match self.shadow.as_deref_mut() {
            None => self.net.write(c, &data),
            Some(shadow) => shadow.write(c, &data),
        }
    }

    fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
        match self.shadow.as_deref_mut() {
            None => self.net.set_interest(c, readable, writable),
            Some(shadow) => shadow.set_interest(c, readable, writable),
        }
    }

    // `close` and `shutdown-write` answer nothing (since contract 0.4.0): an unknown
    // handle is ignored, and a failed connection's `hangup` follows anyway.
    fn shutdown_write(&mut self, c: Conn) {
        let _ = self.shutdown_write_answered(c);
    }

    fn close(&mut self, c: Conn) {
        let _ = self.close_answered(c);
    }

    fn peer(&mut self, c: Conn) -> Option<String> {
        match self.shadow.as_deref_mut() {
            None => self.net.peer(c),
            Some(shadow) => shadow.peer(c),
        }
    }

    fn tls(&mut self, c: Conn) -> Option<TlsInfo> {
        match self.shadow.as_deref_mut() {
            None => self.net.tls(c),
            Some(shadow) => shadow.tls(c),
        }
    }

    fn set_timer(&mut self, id: u64, after_ms: u32) -> Result<(), IoError> {
        self.set_timer_within(id, u64::from(after_ms), MAX_TIMER_DELAY_MS)
    }

    fn cancel_timer(&mut self, id: u64) {
        match self.shadow.as_deref_mut() {
            None => self.net.cancel_timer(id),
            Some(shadow) => shadow.cancel_timer(id),
        }
    }

    fn connect(&mut self, addr: String) -> Result<Conn, IoError> {
        let result = match self.shadow.as_deref_mut() {
            None => self.net.connect(&addr),
            Some(shadow) => shadow.connect(),
        };
        if let Some(journal) = &self.journal {
            journal.push(Reading::Connect(result));
        }
        result
    }
}

impl sandsock::net::log::Host for GuestState {
    fn write(&mut self, level: LogLevel, message: String) {
        self.log.line(level, &message);
    }
}
