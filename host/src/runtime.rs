//! The guest runtime: the wasmtime engine and linker, loading a component and checking
//! it against the `handler` world, and starting instances within the sandbox's limits.
//!
//! One `Store` per instance, because a trap poisons the whole store: recovery is a
//! fresh store and a fresh instance from the pre-instantiated component (~40 µs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::{
    Component, ComponentExportIndex, HasSelf, InstancePre, Linker, ResourceTable, TypedFunc,
};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, WasmBacktrace,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::connection::Owner;
use crate::guest_log::{GuestLog, Stream};
use crate::limits::{EPOCH_TICK, Limits};
use crate::net::Net;
use crate::wit::{self, Conn, Event, HandlerIndices, IoError, ReadResult, WriteResult};

/// Instances a component may create: ours are a handful; a bound stops a component
/// built to exhaust the host with nested instances.
const MAX_INSTANCES: usize = 64;
/// Tables (and their elements) per store: a guest cannot make the host allocate
/// without bound through `table.grow`.
const MAX_TABLES: usize = 64;
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Core instances and memories per component instance in the pooling allocator: a
/// Rust wasip2 guest uses a few of each.
const POOL_CORE_INSTANCES_PER_GUEST: u32 = 16;
const POOL_MEMORIES_PER_GUEST: u32 = 2;
const POOL_TABLES_PER_GUEST: u32 = 4;

/// How guest instances map to connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// One instance serves every connection; state lives across connections, and a
    /// trap closes them all.
    Shared,
    /// An instance per connection (pooled); a trap closes only that connection.
    Connection,
}

/// Everything a guest is granted and held to.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// Time, memory, connection, buffer, timer and fuel limits.
    pub limits: Limits,
    /// How instances map to connections.
    pub isolation: Isolation,
    /// The only environment the guest sees (`--env`).
    pub env: Vec<(String, String)>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            isolation: Isolation::Shared,
            env: Vec::new(),
        }
    }
}

/// Holds a store to its memory cap, and remembers when it refused a growth, so that
/// the trap that usually follows can be named "out of memory".
struct Limiter {
    max_memory: usize,
    memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory;
        self.memory_refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}

/// The state of one guest instance's store: WASI (granting nothing but the given
/// environment) and the connections lent to it for the length of a call.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    /// The loop's connections while a call runs; an empty table otherwise.
    pub(crate) net: Net,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::sandsock::net::io::Host for GuestState {
    fn read(&mut self, c: Conn, max: u32) -> ReadResult {
        self.net.read(c, max)
    }

    fn write(&mut self, c: Conn, data: Vec<u8>) -> WriteResult {
        self.net.write(c, &data)
    }

    fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
        self.net.set_interest(c, readable, writable)
    }

    fn shutdown_write(&mut self, c: Conn) -> Result<(), IoError> {
        self.net.shutdown_write(c)
    }

    fn close(&mut self, c: Conn) -> Result<(), IoError> {
        self.net.close(c)
    }

    fn peer(&mut self, c: Conn) -> Option<String> {
        self.net.peer(c)
    }

    fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), IoError> {
        self.net.set_timer(id, after_ms)
    }

    fn cancel_timer(&mut self, id: u64) {
        self.net.cancel_timer(id)
    }

    fn connect(&mut self, addr: String) -> Result<Conn, IoError> {
        self.net.connect(&addr)
    }
}

/// The engine and the linker every guest is loaded with.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    sandbox: Sandbox,
}

/// A guest's bytes and where they came from, before compilation.
pub struct GuestSource {
    /// The name it is logged under (file stem or built-in name).
    pub name: String,
    /// Where it came from, for error messages: a path, or `built-in NAME`.
    pub origin: String,
    /// Its file, if it has one (built-in guests do not): what a reload reads.
    pub path: Option<std::path::PathBuf>,
    /// The component's bytes.
    pub bytes: Vec<u8>,
}

/// A compiled guest that fits the `handler` world, ready to instantiate.
#[derive(Clone)]
pub struct Guest {
    /// Its name, for logs.
    pub name: Arc<str>,
    /// The SHA-256 of its bytes: what a reload compares, and what logs show.
    pub digest: [u8; 32],
    pre: InstancePre<GuestState>,
    indices: HandlerIndices,
    /// Where its optional `state` interface lives, if it exports one.
    state: Option<StateExports>,
    /// How long compilation and checking took.
    pub load_time: Duration,
}

impl Guest {
    /// The first 12 hex digits of its digest, for logs.
    pub fn short_digest(&self) -> String {
        short_digest(&self.digest)
    }

    /// Whether it exports the `state` interface (snapshot and restore).
    pub fn keeps_state(&self) -> bool {
        self.state.is_some()
    }
}

/// The first 12 hex digits of a SHA-256, for logs.
pub fn short_digest(digest: &[u8; 32]) -> String {
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The export indices of the optional `state` interface.
#[derive(Clone, Copy)]
struct StateExports {
    snapshot: ComponentExportIndex,
    restore: ComponentExportIndex,
}

/// The name the optional `state` interface is exported under.
const STATE_INTERFACE: &str = "sandsock:net/state@0.1.0";

/// A live instance and its store.
pub struct Instance {
    store: Store<GuestState>,
    bindings: wit::Handler,
    state: Option<(StateSnapshot, StateRestore)>,
    budget: Budget,
}

type StateSnapshot = TypedFunc<(), (Vec<u8>,)>;
type StateRestore = TypedFunc<(Vec<u8>,), ()>;

impl Runtime {
    /// An engine with epoch interruption (the per-call deadline), fuel if asked for,
    /// the pooling allocator when every connection gets an instance, and the linker
    /// of the `handler` world plus WASI that grants nothing.
    pub fn new(sandbox: Sandbox) -> Result<Self> {
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

        start_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker,
            sandbox,
        })
    }

    /// The sandbox every instance runs in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Compiles `source` and checks that it fits the `handler` world. Errors name
    /// the origin and what is wrong, in one line.
    pub fn load(&self, source: &GuestSource) -> Result<Guest> {
        let started = Instant::now();
        let origin = &source.origin;
        check_header(&source.bytes).with_context(|| origin.clone())?;
        let component = Component::new(&self.engine, &source.bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{origin}: not a valid component"))?;

        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        if !exports.iter().any(|name| name == "handle") {
            bail!(
                "{origin}: does not fit the `{}` world: it does not export `handle` (it exports: {})",
                wit::WORLD,
                list_or_none(&exports)
            );
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{origin}: does not fit the `{}` world", wit::WORLD))?;
        let indices = HandlerIndices::new(&pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{origin}: does not fit the `{}` world", wit::WORLD))?;
        let state = component
            .get_export_index(None, STATE_INTERFACE)
            .and_then(|interface| {
                Some(StateExports {
                    snapshot: component.get_export_index(Some(&interface), "snapshot")?,
                    restore: component.get_export_index(Some(&interface), "restore")?,
                })
            });
        Ok(Guest {
            name: source.name.as_str().into(),
            digest: Sha256::digest(&source.bytes).into(),
            pre,
            indices,
            state,
            load_time: started.elapsed(),
        })
    }

    /// Starts a fresh instance of `guest` in a store of its own.
    pub fn instantiate(&self, guest: &Guest) -> Result<Instance> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestLog::new(guest.name.clone(), Stream::Stdout))
            .stderr(GuestLog::new(guest.name.clone(), Stream::Stderr));
        for (key, value) in &self.sandbox.env {
            wasi.env(key, value);
        }
        let state = GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory: self.sandbox.limits.max_memory,
                memory_refused: false,
            },
            net: Net::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Instantiation runs guest code too (its start functions): same budget.
        let budget = Budget::new(&self.sandbox.limits);
        budget.arm(&mut store)?;
        let instance = guest
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)?;
        let bindings = guest
            .indices
            .load(&mut store, &instance)
            .map_err(anyhow::Error::from)?;
        let state = match guest.state {
            Some(exports) => Some((
                instance
                    .get_typed_func(&mut store, exports.snapshot)
                    .map_err(anyhow::Error::from)
                    .context("the `state` interface's snapshot has the wrong type")?,
                instance
                    .get_typed_func(&mut store, exports.restore)
                    .map_err(anyhow::Error::from)
                    .context("the `state` interface's restore has the wrong type")?,
            )),
            None => None,
        };
        Ok(Instance {
            store,
            bindings,
            state,
            budget,
        })
    }
}

impl Instance {
    /// Calls `handle` with `events` on behalf of guest instance `owner`, lending it
    /// `net` for the call. An error is a trap: the instance is unusable afterwards.
    pub fn call(&mut self, events: &[Event], net: &mut Net, owner: Owner) -> Result<()> {
        self.budget.arm(&mut self.store)?;
        net.set_caller(owner);
        std::mem::swap(net, &mut self.store.data_mut().net);
        let result = self.bindings.call_handle(&mut self.store, events);
        std::mem::swap(net, &mut self.store.data_mut().net);
        result.map_err(anyhow::Error::from)
    }

    /// The instance's `snapshot`, or `None` when it does not export `state`.
    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        let Some((snapshot, _)) = self.state else {
            return Ok(None);
        };
        self.budget.arm(&mut self.store)?;
        let (state,) = snapshot
            .call(&mut self.store, ())
            .map_err(anyhow::Error::from)?;
        Ok(Some(state))
    }

    /// Hands an earlier generation's snapshot to this instance's `restore`; nothing
    /// happens when it does not export `state`.
    pub fn restore(&mut self, state: Vec<u8>) -> Result<()> {
        let Some((_, restore)) = self.state else {
            return Ok(());
        };
        self.budget.arm(&mut self.store)?;
        restore
            .call(&mut self.store, (state,))
            .map_err(anyhow::Error::from)
    }

    /// Whether the store refused a memory growth (for naming a trap's cause).
    pub fn memory_refused(&self) -> bool {
        self.store.data().limiter.memory_refused
    }
}

/// What one stretch of guest code may use, worked out once per instance.
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// The epoch deadline, in ticks from now.
    ticks: u64,
    fuel: Option<u64>,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        Self {
            ticks: deadline_ticks(limits),
            fuel: limits.fuel,
        }
    }

    /// Gives a store its budget for the next call: the epoch deadline, and fuel when
    /// a fuel limit is set.
    fn arm(self, store: &mut Store<GuestState>) -> Result<()> {
        store.set_epoch_deadline(self.ticks);
        if let Some(fuel) = self.fuel {
            store.set_fuel(fuel).map_err(anyhow::Error::from)?;
        }
        Ok(())
    }
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

fn deadline_ticks(limits: &Limits) -> u64 {
    (limits.event_timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}

/// Tells apart the inputs that are not components at all, with a hint for each.
fn check_header(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("not a WebAssembly file (no `\\0asm` header)");
    }
    // The version field tells a core module (1) from a component (0x0d, layer 1).
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "a core WebAssembly module, not a component (build the guest for the \
             wasm32-wasip2 target, which produces a component)"
        );
    }
    Ok(())
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

/// A trap's cause in words; wasmtime's own text for a trap is only "error while
/// executing at wasm backtrace". `memory_refused` says the store denied a growth
/// before it: a guest that aborts on a failed allocation is out of memory.
pub fn describe(err: &anyhow::Error, memory_refused: bool) -> String {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "timeout: the call ran past --event-timeout".into(),
        Some(Trap::OutOfFuel) => "out of fuel: the call used up its --fuel".into(),
        Some(Trap::StackOverflow) => "stack overflow".into(),
        Some(Trap::UnreachableCodeReached) if memory_refused => {
            "out of memory: a growth past --max-memory was refused and the guest aborted".into()
        }
        Some(Trap::UnreachableCodeReached) => {
            "unreachable executed (a panic or an abort in the guest)".into()
        }
        Some(Trap::MemoryOutOfBounds) => "out-of-bounds memory access".into(),
        Some(trap) => trap.to_string(),
        None if memory_refused => format!("out of memory: {err:#}"),
        None => format!("{err:#}"),
    }
}

/// Frames of a trap's backtrace shown in the log; a stack overflow has thousands.
const BACKTRACE_FRAMES: usize = 12;

/// The guest's backtrace of a trap, innermost frame first, at most
/// [`BACKTRACE_FRAMES`] of them.
pub fn backtrace(err: &anyhow::Error) -> String {
    let Some(trace) = err.downcast_ref::<WasmBacktrace>() else {
        return format!("{err:?}");
    };
    let frames = trace.frames();
    let mut text = String::from("guest backtrace:");
    for (i, frame) in frames.iter().take(BACKTRACE_FRAMES).enumerate() {
        match frame.func_name() {
            Some(name) => {
                text.push_str(&format!("\n  {i:>2}: {:#}", rustc_demangle::demangle(name)))
            }
            None => text.push_str(&format!("\n  {i:>2}: <unnamed>")),
        }
    }
    if frames.len() > BACKTRACE_FRAMES {
        text.push_str(&format!(
            "\n  ... {} more frames",
            frames.len() - BACKTRACE_FRAMES
        ));
    }
    text
}

/// Loads `source` and reports whether it fits, for `host check`.
pub fn check(source: &GuestSource) -> Result<String> {
    let runtime = Runtime::new(Sandbox::default())?;
    let guest = runtime.load(source)?;
    Ok(format!(
        "ok: {} fits the `{}` world ({} bytes, compiled in {:.0?})",
        source.origin,
        wit::WORLD,
        source.bytes.len(),
        guest.load_time
    ))
}
