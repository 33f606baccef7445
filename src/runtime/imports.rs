//! [`GuestState`]: what one instance's store holds, and the host side of the world's
//! imports: WASI that grants nothing, the `io` interface, which forwards each call
//! to the [`Net`] lent to the store for the length of a call, and `log`, which writes
//! to the host's log within the guest's budget.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::guest_log::GuestLog;
use super::limiter::Limiter;
use crate::sockets::net::Net;
use crate::wit::{Conn, IoError, LogLevel, ReadResult, TlsInfo, WriteResult, sandsock};

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
        }
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

/// The `types` interface has no functions: bindgen still asks for its trait.
impl sandsock::net::types::Host for GuestState {}

impl sandsock::net::io::Host for GuestState {
    fn read(&mut self, c: Conn, max: u32) -> ReadResult {
        self.net.read(c, max)
    }

    fn write(&mut self, c: Conn, data: Vec<u8>) -> WriteResult {
        self.net.write(c, &data)
    }

    fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
        self.net.set_interest(c, readable, writable)
    }

    // `close` and `shutdown-write` answer nothing (contract 0.4.0): an unknown
    // handle is ignored, and a failed connection's `hangup` follows anyway.
    fn shutdown_write(&mut self, c: Conn) {
        let _ = self.net.shutdown_write(c);
    }

    fn close(&mut self, c: Conn) {
        let _ = self.net.close(c);
    }

    fn peer(&mut self, c: Conn) -> Option<String> {
        self.net.peer(c)
    }

    fn tls(&mut self, c: Conn) -> Option<TlsInfo> {
        self.net.tls(c)
    }

    fn set_timer(&mut self, id: u64, after_ms: u32) -> Result<(), IoError> {
        self.net.set_timer(id, u64::from(after_ms))
    }

    fn cancel_timer(&mut self, id: u64) {
        self.net.cancel_timer(id)
    }

    fn connect(&mut self, addr: String) -> Result<Conn, IoError> {
        self.net.connect(&addr)
    }
}

impl sandsock::net::log::Host for GuestState {
    fn write(&mut self, level: LogLevel, message: String) {
        self.log.line(level, &message);
    }
}
