//! Contract 0.4.0: 0.3.0 made easier for Python and JavaScript (`close` and
//! `shutdown-write` answer nothing, a 32-bit `set-timer` delay, `log`). The guest reads
//! for itself: it hears `readable` and calls `read`, where 1.0 hands it the bytes. Its
//! types are its own, with the same cases as the host's: each batch is converted, into
//! a buffer the instance keeps.

use super::super::imports::GuestState;
use crate::shared::limits::MAX_TIMER_DELAY_MS;
use crate::shared::wit::sandsock::net::io::Host as Today;
use crate::shared::wit::sandsock::net::log::Host as TodayLog;
use crate::shared::wit::{self as today, Conn, LogLevel};

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "wit/0.4.0",
        world: "handler",
    });
}

pub use generated::sandsock::net::{io, log, types};
pub use generated::{Handler, HandlerIndices};

older_errors!();
older_types!();

impl types::Host for GuestState {}

impl io::Host for GuestState {
    fn read(&mut self, c: Conn, max: u32) -> types::ReadResult {
        read_result(GuestState::read(self, c, max))
    }

    fn write(&mut self, c: Conn, data: Vec<u8>) -> types::WriteResult {
        write_result(Today::write(self, c, data))
    }

    fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
        Today::set_interest(self, c, readable, writable)
    }

    fn shutdown_write(&mut self, c: Conn) {
        Today::shutdown_write(self, c)
    }

    fn close(&mut self, c: Conn) {
        Today::close(self, c)
    }

    fn peer(&mut self, c: Conn) -> Option<String> {
        Today::peer(self, c)
    }

    fn tls(&mut self, c: Conn) -> Option<types::TlsInfo> {
        Today::tls(self, c).map(|info| types::TlsInfo {
            version: info.version,
            server_name: info.server_name,
            alpn: info.alpn,
        })
    }

    fn set_timer(&mut self, id: u64, after_ms: u32) -> Result<(), types::IoError> {
        self.set_timer_within(id, u64::from(after_ms), MAX_TIMER_DELAY_MS)
            .map_err(error)
    }

    fn cancel_timer(&mut self, id: u64) {
        Today::cancel_timer(self, id)
    }

    fn connect(&mut self, addr: String) -> Result<Conn, types::IoError> {
        Today::connect(self, addr).map_err(error)
    }
}

impl log::Host for GuestState {
    fn write(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        TodayLog::write(self, level, message)
    }
}
