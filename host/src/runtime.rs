//! The guest runtime: the wasmtime engine and linker, loading a component and checking
//! it against the `handler` world, and running instances within the sandbox's limits.
//!
//! One `Store` per instance, because a trap poisons the whole store: recovery is a
//! fresh store and a fresh instance from the pre-instantiated component (~40 µs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tracing::{error, info, warn};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::guest_log::{GuestLog, Stream};
use crate::handler::EventHandler;
use crate::limits::{EPOCH_TICK, Limits};
use crate::net::Net;
use crate::wit::{self, Conn, Event, HandlerPre, IoError, ReadResult, WriteResult};

/// A crash-looping guest is re-instantiated no sooner than this after its first
/// failure, doubling up to [`MAX_BACKOFF`], so that it cannot make the host spin.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between two attempts to start a guest that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Two traps closer together than this count as a crash loop.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(1);
/// Instances a component may create: ours are a handful; a bound stops a component
/// built to exhaust the host with nested instances.
const MAX_INSTANCES: usize = 64;

/// The state of one guest instance's store: WASI (granting nothing) and the
/// connections lent to it for the length of a call.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
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
}

/// The engine and the linker every guest is loaded with.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
}

/// A guest's bytes and where they came from, before compilation.
pub struct GuestSource {
    /// The name it is logged under (file stem or built-in name).
    pub name: String,
    /// Where it came from, for error messages: a path, or `built-in NAME`.
    pub origin: String,
    /// The component's bytes.
    pub bytes: Vec<u8>,
}

/// A compiled guest that fits the `handler` world, ready to instantiate.
#[derive(Clone)]
pub struct Guest {
    /// Its name, for logs.
    pub name: Arc<str>,
    pre: HandlerPre<GuestState>,
    /// How long compilation and checking took.
    pub load_time: Duration,
}

impl Runtime {
    /// An engine with epoch interruption (the per-call deadline) and the linker of
    /// the `handler` world plus WASI that grants nothing.
    pub fn new() -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Component-model concurrency is not used by the handler world, and leaving it
        // on more than doubles the cost of each call into the guest.
        config.concurrency_support(false);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot set up the wasm engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        wit::Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;

        start_epoch_ticker(&engine);
        Ok(Self { engine, linker })
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
        let pre = HandlerPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{origin}: does not fit the `{}` world", wit::WORLD))?;
        Ok(Guest {
            name: source.name.as_str().into(),
            pre,
            load_time: started.elapsed(),
        })
    }

    /// Starts a fresh instance of `guest` in a store of its own.
    fn instantiate(&self, guest: &Guest, limits: &Limits) -> Result<Instance> {
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestLog::new(guest.name.clone(), Stream::Stdout))
            .stderr(GuestLog::new(guest.name.clone(), Stream::Stderr))
            .build();
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.max_memory)
                .instances(MAX_INSTANCES)
                .build(),
            net: Net::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation runs guest code too (its start functions): same deadline.
        store.set_epoch_deadline(deadline_ticks(limits));
        let bindings = guest
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)?;
        Ok(Instance { store, bindings })
    }
}

/// The epoch advances on a thread of its own; a guest call past its deadline traps
/// with `Trap::Interrupt`. The thread lives as long as the process.
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

/// A live instance and its store.
struct Instance {
    store: Store<GuestState>,
    bindings: wit::Handler,
}

/// An [`EventHandler`] that runs a wasm guest: one instance shared by all
/// connections, replaced by a fresh one when it traps.
pub struct WasmHandler {
    runtime: Arc<Runtime>,
    guest: Guest,
    limits: Limits,
    instance: Option<Instance>,
    /// When a failed guest may be started again, and the wait after that.
    retry_at: Instant,
    backoff: Duration,
    /// When it last trapped: a trap soon after another means a crash loop.
    last_trap: Option<Instant>,
    /// Traps so far, for the logs.
    traps: u64,
}

impl WasmHandler {
    /// Starts the first instance of `guest`. An instance that fails to start is an
    /// error here, at start-up, where the user can fix it.
    pub fn new(runtime: Arc<Runtime>, guest: Guest, limits: Limits) -> Result<Self> {
        let instance = runtime
            .instantiate(&guest, &limits)
            .with_context(|| format!("guest `{}` failed to start", guest.name))?;
        Ok(Self {
            runtime,
            guest,
            limits,
            instance: Some(instance),
            retry_at: Instant::now(),
            backoff: FIRST_BACKOFF,
            last_trap: None,
            traps: 0,
        })
    }

    /// Gets a live instance, starting a fresh one if the last one trapped and its
    /// back-off has passed.
    fn live(&mut self) -> Option<&mut Instance> {
        if self.instance.is_none() && Instant::now() >= self.retry_at {
            match self.runtime.instantiate(&self.guest, &self.limits) {
                Ok(instance) => {
                    info!(guest = &*self.guest.name, "fresh guest instance started");
                    self.instance = Some(instance);
                }
                Err(err) => {
                    self.back_off();
                    error!(
                        guest = &*self.guest.name,
                        retry_in = ?self.backoff,
                        "guest failed to start: {}",
                        describe(&err)
                    );
                }
            }
        }
        self.instance.as_mut()
    }

    /// Delays the next start by the current back-off, and doubles it.
    fn back_off(&mut self) {
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Cuts off a trapped instance: logs the cause and backtrace, closes the
    /// connections it owned, and lets the next batch start a fresh one.
    fn on_trap(&mut self, err: anyhow::Error, net: &mut Net) {
        self.traps += 1;
        self.instance = None;
        let closed = net.close_owned_by(0);
        net.clear_timers();
        error!(
            guest = &*self.guest.name,
            cause = %describe(&err),
            traps = self.traps,
            closed,
            "guest trapped; its connections are closed and a fresh instance takes over\n{err:?}"
        );
        // A guest that traps again soon after the last trap is in a crash loop: make
        // it wait, longer each time. An isolated trap is recovered from at once.
        let now = Instant::now();
        let looping = self
            .last_trap
            .is_some_and(|at| now - at < CRASH_LOOP_WINDOW);
        self.last_trap = Some(now);
        if looping {
            self.back_off();
        } else {
            self.backoff = FIRST_BACKOFF;
        }
    }
}

impl EventHandler for WasmHandler {
    fn handle(&mut self, batch: &[Event], net: &mut Net) {
        let deadline = deadline_ticks(&self.limits);
        let Some(instance) = self.live() else {
            refuse_new(batch, net);
            return;
        };
        instance.store.set_epoch_deadline(deadline);
        std::mem::swap(net, &mut instance.store.data_mut().net);
        let result = instance.bindings.call_handle(&mut instance.store, batch);
        std::mem::swap(net, &mut instance.store.data_mut().net);
        if let Err(err) = result {
            self.on_trap(err.into(), net);
        }
    }
}

/// While no instance runs, new connections are closed at once: the listener keeps
/// draining its queue and clients learn quickly.
fn refuse_new(batch: &[Event], net: &mut Net) {
    let mut refused = 0;
    for event in batch {
        if let Event::Accepted(conn) = event {
            let _ = net.close(*conn);
            refused += 1;
        }
    }
    if refused > 0 {
        warn!(
            refused,
            "no guest instance is running; closed new connections"
        );
    }
}

/// A trap's cause in words; wasmtime's own text for a trap is only "error while
/// executing at wasm backtrace".
pub fn describe(err: &anyhow::Error) -> String {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "timeout: the call ran past --event-timeout".into(),
        Some(Trap::StackOverflow) => "stack overflow".into(),
        Some(Trap::UnreachableCodeReached) => {
            "unreachable executed (a panic or abort in the guest; out of memory ends this way too)"
                .into()
        }
        Some(Trap::MemoryOutOfBounds) => "out-of-bounds memory access".into(),
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    }
}

/// Loads `source` and reports whether it fits, for `host check`.
pub fn check(source: &GuestSource) -> Result<String> {
    let runtime = Runtime::new()?;
    let guest = runtime.load(source)?;
    Ok(format!(
        "ok: {} fits the `{}` world ({} bytes, compiled in {:.0?})",
        source.origin,
        wit::WORLD,
        source.bytes.len(),
        guest.load_time
    ))
}
