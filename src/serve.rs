//! `host` serving: load the guest, bind the listeners, announce them, run the loop.

use std::sync::Arc;

use anyhow::{Result, bail};
use tracing::info;

use crate::builtin::guest_source;
use crate::cli::ServeArgs;
use crate::limits::Limits;
use crate::native::NativeHttp;
use crate::runtime::engine::Runtime;
use crate::sockets::event_loop::{EventLoop, bind};
use crate::sockets::handler::EventHandler;
use crate::swap::Reloader;
use crate::wasm_handler::WasmHandler;

/// Serves until a shutdown completes.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let limits = args.limits();
    match args.native.as_deref() {
        None => {}
        Some("http") => {
            let event_loop = start_loop(args, NativeHttp::default(), limits)?;
            return serve_on(event_loop, "native http");
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
    let runtime = Arc::new(Runtime::new(
        args.sandbox(limits.clone()),
        cache_dir.as_deref(),
    )?);
    let guest = runtime.load(&source)?;
    info!(
        guest = &*guest.name,
        origin = %source.origin,
        took = ?guest.load_time,
        isolation = ?args.isolation,
        "guest {}",
        guest.how_loaded()
    );
    let digest = guest.digest;
    let drain_timeout = args.drain_timeout.map(|d| d.0);
    let handler = WasmHandler::new(runtime.clone(), guest, args.swap, drain_timeout)?;
    let mut event_loop = start_loop(args, handler, limits)?;
    // A guest file can be reloaded (SIGHUP, and --watch).
    if let Some(path) = &source.path {
        let reloader = Reloader::start(runtime, path, digest, args.watch, event_loop.waker())?;
        event_loop.handler_mut().set_reloader(reloader);
    }
    serve_on(event_loop, &source.origin)
}

fn start_loop<H: EventHandler>(
    args: &ServeArgs,
    handler: H,
    limits: Limits,
) -> Result<EventLoop<H>> {
    raise_open_file_limit();
    let listeners = bind(&args.listen)?;
    EventLoop::new(
        listeners,
        handler,
        limits,
        args.allow_list(),
        args.shutdown_timeout.0,
    )
}

fn serve_on<H: EventHandler>(mut event_loop: EventLoop<H>, what: &str) -> Result<()> {
    for addr in event_loop.local_addrs() {
        // Tests and scripts read this line to find the port: keep it exact, on stderr.
        eprintln!("listening on {addr}");
    }
    info!(handler = what, "serving");
    event_loop.run()
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
