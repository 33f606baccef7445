//! The raw `handler` and `stateful-handler` worlds, exactly as `wit/handler.wit`
//! (contract 1.1) defines them.
//!
//! These are the bindings `wit-bindgen` generates, re-exported so that a guest can
//! skip the buffered layer and speak the contract directly, without a `wit-bindgen`
//! dependency of its own:
//!
//! - implement [`Guest`] (one function, `handle`, called with every [`Event`] of a
//!   turn of the host's loop and the bytes the host read for them) and export it
//!   with [`export_raw!`](crate::export_raw); an event's [`kind`] says what it is;
//! - call the host through [`io`]: `write`, `set_interest`, `shutdown_write`,
//!   `close`, `peer`, `tls`, `set_timer`, `cancel_timer`, `connect`;
//!   [`log`]`::write` for a line at a level in the host's log; and (since 1.1)
//!   [`store`] and [`topics`], whose answers come as events of their own kinds;
//! - to keep state across a hot swap, also implement [`state::Guest`]
//!   (`snapshot`, `restore`) and export with `export_raw!(Type with state)`: the
//!   component is then of the `stateful-handler` world. Plain `export_raw!(Type)`
//!   exports the `handler` world alone, a guest without state.
//!
//! ```no_run
//! use sandsock_sdk::raw::{self, io, kind, Event};
//!
//! struct Echo;
//!
//! impl raw::Guest for Echo {
//!     fn handle(events: Vec<Event>, input: Vec<u8>) {
//!         for event in events {
//!             match event.kind {
//!                 kind::DATA => {
//!                     let bytes = &input[event.start as usize..][..event.len as usize];
//!                     // A short write would need the rest queued: see the SDK's `Io`.
//!                     let _ = io::write(event.conn, bytes);
//!                 }
//!                 kind::EOF => io::close(event.conn),
//!                 _ => {} // including kinds a later 1.x may add
//!             }
//!         }
//!     }
//! }
//!
//! sandsock_sdk::export_raw!(Echo);
//! ```
//!
//! Everything in here is generated from the WIT, so its documentation is the WIT's.

// The generated code documents what the WIT documents and nothing more (for example
// not the helper methods on `IoError`), so the crate-wide `missing_docs` does not
// apply here; clippy's opinions on generated code are not actionable either.
#![allow(missing_docs, clippy::all)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "handler",
    // The export macro is used from the guest's crate, not this one: make it
    // public, name it so it does not clash with anything a guest defines, and have
    // it find these bindings through the SDK's path.
    pub_export_macro: true,
    export_macro_name: "__export_handler_world",
    default_bindings_module: "::sandsock_sdk::raw",
});

pub use self::sandsock::net::{io, log, store, topics, types};

/// The `stateful-handler` world: `handle` plus the `state` interface.
///
/// Generated again, separately, so that a guest chooses by the export macro it
/// uses which world its component has: [`export_raw!`](crate::export_raw) alone
/// exports `handle` only, `export_raw!(Type with state)` also `state`. The imports
/// and types are those of the parent module (`with`), so an [`Event`] is the same
/// type in both.
pub mod stateful {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "stateful-handler",
        with: {
            "sandsock:net/types@1.1.0": crate::raw::types,
            "sandsock:net/io@1.1.0": crate::raw::io,
            "sandsock:net/log@1.1.0": crate::raw::log,
            "sandsock:net/store@1.1.0": crate::raw::store,
            "sandsock:net/topics@1.1.0": crate::raw::topics,
        },
        pub_export_macro: true,
        export_macro_name: "__export_stateful_handler_world",
        default_bindings_module: "::sandsock_sdk::raw::stateful",
    });

    /// One `handle` for both worlds: whatever implements [`super::Guest`] exports
    /// it in this world too.
    impl<T: super::Guest> Guest for T {
        fn handle(events: ::std::vec::Vec<super::Event>, input: ::std::vec::Vec<u8>) {
            <T as super::Guest>::handle(events, input)
        }
    }
}

/// The `state` interface: implement its `Guest` (`snapshot`, `restore`) next to
/// [`Guest`] and export both with `export_raw!(Type with state)`.
pub use self::stateful::exports::sandsock::net::state;

/// The `kind` of each [`Event`], as the WIT lists them. A guest ignores a kind it
/// does not know: a later 1.x may add kinds (delivered only to guests that import
/// the interface adding them).
pub mod kind {
    /// `conn` is a new connection; its interest starts as readable only.
    pub const ACCEPTED: u8 = 0;
    /// The outbound connection `conn` completed.
    pub const CONNECTED: u8 = 1;
    /// The peer of `conn` sent `input[start..start + len]`.
    pub const DATA: u8 = 2;
    /// The peer of `conn` ended its stream, after every `data`.
    pub const EOF: u8 = 3;
    /// `conn` can take more writes.
    pub const WRITABLE: u8 = 4;
    /// `conn` failed and is released; `code` is the `io-error`'s position
    /// ([`hangup_error`](super::hangup_error)).
    pub const HANGUP: u8 = 5;
    /// The timer `id` fired.
    pub const TIMER: u8 = 6;
    /// `conn` was handed over at a hot swap.
    pub const ADOPTED: u8 = 7;
    /// The host is shutting down.
    pub const SHUTDOWN: u8 = 8;
    /// Since 1.1: the store operation `id` ended; `code` is its outcome's
    /// position, `value` its number, `input[start..start + len]` its bytes.
    pub const STORE: u8 = 9;
    /// Since 1.1: a message for subscription `id`, in `input[start..start + len]`.
    pub const MESSAGE: u8 = 10;
    /// Since 1.1: `value` messages for subscription `id` were dropped.
    pub const LOST: u8 = 11;
}

/// The error a `hangup` event's `code` names (its position in `io-error`); `reset`
/// for a position this SDK does not know.
pub fn hangup_error(code: u32) -> types::IoError {
    use types::IoError;
    match code {
        0 => IoError::Closed,
        2 => IoError::UnknownConn,
        3 => IoError::NotPermitted,
        4 => IoError::LimitExceeded,
        5 => IoError::Refused,
        6 => IoError::Unreachable,
        7 => IoError::InvalidAddress,
        _ => IoError::Reset,
    }
}
