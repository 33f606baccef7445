//! [`Runtime`]: the wasmtime engine and linker every guest is loaded with.

use std::path::Path;

use anyhow::{Context, Result};
use tracing::{info, warn};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::Cache;
use super::component::{self, Guest, GuestSource};
use super::imports::GuestState;
use super::instance::Instance;
use super::sandbox::{Isolation, Sandbox};
use crate::limits::{EPOCH_TICK, Limits};
use crate::wit;

/// Core instances and memories per component instance in the pooling allocator: a
/// Rust wasip2 guest uses a few of each.
const POOL_CORE_INSTANCES_PER_GUEST: u32 = 16;
const POOL_MEMORIES_PER_GUEST: u32 = 2;
const POOL_TABLES_PER_GUEST: u32 = 4;

/// The engine and the linker every guest is loaded with.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    sandbox: Sandbox,
    /// Compiled components from earlier runs and swaps; `None` with `--no-cache`, or
    /// when the directory cannot be trusted.
    cache: Option<Cache>,
}

impl Runtime {
    /// An engine with epoch interruption (the per-call deadline), fuel if asked for,
    /// the pooling allocator when every connection gets an instance, and the linker
    /// of the `handler` world plus WASI that grants nothing. Compiled components are
    /// kept in `cache_dir` (none when `None`); a directory that cannot be made or
    /// trusted is one log line, and the host compiles every guest.
    pub fn new(sandbox: Sandbox, cache_dir: Option<&Path>) -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Component-model concurrency is not used by the handler world, and leaving it
        // on more than doubles the cost of each call into the guest.
        config.concurrency_support(false);
        config.consume_fuel(sandbox.limits.fuel.is_some());
        if sandbox.isolation == Isolation::Connection {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(
                &sandbox.limits,
            )));
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot set up the wasm engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        wit::Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;

        let cache = cache_dir.and_then(|dir| match Cache::open(dir, &engine) {
            Ok(cache) => {
                info!(dir = %cache.dir().display(), "compiled-component cache");
                Some(cache)
            }
            Err(err) => {
                warn!("compiled-component cache off: {err:#}");
                None
            }
        });

        start_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker,
            sandbox,
            cache,
        })
    }

    /// The sandbox every instance runs in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Compiles `source` and checks that it fits the `handler` world. Errors name
    /// the origin and what is wrong, in one line.
    pub fn load(&self, source: &GuestSource) -> Result<Guest> {
        component::compile(&self.engine, &self.linker, source, self.cache.as_ref())
    }

    /// Starts a fresh instance of `guest` in a store of its own.
    pub fn instantiate(&self, guest: &Guest) -> Result<Instance> {
        Instance::start(&self.engine, &self.sandbox, guest)
    }
}

/// Compiles `source` and reports whether it fits, for `host check` (which always
/// compiles: it is a check of the file, not a start).
pub fn check(source: &GuestSource) -> Result<String> {
    let runtime = Runtime::new(Sandbox::default(), None)?;
    let guest = runtime.load(source)?;
    Ok(format!(
        "ok: {} fits the `{}` world ({} bytes, compiled in {:.0?})",
        source.origin,
        wit::WORLD,
        source.bytes.len(),
        guest.load_time
    ))
}

/// Sizes the pooling allocator for an instance per connection.
fn pooling(limits: &Limits) -> PoolingAllocationConfig {
    let guests = u32::try_from(limits.max_connections)
        .unwrap_or(u32::MAX)
        .saturating_add(16);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(guests)
        .total_core_instances(guests.saturating_mul(POOL_CORE_INSTANCES_PER_GUEST))
        .total_memories(guests.saturating_mul(POOL_MEMORIES_PER_GUEST))
        .total_tables(guests.saturating_mul(POOL_TABLES_PER_GUEST))
        .max_memory_size(limits.max_memory);
    pool
}

/// The epoch advances on a thread of its own; a guest call past its deadline traps
/// with `Trap::Interrupt`. The thread ends with the engine.
fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
