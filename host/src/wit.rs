//! Host-side bindings of the `handler` world in `wit/`, the one contract with guests.
//!
//! The loop uses the generated types directly (`Event`, `ReadResult`, ...), so a batch
//! goes to the guest with no conversion.

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "handler",
    });
}

pub use generated::sandsock::net::types::{
    Conn, Event, HangupInfo, IoError, ReadResult, WriteResult,
};
pub use generated::{Handler, HandlerIndices, sandsock};

/// The world's name, as `host check` reports it.
pub const WORLD: &str = "sandsock:net/handler@0.1.0";

impl sandsock::net::types::Host for crate::runtime::GuestState {}
