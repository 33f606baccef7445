//! sandsock: a native host that owns the sockets and an epoll loop, and runs the
//! request-handling logic as a sandboxed WebAssembly component.
//!
//! The code is in three wings and a little glue; `ARCHITECTURE.md` at the top of the
//! repository is the map, with where each kind of new feature goes.
//!
//! - [`sockets`]: the event loop, connections, readiness, timers, and the guest's
//!   `io` calls as [`sockets::Net`] answers them. Knows nothing of wasm.
//! - [`runtime`]: the guest side: wasmtime's engine and linker, components,
//!   instances and their limits, traps, guest output. Knows nothing of generations.
//! - [`swap`]: which generation of the guest serves which connection: the guest as
//!   the loop's handler ([`swap::WasmHandler`]), the generations and their
//!   instances, drain and handoff, recycling, the canary, the triggers and the
//!   loader thread.
//! - Glue: [`cli`] (the command line), [`serve`] (what `host` does by default),
//!   [`supervisor`] (signals and workers), [`admin`] (the admin listener),
//!   [`builtin`]
//!   (the guests built in), [`native`] (the benchmark's native baseline), [`probe`]
//!   (`host health`, the admin listener's client for container health checks),
//!   [`scaffold`] (`host new`, a guest project to start from).
//! - Shared: [`wit`] (the bindings of the contract), [`limits`], [`units`],
//!   [`rate_limit`], [`metrics`] (what the admin listener reports).
//!
//! Arrows go one way: glue → swap → runtime → sockets → shared. The load client
//! (`host load`) is a crate of its own, `sandsock-load`, in `host/load/`.
#![deny(missing_docs)]

pub mod admin;
pub mod builtin;
pub mod cli;
pub mod limits;
pub mod metrics;
pub mod native;
pub mod probe;
pub mod rate_limit;
pub mod runtime;
pub mod scaffold;
pub mod serve;
pub mod sockets;
pub mod supervisor;
pub mod swap;
pub mod units;

pub mod wit;
