//! The guest side: wasmtime, and the guest instances that serve connections.
//!
//! - [`sandbox`]: what a guest is granted and held to: limits, isolation,
//!   environment.
//! - [`engine`]: the engine and the linker, set up for that sandbox.
//! - [`component`]: a guest's bytes, and the compiled guest checked against the
//!   `handler` world, known by its [`digest`]; [`cache`] keeps compiled guests on disk.
//! - [`instance`]: one instance in a store of its own, and each call's budget
//!   (epoch deadline, fuel).
//! - [`imports`]: the store's state and the host side of the world's imports (WASI
//!   granting nothing, and `io`, forwarded to the sockets side's `Net`).
//! - [`limiter`]: the memory cap and the bounds on tables and instances.
//! - [`guest_log`]: guest stdout and stderr as host log lines.
//! - [`trap`]: a trap's cause in words, and the guest's backtrace.
//! - [`tenants`]: which instance serves which owner, traps, and the crash-loop
//!   [`backoff`].

pub mod backoff;
pub mod cache;
pub mod component;
pub mod digest;
pub mod engine;
pub mod guest_log;
pub mod imports;
pub mod instance;
pub mod limiter;
pub mod sandbox;
pub mod shadow;
pub mod tenants;
pub mod trap;
