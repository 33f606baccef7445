//! `host` serving: load the guest, bind the listeners, start one event loop per
//! worker, announce the addresses, and supervise until a shutdown completes.

use std::sync::Arc;

use anyhow::{Result, bail};
use mio::net::TcpListener;
use tracing::{Span, info, info_span};

use crate::admin::Admin;
use crate::builtin::guest_source;
use crate::cli::ServeArgs;
use crate::limits::Limits;
use crate::metrics::{Published, millis};
use crate::native::NativeHttp;
use crate::runtime::engine::Runtime;
use crate::sockets::capacity::Capacity;
use crate::sockets::event_loop::EventLoop;
use crate::sockets::handler::EventHandler;
use crate::sockets::listener::bind_all;
use crate::supervisor::Supervisor;
use crate::swap::Reloader;
use crate::wasm_handler::WasmHandler;

/// Serves until a shutdown completes.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let workers = args.workers.count();
    let limits = args.limits();
    raise_open_file_limit();
    let listeners = bind_all(&args.listen, args.backlog, workers)?;
    let settings = LoopSettings {
        limits: limits.clone(),
        args,
        capacity: Capacity::new(limits.max_connections),
    };
    let supervisor = Supervisor::new()?;

    match args.native.as_deref() {
        None => {}
        Some("http") => {
            let loops = listeners
                .into_iter()
                .map(|listeners| settings.event_loop(listeners, NativeHttp::default()))
                .collect::<Result<Vec<_>>>()?;
            return run(args, supervisor, loops, None, "native http");
        }
        Some(other) => bail!("unknown native baseline `{other}` (known: http)"),
    }

    let source = guest_source(&args.guest)?;
    if source.path.is_none() && args.watch {
        bail!(
            "--watch needs a guest file, not the built-in `{}`",
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
    let drain_timeout = args.drain_timeout.map(|d| d.0);
    let mut loops = Vec::with_capacity(workers);
    for (worker, listeners) in listeners.into_iter().enumerate() {
        let _in_worker = worker_span(worker, workers).entered();
        let handler = WasmHandler::new(runtime.clone(), guest.clone(), args.swap, drain_timeout)?;
        loops.push(settings.event_loop(listeners, handler)?);
    }
    // A guest file can be reloaded (SIGHUP, and --watch): each worker gets the new one.
    let reloader = match &source.path {
        Some(path) => {
            let remotes: Vec<_> = loops.iter().map(EventLoop::remote).collect();
            let (reloader, inboxes) = Reloader::start(runtime, path, digest, args.watch, &remotes)?;
            for (event_loop, inbox) in loops.iter_mut().zip(inboxes) {
                event_loop.handler_mut().set_swap_inbox(inbox);
            }
            Some(reloader)
        }
        None => None,
    };
    if args.admin.is_some() {
        for event_loop in &mut loops {
            event_loop.handler_mut().time_calls();
        }
    }
    run(args, supervisor, loops, reloader, &source.origin)
}

/// What every worker's loop is built with.
struct LoopSettings<'a> {
    limits: Limits,
    args: &'a ServeArgs,
    /// Shared by every worker: `--max-connections` is the process's.
    capacity: Capacity,
}

impl LoopSettings<'_> {
    fn event_loop<H: EventHandler>(
        &self,
        listeners: Vec<TcpListener>,
        handler: H,
    ) -> Result<EventLoop<H>> {
        EventLoop::new(
            listeners,
            handler,
            self.limits.clone(),
            self.args.allow_list(),
            self.capacity.clone(),
            self.args.lingering_close,
            self.args.shutdown_timeout.0,
        )
    }
}

/// Announces the addresses, starts each loop on a thread of its own, and supervises
/// them until they have all finished.
fn run<H: EventHandler + Send + 'static>(
    args: &ServeArgs,
    mut supervisor: Supervisor,
    mut loops: Vec<EventLoop<H>>,
    reloader: Option<Reloader>,
    what: &str,
) -> Result<()> {
    let workers = loops.len();
    let admin = match args.admin {
        Some(addr) => {
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
            };
            Some(admin.start(addr, args.admin_allow_remote)?)
        }
        None => None,
    };
    for addr in loops[0].local_addrs() {
        // Tests and scripts read this line to find the port: keep it exact, on stderr.
        eprintln!("listening on {addr}");
    }
    if let Some(addr) = admin {
        eprintln!("admin listening on {addr}");
    }
    info!(handler = what, workers, "serving");
    for (worker, mut event_loop) in loops.into_iter().enumerate() {
        let remote = event_loop.remote();
        let span = worker_span(worker, workers);
        supervisor.spawn(format!("worker {worker}"), remote, move || {
            span.in_scope(|| event_loop.run())
        })?;
    }
    supervisor.run(reloader)
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
