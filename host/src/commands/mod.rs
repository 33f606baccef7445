//! What the `host` binary does, one module per command (`main.rs` dispatches to
//! them): serving, with the supervisor of its workers and its admin listener;
//! `host health`; `host new`; `host replay`. And the benchmark's native baseline, which serves
//! through exactly the same path as a guest.

pub mod admin;
pub mod health;
pub mod metrics_page;
pub mod native;
pub mod new;
pub mod replay;
pub mod serve;
pub mod supervisor;
