//! sandsock: a native host that owns the sockets and an epoll loop, and runs the
//! request-handling logic as a sandboxed WebAssembly component.
//!
//! The code is in three wings, the commands that use them, and the leaves they all
//! share; `ARCHITECTURE.md` at the top of the repository is the map, with where each
//! kind of new feature goes.
//!
//! - [`sockets`]: the event loop, connections, readiness, timers, and the guest's
//!   `io` calls as [`sockets::Net`] answers them. It implements the io contract, with
//!   the contract's types, and knows nothing of wasmtime or instances.
//! - [`runtime`]: the guest side: wasmtime's engine and linker, components (the
//!   guests built in among them), instances and their limits, traps, guest output.
//!   Knows nothing of generations.
//! - [`swap`]: which generation of the guest serves which connection: the guest as
//!   the loop's handler ([`swap::WasmHandler`]), the generations and their
//!   instances, drain and handoff, recycling, the canary, the triggers and the
//!   loader thread.
//! - [`store`]: the state the host keeps for guests (contract 1.1's `store` and
//!   `topics`): namespaces and limits, the memory and SQLite backends, topics, and
//!   each worker's inbox of answers. Knows nothing of wasmtime or sockets.
//! - [`record`]: what `--record` and `host replay` share: the tape format, the
//!   writer thread and its directory, and how two outputs compare.
//! - [`upgrade`]: replacing the host binary while it serves (the listening sockets
//!   and the memory store handed to a new process over a socket pair), and
//!   systemd's socket activation. Knows the sockets wing's listeners and loop
//!   remotes and the store, nothing of guests.
//! - [`commands`]: what the `host` binary does: serving (with its supervisor, its
//!   admin listener, and the benchmark's native baseline), `host health`, `host new`.
//!   [`cli`] is the command line they are parsed from.
//! - [`shared`]: the leaves every part uses: the contract's bindings, limits, units,
//!   metrics, rate-limited log lines.
//!
//! Arrows go one way: commands → swap → runtime → sockets → shared, runtime →
//! record → store → shared, and commands → upgrade → sockets, store. The load client
//! (`host load`) is a crate of its own, `sandsock-load`, in `host/load/`.
#![deny(missing_docs)]

pub mod cli;
pub mod commands;
pub mod record;
pub mod runtime;
pub mod shared;
pub mod sockets;
pub mod store;
pub mod swap;
pub mod upgrade;
