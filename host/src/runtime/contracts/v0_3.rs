//! Contract 0.3.0: 0.2.0 and `tls`. Like 0.2.0, `close` and `shutdown-write` answer
//! `unknown-conn` for a handle they do not know, `set-timer` takes a 64-bit delay (at
//! most a day), and there is no `log`. Its types have today's cases under other
//! names: each batch is converted, into a buffer the instance keeps.

use super::super::imports::GuestState;
use crate::shared::limits::MAX_TIMER_DELAY_MS;
use crate::shared::wit::sandsock::net::io::Host as Today;
use crate::shared::wit::{self as today, Conn};

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "wit/0.3.0",
        world: "handler",
    });
}

pub use generated::sandsock::net::{io, types};
pub use generated::{Handler, HandlerIndices};

older_errors!();
older_types!();
older_io!(
    max_timer_ms: MAX_TIMER_DELAY_MS,
    fn tls(&mut self, c: Conn) -> Option<types::TlsInfo> {
        Today::tls(self, c).map(|info| types::TlsInfo {
            version: info.version,
            server_name: info.server_name,
            alpn: info.alpn,
        })
    }
);
