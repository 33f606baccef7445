//! Host-side bindings of the `handler` world in `wit/`: today's contract, which the
//! host's internals speak (the older ones it serves are in `runtime::contracts`).
//!
//! Only the generated code lives here: the sockets side uses its types directly
//! (`Event`, `ReadResult`, ...), so a batch goes to the guest with no conversion, and
//! the guest side implements its imports (`runtime::imports`).

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "handler",
    });
}

pub use generated::sandsock::net::log::Level as LogLevel;
pub use generated::sandsock::net::types::{
    Conn, Event, HangupInfo, IoError, ReadResult, TlsInfo, WriteResult,
};
pub use generated::{Handler, HandlerIndices, sandsock};

/// The contract's package, without its version.
pub const PACKAGE: &str = "sandsock:net";

/// The version of the package these bindings are for: today's, which the host's
/// internals speak (`runtime::contracts` adapts the older ones it still serves).
pub const VERSION: &str = "0.4.0";
