//! Write sandsock handler guests in Rust.
//!
//! The sandsock host owns the sockets and an epoll loop; once per turn of the loop it
//! calls the guest's `handle` with every event of that turn and the bytes it read
//! for them, and the guest does non-blocking I/O through host imports (see
//! `wit/handler.wit`, contract 1.1). This crate puts two layers over that contract:
//!
//! - [`raw`]: the generated bindings, for guests that want the contract as it is:
//!   implement [`raw::Guest`] and export it with [`export_raw!`].
//! - The buffered layer: implement [`Handler`] (every method has a default) and
//!   export it with [`serve!`]. The SDK hands each connection's bytes to
//!   [`Handler::on_data`] (holding them while the handler paused reading); [`Io::write`] never blocks and never fails
//!   visibly: what the host does not take is queued in the guest and sent as the
//!   peer reads, with backpressure ([`HIGH_WATER`]) so a peer that does not read
//!   cannot make the guest buffer without bound. [`Io::connect`] opens outbound
//!   connections, which are written to and closed like accepted ones.
//!   [`LineBuffers`] splits each connection's input into bounded lines, and
//!   [`InputBuffers`] holds each connection's unfinished message for a parser;
//!   both carry what they hold across a hot swap.
//! - The host-held store and topics (contract 1.1), on [`Io`]: state every worker
//!   and every generation shares and that outlives the instance
//!   ([`Io::open_bucket`], [`Io::get`], [`Io::set`], ..., [`Io::publish`]), with
//!   the answers in [`Handler::on_store`] and the messages in
//!   [`Handler::on_message`]. No call waits.
//!
//! A [`serve!`] guest is of the `stateful-handler` world: at a hot swap with
//! `--swap handoff` the host hands its connections to a new instance, and the SDK
//! carries across what it holds for them (bytes not yet sent, pauses, pending
//! closes) together with whatever [`Handler::snapshot`] returns, which the new
//! instance's [`Handler::restore`] takes up before each connection arrives in
//! [`Handler::on_adopted`]. [`SnapshotWriter`] and [`SnapshotReader`] encode
//! such state, and a snapshot that cannot be read is logged and ignored, never a
//! trap.
//!
//! ```no_run
//! use sandsock_sdk::{Conn, Handler, Io};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
//!         io.write(conn, data);
//!     }
//! }
//!
//! sandsock_sdk::serve!(Echo);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`: the result is a
//! component, ready for `host --guest`.

#![deny(missing_docs)]

mod conn;
mod conn_state;
#[cfg(test)]
mod contract;
mod handler;
mod handoff;
mod host;
mod input;
mod io;
pub mod raw;
mod runtime;
mod snapshot;
mod store;
#[cfg(test)]
mod tests;
mod write_queue;

pub use conn::{Conn, ConnHasher, ConnMap};
pub use conn_state::{HIGH_WATER, LOW_WATER};
pub use handler::Handler;
pub use input::{InputBuffers, LineBuffers, LineTooLong, trim_line_end};
#[allow(deprecated)]
pub use io::READS_PER_EVENT;
pub use io::{Io, READ_CHUNK};
/// Why a host call failed ([`Io::connect`], [`Io::set_timer`]), or why a
/// connection ended ([`Io::hangup_reason`]).
pub use raw::types::{IoError, TlsInfo};
pub use snapshot::{BadSnapshot, SnapshotReader, SnapshotWriter};
pub use store::{Answer, Bucket, Keys, OpId, StoreOutcome, Subscription};

/// Not public API: what [`serve!`] expands to needs these from the guest's crate.
#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::Slot;
}

/// Exports a [`Handler`] as the guest's `handle`.
///
/// `serve!(Type)` creates the handler with `Type::default()`;
/// `serve!(Type, expression)` with the expression. Either way the handler is
/// created on the first `handle` call and lives as long as the guest instance. Use
/// it once per guest crate, at the top level.
///
/// ```no_run
/// use std::collections::HashMap;
/// use sandsock_sdk::{Conn, Handler, Io};
///
/// struct Counter {
///     bytes: HashMap<Conn, usize>,
///     limit: usize,
/// }
///
/// impl Handler for Counter {
///     fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
///         let seen = self.bytes.entry(conn).or_default();
///         *seen += data.len();
///         if *seen > self.limit {
///             io.close(conn);
///         }
///     }
///
///     fn on_close(&mut self, _io: &mut Io, conn: Conn) {
///         self.bytes.remove(&conn);
///     }
/// }
///
/// sandsock_sdk::serve!(Counter, Counter { bytes: HashMap::new(), limit: 1 << 20 });
/// ```
#[macro_export]
macro_rules! serve {
    ($handler:ty $(,)?) => {
        $crate::serve!($handler, <$handler as ::core::default::Default>::default());
    };
    ($handler:ty, $init:expr $(,)?) => {
        const _: () = {
            struct SandsockGuest;

            ::std::thread_local! {
                static RUNTIME: $crate::__private::Slot<$handler> =
                    const { $crate::__private::Slot::new() };
            }

            fn init() -> $handler {
                $init
            }

            impl $crate::raw::Guest for SandsockGuest {
                fn handle(events: ::std::vec::Vec<$crate::raw::Event>, input: ::std::vec::Vec<u8>) {
                    RUNTIME.with(|slot| slot.handle(init, events, input));
                }
            }

            impl $crate::raw::state::Guest for SandsockGuest {
                fn snapshot() -> ::std::vec::Vec<u8> {
                    RUNTIME.with(|slot| slot.snapshot(init))
                }

                fn restore(
                    state: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    RUNTIME.with(|slot| slot.restore(init, state))
                }
            }

    $crate::export_raw!(SandsockGuest with state);
        };
    };
}

/// Exports a type implementing [`raw::Guest`] as the guest's `handle`, for guests
/// that use the raw interface without the buffered layer.
///
/// `export_raw!(Type)` makes a component of the `handler` world: it exports
/// `handle` alone, and keeps no state across a hot swap (the connections handed
/// to it arrive as `adopted` events with nothing else). `export_raw!(Type with
/// state)` makes one of the `stateful-handler` world, which also exports `state`:
/// `Type` implements [`raw::state::Guest`] too. The type must be named by a plain
/// identifier, declared in the same crate.
///
/// ```no_run
/// struct Silent;
///
/// impl sandsock_sdk::raw::Guest for Silent {
///     fn handle(_events: Vec<sandsock_sdk::raw::Event>, _input: Vec<u8>) {}
/// }
///
/// sandsock_sdk::export_raw!(Silent);
/// ```
///
/// With state:
///
/// ```no_run
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use sandsock_sdk::raw::{self, Event, kind};
///
/// /// Connections seen by this guest and every generation before it.
/// static SEEN: AtomicU64 = AtomicU64::new(0);
///
/// struct Counter;
///
/// impl raw::Guest for Counter {
///     fn handle(events: Vec<Event>, _input: Vec<u8>) {
///         let accepted = events.iter().filter(|e| e.kind == kind::ACCEPTED);
///         SEEN.fetch_add(accepted.count() as u64, Ordering::Relaxed);
///     }
/// }
///
/// impl raw::state::Guest for Counter {
///     fn snapshot() -> Vec<u8> {
///         SEEN.load(Ordering::Relaxed).to_le_bytes().to_vec()
///     }
///
///     fn restore(state: Vec<u8>) -> Result<(), String> {
///         // Anything but 8 bytes is not ours: refuse it, and count from zero.
///         let bytes = <[u8; 8]>::try_from(state).map_err(|s| format!("{} bytes, not 8", s.len()))?;
///         SEEN.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// sandsock_sdk::export_raw!(Counter with state);
/// ```
#[macro_export]
macro_rules! export_raw {
    ($guest:ident) => {
        $crate::raw::__export_handler_world!($guest with_types_in $crate::raw);
    };
    ($guest:ident with state) => {
        $crate::raw::stateful::__export_stateful_handler_world!(
            $guest with_types_in $crate::raw::stateful
        );
    };
}
