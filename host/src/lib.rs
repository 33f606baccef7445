//! sandsock: a native host that owns the sockets and an epoll loop, and runs the
//! request-handling logic as a sandboxed WebAssembly component.
//!
//! Layers, from the wire up:
//! - [`write_buffer`], [`connection`], [`conn_table`]: one socket's state, and the
//!   table that maps mio tokens and guest handles to connections.
//! - [`net`]: the guest's `io` interface, and level-triggered readiness on top of
//!   mio's edges; [`timers`] for guest timers.
//! - [`event_loop`]: poll, accept, one guest call per batch.
//! - [`runtime`]: wasmtime engine, linker, limits, instances; [`wasm_handler`]: the
//!   guest as the loop's handler, isolation and traps; [`guest_log`] turns guest
//!   output into log lines; [`allow`] says where a guest may connect.
//! - [`serve`], [`examples`], [`load`], [`cli`]: what the binary does.
#![deny(missing_docs)]

pub mod allow;
pub mod cli;
pub mod conn_table;
pub mod connection;
pub mod event_loop;
pub mod examples;
pub mod guest_log;
pub mod handler;
pub mod limits;
pub mod load;
pub mod native;
pub mod net;
pub mod rate_limit;
pub mod runtime;
pub mod serve;
pub mod swap;
pub mod timers;
pub mod units;
pub mod wasm_handler;
pub mod wit;
pub mod write_buffer;
