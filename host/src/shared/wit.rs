//! Host-side bindings of the `handler` world in `wit/`, the one contract with guests.
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

/// The version of the package this host speaks; a component built for another is
/// refused, naming both.
pub const VERSION: &str = "0.4.0";

/// The world's name, as `host check` reports it.
pub const WORLD: &str = "sandsock:net/handler@0.4.0";

/// The name the optional `state` interface is exported under.
pub const STATE_INTERFACE: &str = "sandsock:net/state@0.4.0";
