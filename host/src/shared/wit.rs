//! Host-side bindings of the `handler` world in `wit/`: today's contract (the older
//! ones the host serves are in `runtime::contracts`, which turns the loop's events
//! into each version's types).
//!
//! Only the generated code lives here: the sockets side uses its plain types
//! (`Conn`, `IoError`, `WriteResult`, ...), and the guest side implements its
//! imports (`runtime::imports`).

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "handler",
    });
}

pub use generated::sandsock::net::log::Level as LogLevel;
pub use generated::sandsock::net::store::Outcome as StoreOutcome;
pub use generated::sandsock::net::types::{Conn, Event, IoError, TlsInfo, WriteResult};
pub use generated::{Handler, HandlerIndices, sandsock};

/// The contract's package, without its version.
pub const PACKAGE: &str = "sandsock:net";

/// Every [`IoError`], numbered by its position: the number tapes and an upgrade's
/// parcels write for one. Only ever appended to.
pub const IO_ERRORS: [IoError; 8] = [
    IoError::Closed,
    IoError::Reset,
    IoError::UnknownConn,
    IoError::NotPermitted,
    IoError::LimitExceeded,
    IoError::Refused,
    IoError::Unreachable,
    IoError::InvalidAddress,
];

/// The version of the package these bindings are for: today's, which the host's
/// internals speak (`runtime::contracts` adapts the older ones it still serves).
pub const VERSION: &str = "1.1.0";

/// The `kind` of each [`Event`], as the WIT lists them (0 to 8 since 1.0, 9 to 11
/// since 1.1).
pub mod kind {
    /// A new connection.
    pub const ACCEPTED: u8 = 0;
    /// An outbound connection completed.
    pub const CONNECTED: u8 = 1;
    /// Bytes from the peer, in `input`.
    pub const DATA: u8 = 2;
    /// The peer's end-of-stream.
    pub const EOF: u8 = 3;
    /// Room to write.
    pub const WRITABLE: u8 = 4;
    /// The connection failed; `code` is the `io-error`'s position.
    pub const HANGUP: u8 = 5;
    /// A timer fired; `id` is its id.
    pub const TIMER: u8 = 6;
    /// A connection handed over at a hot swap.
    pub const ADOPTED: u8 = 7;
    /// The host is shutting down.
    pub const SHUTDOWN: u8 = 8;
    /// A store operation ended; `id` is its id, `code` its outcome.
    pub const STORE: u8 = 9;
    /// A message on a subscribed topic; `id` is the subscription.
    pub const MESSAGE: u8 = 10;
    /// Messages of subscription `id` were dropped; `value` says how many.
    pub const LOST: u8 = 11;
}
