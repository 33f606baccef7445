//! The raw `handler` and `stateful-handler` worlds, exactly as `wit/handler.wit`
//! defines them.
//!
//! These are the bindings `wit-bindgen` generates, re-exported so that a guest can
//! skip the buffered layer and speak the contract directly, without a `wit-bindgen`
//! dependency of its own:
//!
//! - implement [`Guest`] (one function, `handle`, called with every [`Event`] of a
//!   turn of the host's loop) and export it with [`export_raw!`](crate::export_raw);
//! - call the host through [`io`]: `read`, `write`, `set_interest`,
//!   `shutdown_write`, `close`, `peer`, `tls`, `set_timer`, `cancel_timer`,
//!   `connect`; and [`log`]`::write` for a line at a level in the host's log;
//! - to keep state across a hot swap, also implement [`state::Guest`]
//!   (`snapshot`, `restore`) and export with `export_raw!(Type with state)`: the
//!   component is then of the `stateful-handler` world. Plain `export_raw!(Type)`
//!   exports the `handler` world alone, a guest without state.
//!
//! ```no_run
//! use sandsock_sdk::raw::{self, io, types::ReadResult, Event};
//!
//! struct Drain;
//!
//! impl raw::Guest for Drain {
//!     fn handle(events: Vec<Event>) {
//!         for event in events {
//!             if let Event::Readable(conn) = event {
//!                 // Level-triggered: reading once is enough; if more is left,
//!                 // the host reports `readable` again in the next batch.
//!                 if let ReadResult::Eof = io::read(conn, 65536) {
//!                     let _ = io::close(conn);
//!                 }
//!             }
//!         }
//!     }
//! }
//!
//! sandsock_sdk::export_raw!(Drain);
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

pub use self::sandsock::net::{io, log, types};

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
            "sandsock:net/types@0.4.0": crate::raw::types,
            "sandsock:net/io@0.4.0": crate::raw::io,
            "sandsock:net/log@0.4.0": crate::raw::log,
        },
        pub_export_macro: true,
        export_macro_name: "__export_stateful_handler_world",
        default_bindings_module: "::sandsock_sdk::raw::stateful",
    });

    /// One `handle` for both worlds: whatever implements [`super::Guest`] exports
    /// it in this world too.
    impl<T: super::Guest> Guest for T {
        fn handle(events: ::std::vec::Vec<super::Event>) {
            <T as super::Guest>::handle(events)
        }
    }
}

/// The `state` interface: implement its `Guest` (`snapshot`, `restore`) next to
/// [`Guest`] and export both with `export_raw!(Type with state)`.
pub use self::stateful::exports::sandsock::net::state;
