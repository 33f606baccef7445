//! The guest side: wasmtime, compiled guests and their instances. Which instance
//! serves which connection, and which generation of the guest serves at all, is
//! `swap`'s business: nothing here knows of generations.
//!
//! - [`sandbox`]: what a guest is granted and held to: limits, isolation,
//!   environment.
//! - [`engine`]: the engine and the linker, set up for that sandbox.
//! - [`component`]: a guest's bytes, and the compiled guest checked against the
//!   `handler` world, known by its [`digest`]; [`cache`] keeps compiled guests on disk.
//! - [`contracts`]: every released version of the contract, the older ones adapted
//!   to today's internals in that one place.
//! - [`instance`]: one instance in a store of its own, and each call's budget
//!   (epoch deadline, fuel).
//! - [`imports`]: the store's state and the host side of the world's imports (WASI
//!   granting nothing, and `io`, forwarded to the sockets side's `Net`).
//! - [`store_session`]: one instance's use of the host-held store and topics
//!   (contract 1.1), and [`store_imports`] the host side of their imports.
//! - [`limiter`]: the memory cap and the bounds on tables and instances.
//! - [`guest_log`]: guest stdout and stderr as host log lines.
//! - [`trap`]: a trap's cause in words, and the guest's backtrace.
//! - [`builtin`]: the guests built into the binary, and how `--guest` finds one.
//! - [`backoff`]: the crash-loop back-off of an instance that keeps trapping.
//! - [`shadow`]: the io a canary's shadow instance sees instead of the sockets, and
//!   [`shadow_store`] the store it sees instead of the real one.
//! - [`environment`]: the clocks and random bytes an instance sees: the system's,
//!   noted for `--record`, or a tape's; [`replay`] runs a tape's instance again on
//!   any guest, offline, with a shadow's io.

pub mod backoff;
pub mod builtin;
pub mod cache;
pub mod component;
pub mod contracts;
pub mod digest;
pub mod engine;
pub mod environment;
pub mod guest_log;
pub mod imports;
pub mod instance;
pub mod limiter;
pub mod replay;
pub mod sandbox;
pub mod shadow;
pub mod shadow_store;
pub mod store_imports;
pub mod store_session;
pub mod trap;
