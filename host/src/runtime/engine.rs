//! [`Runtime`]: the wasmtime engines and linkers every guest is loaded with.
//!
//! Guests are compiled by Cranelift, the optimizing compiler. A new guest at a hot
//! swap can first be compiled by Winch, wasmtime's baseline compiler, which compiles
//! about three times faster (35 ms against 110 ms for the http example) into code
//! that runs nearly as fast for a guest whose time goes to host calls, and slower
//! for one that computes; the loader then swaps to the Cranelift code by itself (a
//! tier-up).

use std::path::Path;

use anyhow::{Context, Result};
use tracing::{info, warn};
use wasmtime::component::Linker;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy,
};

use super::cache::Cache;
use super::component::{self, Guest, GuestSource};
use super::contracts;
use super::environment::{Environment, Journal};
use super::imports::GuestState;
use super::instance::Instance;
use super::sandbox::{Isolation, Sandbox};
use crate::shared::limits::{EPOCH_TICK, Limits};

/// Core instances and memories per component instance in the pooling allocator: a
/// Rust wasip2 guest uses a few of each.
const POOL_CORE_INSTANCES_PER_GUEST: u32 = 16;
const POOL_MEMORIES_PER_GUEST: u32 = 2;
const POOL_TABLES_PER_GUEST: u32 = 4;
/// The dirtied bytes of a freed memory or table slot reset in place rather than
/// given back to the kernel (see [`pooling`]).
const KEEP_RESIDENT: usize = 64 << 10;

/// An engine and the linker of the `handler` world for it.
struct Compiler {
    engine: Engine,
    linker: Linker<GuestState>,
}

/// The engines and linkers every guest is loaded with.
pub struct Runtime {
    /// Cranelift: every guest's code in the end.
    optimizing: Compiler,
    /// Winch, for new code at a swap, until the optimizing compiler is done; `None`
    /// with `--no-tier-up`, or where Winch does not run.
    baseline: Option<Compiler>,
    sandbox: Sandbox,
    /// Compiled components from earlier runs and swaps; `None` with `--no-cache`, or
    /// when the directory cannot be trusted.
    cache: Option<Cache>,
}

impl Runtime {
    /// Engines with epoch interruption (the per-call deadline), fuel if asked for,
    /// the pooling allocator when every connection gets an instance, and linkers of
    /// the `handler` world plus WASI that grants nothing. With `tier_up`, a baseline
    /// engine too (Winch), for [`load_quickly`](Self::load_quickly). Compiled
    /// components are kept in `cache_dir` (none when `None`); a directory that cannot
    /// be made or trusted is one log line, and the host compiles every guest.
    pub fn new(sandbox: Sandbox, cache_dir: Option<&Path>, tier_up: bool) -> Result<Self> {
        let optimizing = Compiler::new(&sandbox, Strategy::Cranelift)
            .context("cannot set up the wasm engine")?;
        let baseline = if tier_up {
            match Compiler::new(&sandbox, Strategy::Winch) {
                Ok(compiler) => Some(compiler),
                Err(err) => {
                    warn!(
                        "no baseline compiler, so no tier-up: new code at a swap waits for Cranelift: {err:#}"
                    );
                    None
                }
            }
        } else {
            None
        };

        let cache = cache_dir.and_then(|dir| match Cache::open(dir, &optimizing.engine) {
            Ok(cache) => {
                info!(dir = %cache.dir().display(), "compiled-component cache");
                Some(cache)
            }
            Err(err) => {
                warn!("compiled-component cache off: {err:#}");
                None
            }
        });

        let engines = std::iter::once(&optimizing)
            .chain(&baseline)
            .map(|c| &c.engine);
        start_epoch_ticker(engines);
        Ok(Self {
            optimizing,
            baseline,
            sandbox,
            cache,
        })
    }

    /// The sandbox every instance runs in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Compiles `source` with the optimizing compiler (or takes its code from the
    /// cache) and checks that it fits the `handler` world. Errors name the origin and
    /// what is wrong, in one line.
    pub fn load(&self, source: &GuestSource) -> Result<Guest> {
        let optimizing = &self.optimizing;
        component::compile(
            &optimizing.engine,
            &optimizing.linker,
            source,
            self.cache.as_ref(),
            true,
        )
    }

    /// Like [`load`](Self::load), but when the optimized code is not in the cache and
    /// a baseline compiler is there, compiles with that instead: the result serves
    /// sooner, and [`Guest::optimized`] says a tier-up is due.
    pub fn load_quickly(&self, source: &GuestSource) -> Result<Guest> {
        let Some(baseline) = &self.baseline else {
            return self.load(source);
        };
        if let Some(cache) = &self.cache
            && cache.holds(&source.digest())
        {
            return self.load(source);
        }
        component::compile(&baseline.engine, &baseline.linker, source, None, false)
    }

    /// Starts a fresh instance of `guest` in a store of its own: its clocks and
    /// random bytes noted for its tape under `--record`.
    pub fn instantiate(&self, guest: &Guest) -> Result<Instance> {
        let environment = match self.sandbox.record {
            true => Environment::Recorded(Journal::default()),
            false => Environment::System,
        };
        Instance::start(&self.sandbox, guest, environment)
    }

    /// Starts a fresh instance of `guest` whose clocks and random bytes come from
    /// `environment` (a replay's tape).
    pub fn instantiate_in(&self, guest: &Guest, environment: Environment) -> Result<Instance> {
        Instance::start(&self.sandbox, guest, environment)
    }
}

/// Compiles `source` and reports whether it fits, for `host check` (which always
/// compiles: it is a check of the file, not a start).
pub fn check(source: &GuestSource) -> Result<String> {
    let runtime = Runtime::new(Sandbox::default(), None, false)?;
    let guest = runtime.load(source)?;
    let how = if guest.contract.is_native() {
        "natively"
    } else {
        "through the adapter for its version"
    };
    Ok(format!(
        "ok: {} fits the `{}` world, served {how} ({} bytes, compiled in {:.0?})",
        source.origin,
        guest.contract.world(),
        source.bytes.len(),
        guest.load_time
    ))
}

/// Linear memories that may each reserve wasmtime's default 4 GiB of address space
/// (which spares compiled code the bounds checks): 8,192 of them take 32 TiB of the
/// 128 TiB a process has on x86-64, leaving room for a second engine and the rest.
/// Past that (about 4,000 connections with an instance each) each memory reserves
/// only its cap.
const MAX_FULL_RESERVATIONS: u64 = 8_192;

/// The guard after a linear memory when only the cap is reserved: the compiler checks
/// bounds then, so the guard only catches what its checks would too.
const SMALL_GUARD: u64 = 64 << 10;

/// Instances the pool holds: one per connection, and a few for starts and swaps.
fn pool_guests(limits: &Limits) -> u32 {
    u32::try_from(limits.max_connections)
        .unwrap_or(u32::MAX)
        .saturating_add(16)
}

/// Sizes the pooling allocator for an instance per connection.
fn pooling(limits: &Limits) -> PoolingAllocationConfig {
    let guests = pool_guests(limits);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(guests)
        .total_core_instances(guests.saturating_mul(POOL_CORE_INSTANCES_PER_GUEST))
        .total_memories(guests.saturating_mul(POOL_MEMORIES_PER_GUEST))
        .total_tables(guests.saturating_mul(POOL_TABLES_PER_GUEST))
        .max_memory_size(limits.max_memory);
    // A connection's instance gives its memory slot back dirty. By default each
    // slot is reset with `madvise`, and the next instance in it takes a page fault
    // for every page it touches again. Instead, the pages it dirtied are found
    // (PAGEMAP_SCAN, Linux 6.7 and later) and reset in place, up to 64 KiB of them,
    // and stay resident: with a connection per request that cost 0.74x the CPU
    // (where the ioctl is missing, the low 64 KiB are reset in place: 0.87x).
    // Isolation is the same: the slot holds its original contents again.
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);
    pool
}

impl Compiler {
    /// An engine of the sandbox's configuration compiling with `strategy`, and its
    /// linker.
    fn new(sandbox: &Sandbox, strategy: Strategy) -> Result<Self> {
        let mut config = Config::new();
        config.strategy(strategy);
        config.epoch_interruption(true);
        // Component-model concurrency is not used by the handler world, and leaving it
        // on more than doubles the cost of each call into the guest.
        config.concurrency_support(false);
        config.consume_fuel(sandbox.limits.fuel.is_some());
        if sandbox.isolation == Isolation::Connection {
            let pool = pooling(&sandbox.limits);
            if pool_guests(&sandbox.limits) as u64 * POOL_MEMORIES_PER_GUEST as u64
                > MAX_FULL_RESERVATIONS
            {
                // Too many memories for 4 GiB of address space each: reserve only the
                // cap, and let the compiler check bounds explicitly instead.
                config.memory_reservation(sandbox.limits.max_memory as u64);
                config.memory_guard_size(SMALL_GUARD);
            }
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        contracts::add_to_linker(&mut linker)?;
        Ok(Self { engine, linker })
    }
}

/// The epochs advance on a thread of their own; a guest call past its deadline traps
/// with `Trap::Interrupt`. The thread ends with the engines.
fn start_epoch_ticker<'a>(engines: impl Iterator<Item = &'a Engine>) {
    let engines: Vec<_> = engines.map(Engine::weak).collect();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            loop {
                let mut alive = false;
                for engine in &engines {
                    if let Some(engine) = engine.upgrade() {
                        engine.increment_epoch();
                        alive = true;
                    }
                }
                if !alive {
                    return;
                }
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
