//! `host` serving: load the guest, bind the listeners, start one event loop per
//! worker, announce the addresses, and supervise until a shutdown completes.

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tracing::{Span, info, info_span};

use crate::cli::ServeArgs;
use crate::commands::admin::{self, Admin};
use crate::commands::native::NativeHttp;
use crate::commands::supervisor::{Duties, Supervisor, UPGRADE_LINK};
use crate::record::writer::{RecordStats, Writer};
use crate::runtime::builtin::guest_source;
use crate::runtime::engine::Runtime;
use crate::runtime::sandbox::Isolation;
use crate::shared::limits::Limits;
use crate::shared::logging::{ANNOUNCE_TARGET, LogFormat};
use crate::shared::metrics::{Published, millis};
use crate::sockets::capacity::Capacity;
use crate::sockets::event_loop::EventLoop;
use crate::sockets::handler::EventHandler;
use crate::sockets::listener::{Listener, bind_all};
use crate::sockets::ring::{self, Io};
use crate::sockets::tls::{Certificates, TlsServer};
use crate::store::{StoreConfig, StoreKind, Stores};
use crate::swap::Reloader;
use crate::swap::WasmHandler;
use crate::swap::recorder::Recorder;
use crate::upgrade::binary::Binary;
use crate::upgrade::held::HeldSockets;
use crate::upgrade::systemd;
use crate::upgrade::take_over::Carried;
use crate::upgrade::{Predecessor, UpgradeStats, Upgrader};

/// Serves until a shutdown completes; `log_format` says how the listening
/// addresses are announced. A process an upgrade started takes its sockets from the
/// old process, and tells it why if it cannot serve.
pub fn serve(args: &ServeArgs, log_format: LogFormat) -> Result<()> {
    // Before anything else: the path is the file this process runs now.
    let binary = Binary::of_this_process().map_err(|e| format!("{e:#}"));
    let (mut predecessor, handed) = match Predecessor::from_env()? {
        Some((predecessor, sockets)) => (Some(predecessor), Some(sockets)),
        None => (None, None),
    };
    let result = serve_with(args, log_format, binary, predecessor.as_mut(), handed);
    if let (Err(error), Some(predecessor)) = (&result, predecessor.as_mut()) {
        predecessor.fail(error);
    }
    result
}

fn serve_with(
    args: &ServeArgs,
    log_format: LogFormat,
    binary: Result<Binary, String>,
    mut predecessor: Option<&mut Predecessor>,
    handed: Option<HeldSockets>,
) -> Result<()> {
    if args.canary().is_some() && args.isolation == Isolation::Connection {
        bail!(
            "--swap canary works with --isolation shared only: its shadow is one instance, which with an instance per connection would share state and limits the serving instances do not"
        );
    }
    args.check_addresses().map_err(anyhow::Error::msg)?;
    if args.io == Io::Uring {
        ring::probe().map_err(|why| anyhow::anyhow!("--io uring: {why}; use --io epoll"))?;
    }
    let workers = args.workers.count();
    let limits = args.limits();
    raise_open_file_limit();
    let inherited = match handed {
        Some(sockets) => Some(sockets),
        None => systemd::activated_sockets(workers)?,
    };
    if let Some(sockets) = &inherited
        && sockets.workers.len() != workers
    {
        bail!(
            "the old process handed over the sockets of {} workers, and this one runs {workers} (--workers)",
            sockets.workers.len()
        );
    }
    let tls_needed =
        !args.listen_tls.is_empty() || inherited.as_ref().is_some_and(HeldSockets::has_tls);
    let tls = tls_server(args, tls_needed)?;
    let server = tls.as_ref().map(|(_, server)| server);
    let (listeners, admin_listener) = match inherited {
        Some(sockets) => sockets.into_listeners(server)?,
        None => (bind_listeners(args, server, workers)?, None),
    };
    let admin_listener = match (admin_listener, args.admin) {
        (Some(listener), _) => {
            let addr = listener
                .local_addr()
                .context("cannot read the admin address")?;
            admin::check_address(addr, args.admin_allow_remote)?;
            Some(listener)
        }
        (None, Some(addr)) => Some(admin::bind(addr, args.admin_allow_remote)?),
        (None, None) => None,
    };
    let token = args
        .admin_token_file
        .as_deref()
        .map(admin::read_token)
        .transpose()?;
    let held = HeldSockets::duplicate(&listeners, admin_listener.as_ref())?;
    let certificates = tls.map(|(certificates, _)| certificates);
    let settings = LoopSettings {
        limits: limits.clone(),
        args,
        capacity: Capacity::new(limits.max_connections),
    };
    let supervisor = Supervisor::new()?;
    let upgrades = supervisor.upgrade_handle().stats();
    let mut serving = Serving {
        binary,
        held,
        admin_listener,
        token,
        predecessor: None,
        carried_at: None,
    };

    match args.native.as_deref() {
        None => {}
        Some("http") => {
            let loops = listeners
                .into_iter()
                .enumerate()
                .map(|(worker, listeners)| {
                    settings.event_loop(worker, listeners, NativeHttp::default())
                })
                .collect::<Result<Vec<_>>>()?;
            if args.record.is_some() {
                bail!("--record records a guest's instances, and --native runs no guest");
            }
            let mut loops = loops;
            if let Some(predecessor) = predecessor.as_deref_mut() {
                let carried = predecessor.ready(workers)?;
                serving.took_over(&upgrades, predecessor, &carried);
                adopt(&mut loops, carried.parcels, Some(predecessor))?;
            }
            serving.predecessor = predecessor;
            let extras = Extras::default();
            return run(
                args,
                log_format,
                supervisor,
                loops,
                extras,
                serving,
                "native http",
            );
        }
        Some(other) => bail!("unknown native baseline `{other}` (known: http)"),
    }

    let source = guest_source(&args.guest)?;
    if source.path.is_none() && args.watch && certificates.is_none() {
        bail!(
            "--watch needs a guest file (or TLS certificates), not the built-in `{}`",
            args.guest
        );
    }
    let cache_dir = args.cache_dir();
    // Only a guest file is ever swapped, so only it needs the baseline compiler.
    let tier_up = source.path.is_some() && !args.no_tier_up;
    let runtime = Arc::new(Runtime::new(
        args.sandbox(limits.clone()),
        cache_dir.as_deref(),
        tier_up,
    )?);
    let guest = runtime.load(&source)?;
    info!(
        guest = &*guest.name,
        origin = %source.origin,
        took_ms = millis(guest.load_time),
        isolation = ?args.isolation,
        "guest {}",
        guest.how_loaded()
    );
    let digest = guest.digest;
    let store_config = args.store_config(&guest.name).map_err(anyhow::Error::msg)?;
    // A file or a server is opened now; a memory store once an upgrade's old process
    // has handed over what it holds (a fresh start has nothing to wait for).
    let store = match store_config.kind {
        StoreKind::Memory => StoreOpening::AfterHandover(store_config),
        _ => StoreOpening::Opened(Stores::open(store_config, workers, None)?),
    };
    let drain_timeout = args.drain_timeout.map(|d| d.0);
    let record = args.record();
    let writer = record.as_ref().map(Writer::start).transpose()?;
    if let Some(config) = &record {
        info!(
            dir = %config.dir.display(),
            sample_percent = config.sample_percent,
            max_bytes = config.max_bytes,
            "recording tapes (they hold users' traffic in clear)"
        );
    }
    let mut loops = Vec::with_capacity(workers);
    for (worker, listeners) in listeners.into_iter().enumerate() {
        let _in_worker = worker_span(worker, workers).entered();
        let handler = WasmHandler::new(
            runtime.clone(),
            guest.clone(),
            args.swap_mode(),
            drain_timeout,
            args.recycle(),
            args.canary(),
        )?;
        let mut event_loop = settings.event_loop(worker, listeners, handler)?;
        if let (Some(writer), Some(config)) = (&writer, &record) {
            let recorder = Recorder::new(writer.link(), config, worker, runtime.sandbox());
            event_loop.handler_mut().set_recorder(recorder);
        }
        loops.push(event_loop);
    }
    // A guest file (SIGHUP, and --watch: each worker gets the new one) and the TLS
    // certificate can be reloaded.
    let reloader = if source.path.is_some() || certificates.is_some() {
        let remotes: Vec<_> = loops.iter().map(EventLoop::remote).collect();
        let guest_file = source.path.as_deref().map(|path| (path, digest));
        let (reloader, inboxes) =
            Reloader::start(runtime, guest_file, certificates, args.watch, &remotes)?;
        for (event_loop, inbox) in loops.iter_mut().zip(inboxes) {
            event_loop.handler_mut().set_swap_inbox(inbox);
        }
        Some(reloader)
    } else {
        None
    };
    if args.admin.is_some() {
        for event_loop in &mut loops {
            event_loop.handler_mut().time_calls();
        }
    }
    // An upgrade's new process is ready now, everything built but the store: the
    // old process stops accepting and hands over what it holds in memory, and from
    // here to serving neither process accepts (connections queue).
    let carried = match predecessor.as_deref_mut() {
        Some(predecessor) => {
            let carried = predecessor.ready(workers)?;
            serving.took_over(&upgrades, predecessor, &carried);
            carried
        }
        None => Carried::default(),
    };
    serving.predecessor = predecessor;
    let stores = match store {
        StoreOpening::Opened(stores) => stores,
        StoreOpening::AfterHandover(config) => {
            Stores::open(config, workers, carried.store.as_deref())?
        }
    };
    info!(
        store = stores.config().kind.describe(),
        namespace = %stores.config().namespace,
        "store open"
    );
    for (worker, event_loop) in loops.iter_mut().enumerate() {
        let link = stores.link(worker);
        let remote = event_loop.remote();
        link.inbox().wake_with(move || remote.wake());
        event_loop.handler_mut().set_store(link);
    }
    // With its store, each worker's guest takes over what the old process's held.
    adopt(
        &mut loops,
        carried.parcels,
        serving.predecessor.as_deref_mut(),
    )?;
    let extras = Extras {
        reloader,
        store: Some(stores),
        record: writer.as_ref().map(|w| w.link().stats().clone()),
    };
    run(
        args,
        log_format,
        supervisor,
        loops,
        extras,
        serving,
        &source.origin,
    )?;
    // The loops have ended, and their links with them: the tapes are whole once
    // the writer has written what it was given.
    if let Some(mut writer) = writer {
        writer.finish();
    }
    Ok(())
}

/// What a serving process holds for its upgrades, and of the one it took over from.
struct Serving<'p> {
    /// The file an upgrade runs.
    binary: Result<Binary, String>,
    /// Duplicates of every listening socket, to hand over.
    held: HeldSockets,
    /// The admin listener, bound or inherited.
    admin_listener: Option<std::net::TcpListener>,
    /// `--admin-token-file`'s token.
    token: Option<String>,
    /// The old process, when an upgrade started this one: told once this one serves.
    predecessor: Option<&'p mut Predecessor>,
    /// When the old process's go came, and its milliseconds from the upgrade's
    /// start to then.
    carried_at: Option<(u64, Instant)>,
}

impl Serving<'_> {
    /// Notes what the upgrade that started this process took, for `/metrics`.
    fn took_over(&mut self, stats: &UpgradeStats, predecessor: &Predecessor, carried: &Carried) {
        stats
            .succeeded
            .store(predecessor.upgrades_before() + 1, Ordering::Relaxed);
        stats
            .ready_ms
            .store(carried.ready_ms.unwrap_or(0), Ordering::Relaxed);
        let taken: usize = carried.parcels.iter().map(|(p, _)| p.conns.len()).sum();
        stats.taken.store(taken as u64, Ordering::Relaxed);
        self.carried_at = carried
            .at
            .map(|at| (carried.go_ms.or(carried.ready_ms).unwrap_or(0), at));
    }
}

/// The store, opened before the guest serves: a file or a server at once, memory
/// once an upgrade's old process has handed its contents over.
enum StoreOpening {
    Opened(Arc<Stores>),
    AfterHandover(StoreConfig),
}

/// What serving a guest adds to what every server has.
#[derive(Default)]
struct Extras {
    reloader: Option<Reloader>,
    store: Option<Arc<Stores>>,
    record: Option<Arc<RecordStats>>,
}

/// What every worker's loop is built with.
struct LoopSettings<'a> {
    limits: Limits,
    args: &'a ServeArgs,
    /// Shared by every worker: `--max-connections` is the process's.
    capacity: Capacity,
}

impl LoopSettings<'_> {
    /// Worker `worker`'s loop, numbering its handles apart from the others'.
    fn event_loop<H: EventHandler>(
        &self,
        worker: usize,
        listeners: Vec<Listener>,
        handler: H,
    ) -> Result<EventLoop<H>> {
        let mut event_loop = EventLoop::new(
            listeners,
            handler,
            self.limits.clone(),
            self.args.allow_list(),
            self.capacity.clone(),
            self.args.lingering_close,
            self.args.shutdown_timeout.0,
        )?;
        event_loop.number_for_worker(worker, self.args.workers.count());
        if self.args.io == Io::Uring {
            event_loop.use_uring()?;
        }
        Ok(event_loop)
    }
}

/// Gives each worker's loop the connections the old process's worker of the same
/// number handed over (an upgrade with `--upgrade handover`).
fn adopt<H: EventHandler>(
    loops: &mut [EventLoop<H>],
    parcels: Vec<(crate::sockets::parcel::Parcel, Vec<std::os::fd::OwnedFd>)>,
    predecessor: Option<&mut Predecessor>,
) -> Result<()> {
    if parcels.is_empty() {
        return Ok(());
    }
    // Every connection in place (in its loop's table and epoll) before the old
    // process lets them go: what fails until then leaves them all with it.
    let carried: usize = parcels.iter().map(|(parcel, _)| parcel.conns.len()).sum();
    let mut groups = Vec::with_capacity(loops.len());
    for (event_loop, (parcel, fds)) in loops.iter_mut().zip(parcels) {
        groups.push(event_loop.unpack(parcel, fds)?);
    }
    if let Some(predecessor) = predecessor {
        predecessor.taken(carried)?;
    }
    let workers = loops.len();
    for (worker, (event_loop, groups)) in loops.iter_mut().zip(groups).enumerate() {
        let _in_worker = worker_span(worker, workers).entered();
        event_loop.adopt(groups);
    }
    Ok(())
}

/// Announces the addresses, starts each loop on a thread of its own, and supervises
/// them until they have all finished.
fn run<H: EventHandler + Send + 'static>(
    args: &ServeArgs,
    log_format: LogFormat,
    mut supervisor: Supervisor,
    mut loops: Vec<EventLoop<H>>,
    extras: Extras,
    serving: Serving<'_>,
    what: &str,
) -> Result<()> {
    let Extras {
        reloader,
        store,
        record,
    } = extras;
    let Serving {
        binary,
        held,
        admin_listener,
        token,
        predecessor,
        carried_at,
    } = serving;
    let workers = loops.len();
    let upgrade = supervisor.upgrade_handle();
    let admin = match admin_listener {
        Some(listener) => {
            let published: Vec<Arc<Published>> = loops
                .iter_mut()
                .map(|event_loop| {
                    let published = Arc::new(Published::default());
                    event_loop.publish_to(published.clone());
                    published
                })
                .collect();
            let admin = Admin {
                workers: published,
                reloads_refused: reloader.as_ref().map(Reloader::refused).unwrap_or_default(),
                max_connections: args.max_connections,
                reload: reloader.as_ref().map(Reloader::handle),
                upgrade: Some(upgrade.clone()),
                upgrades: upgrade.stats(),
                store: store.clone(),
                record,
                token,
            };
            Some(admin.start(listener)?)
        }
        None => None,
    };
    for (addr, tls) in loops[0].local_addrs() {
        let listener = if tls {
            Listening::Tls
        } else {
            Listening::Plain
        };
        announce(log_format, listener, addr);
    }
    if let Some(admin) = &admin {
        announce(log_format, Listening::Admin, admin.addr);
    }
    info!(handler = what, workers, io = ?args.io, "serving");
    let remotes: Vec<_> = loops.iter().map(EventLoop::remote).collect();
    for (worker, mut event_loop) in loops.into_iter().enumerate() {
        let remote = event_loop.remote();
        let span = worker_span(worker, workers);
        supervisor.spawn(format!("worker {worker}"), remote, move || {
            span.in_scope(|| event_loop.run())
        })?;
    }
    match predecessor {
        Some(predecessor) => {
            let stats = upgrade.stats();
            // The old process's time to its go, plus ours since.
            let serving_ms =
                carried_at.map_or(0, |(go_ms, at)| go_ms + millis(at.elapsed()) as u64);
            stats.serving_ms.store(serving_ms, Ordering::Relaxed);
            info!(
                old = predecessor.pid(),
                pid = std::process::id(),
                serving_ms,
                "upgrade: serving; took over from the old process"
            );
            predecessor.serving();
        }
        None => systemd::ready(),
    }
    let mut upgrader = Upgrader::new(binary, held, remotes, store, upgrade.stats(), UPGRADE_LINK);
    upgrader.set_mode(args.upgrade, args.drain_timeout.map(|d| d.0));
    supervisor.run(Duties {
        reloader,
        upgrader,
        upgrade_timeout: args.upgrade_timeout.0,
        admin,
    })
}

/// What kind of listener an announcement is for.
#[derive(Clone, Copy)]
enum Listening {
    Plain,
    Tls,
    Admin,
}

/// Says where the host listens, on stderr. Tests and scripts read these lines to find
/// the port: in text mode they are exactly `listening on ADDR`, `listening on ADDR
/// (tls)` and `admin listening on ADDR`; in JSON mode they are records like every
/// other line, with the same message and the address and the listener's kind as
/// fields.
fn announce(log_format: LogFormat, listening: Listening, addr: SocketAddr) {
    let (message, kind) = match listening {
        Listening::Plain => (format!("listening on {addr}"), "plain"),
        Listening::Tls => (format!("listening on {addr} (tls)"), "tls"),
        Listening::Admin => (format!("admin listening on {addr}"), "admin"),
    };
    match log_format {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => {
            info!(target: ANNOUNCE_TARGET, address = %addr, listener = kind, "{message}");
        }
    }
}

/// The certificates and the server side of TLS, when there are TLS listeners
/// (`--listen-tls` addresses, or sockets handed over): loaded before anything is
/// bound, so that a bad file is the one error.
fn tls_server(args: &ServeArgs, needed: bool) -> Result<Option<(Arc<Certificates>, TlsServer)>> {
    if !needed {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        bail!(
            "TLS listeners (--listen-tls, or a socket named `tls`) need --tls-cert and --tls-key"
        );
    };
    let certificates = Certificates::load(cert, key)?;
    let server = TlsServer::new(certificates.clone(), args.tls_handshake_timeout.0)?;
    Ok(Some((certificates, server)))
}

/// Binds the plaintext addresses, then the TLS ones, once per worker:
/// `listeners[worker]` holds them all in that order.
fn bind_listeners(
    args: &ServeArgs,
    tls: Option<&TlsServer>,
    workers: usize,
) -> Result<Vec<Vec<Listener>>> {
    let plain = args.plain_addrs();
    let addrs: Vec<SocketAddr> = plain.iter().chain(&args.listen_tls).copied().collect();
    let bound = bind_all(&addrs, args.backlog, workers)?;
    Ok(bound
        .into_iter()
        .map(|sockets| {
            sockets
                .into_iter()
                .enumerate()
                .map(|(i, socket)| Listener {
                    socket,
                    tls: if i < plain.len() { None } else { tls.cloned() },
                })
                .collect()
        })
        .collect())
}

/// Each worker's log lines say which worker wrote them, when there are several.
fn worker_span(worker: usize, workers: usize) -> Span {
    if workers > 1 {
        info_span!("worker", worker)
    } else {
        Span::none()
    }
}

/// Each connection is a file descriptor, and a soft limit of 1024 (a common default)
/// would cap the server far below `--max-connections`: raise it to the hard limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one properly sized struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!("could not raise the open-files limit");
            }
        }
    }
}
