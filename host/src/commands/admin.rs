//! The admin listener (`--admin ADDR`), on a thread of its own, off the event loops:
//! `GET /metrics` (Prometheus text, see [`super::metrics_page`]), `GET /healthz`,
//! `GET /readyz`, `POST /reload`, `POST /upgrade`.
//!
//! It reads what the workers published (see [`crate::shared::metrics`]) and never touches a
//! loop. One request per connection, answered with `Connection: close`; a client that
//! does not send its whole request within [`REQUEST_TIMEOUT`] is dropped, so each
//! stalled client delays the requests behind it by that much at most.
//!
//! Reads are open (Prometheus scrapes them). Writes (`POST`) need the token of
//! `--admin-token-file` as `Authorization: Bearer TOKEN` when one is given, and are
//! refused on a listener that is not on loopback when none is.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mio::{Events, Interest, Poll, Token, Waker};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use super::metrics_page::Scrape;
use crate::record::writer::RecordStats;
use crate::shared::metrics::Published;
use crate::shared::rate_limit::RateLimit;
use crate::store::Stores;
use crate::swap::ReloadHandle;
use crate::upgrade::{UpgradeHandle, UpgradeStats};

/// How long a client may take to send its request, in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the listener waits after a failed accept before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The largest request head read: the endpoints take no more.
const MAX_REQUEST: usize = 8 * 1024;
/// The admin thread's poll tokens.
const LISTENER: Token = Token(0);
const STOP: Token = Token(1);

/// What the admin listener reports and acts on.
pub struct Admin {
    /// Each worker's published metrics, in worker order.
    pub workers: Vec<Arc<Published>>,
    /// Reloads the loader refused (unreadable file, not a component, another world).
    pub reloads_refused: Arc<AtomicU64>,
    /// `--max-connections`.
    pub max_connections: usize,
    /// Asks for a reload; `None` when there is nothing to reload (a built-in guest
    /// and no TLS certificate).
    pub reload: Option<ReloadHandle>,
    /// Asks for a binary upgrade.
    pub upgrade: Option<UpgradeHandle>,
    /// Upgrades so far, for `/metrics`.
    pub upgrades: Arc<UpgradeStats>,
    /// The store, for the bytes its namespace holds (none for the native baseline).
    pub store: Option<Arc<Stores>>,
    /// `--record`'s counters, when it records.
    pub record: Option<Arc<RecordStats>>,
    /// What a `POST` must carry, from `--admin-token-file`.
    pub token: Option<String>,
}

/// The admin thread, once started: where it listens, and how to stop it (the old
/// process of an upgrade stops it, so that its successor answers alone).
#[derive(Debug)]
pub struct AdminThread {
    /// The address bound.
    pub addr: SocketAddr,
    stop: Arc<Waker>,
}

impl AdminThread {
    /// Stops accepting admin requests: the thread ends after the one it serves.
    pub fn stop(&self) {
        let _ = self.stop.wake();
    }
}

/// Binds the admin listener on `addr`, a loopback address unless `allow_remote`.
pub fn bind(addr: SocketAddr, allow_remote: bool) -> Result<TcpListener> {
    check_address(addr, allow_remote)?;
    TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (--admin)"))
}

/// Refuses an admin address that is not loopback, unless `allow_remote`.
pub fn check_address(addr: SocketAddr, allow_remote: bool) -> Result<()> {
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "--admin {addr} is not a loopback address: the admin listener shows the \
             host's internals and can reload its guest; add --admin-allow-remote to \
             serve it there anyway"
        );
    }
    Ok(())
}

/// The token in `path`: its first line, which must not be empty.
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --admin-token-file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        bail!("--admin-token-file {} holds no token", path.display());
    }
    Ok(token)
}

impl Admin {
    /// Serves on `listener` (bound by [`bind`], or handed over by an upgrade or
    /// systemd) on a thread of its own.
    pub fn start(self, listener: TcpListener) -> Result<AdminThread> {
        let addr = listener
            .local_addr()
            .context("cannot read the admin listener's address")?;
        listener
            .set_nonblocking(true)
            .context("cannot set up the admin listener")?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let mut poll = Poll::new().context("cannot create the admin listener's poll")?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .context("cannot register the admin listener")?;
        let stop =
            Arc::new(Waker::new(poll.registry(), STOP).context("cannot create the admin waker")?);
        let admin = Arc::new(self);
        let loopback = addr.ip().is_loopback();
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                let mut failures = RateLimit::default();
                let mut events = Events::with_capacity(4);
                loop {
                    if let Err(e) = poll.poll(&mut events, None)
                        && e.kind() != io::ErrorKind::Interrupted
                    {
                        warn!(error = %e, "the admin listener's poll failed; it stops");
                        return;
                    }
                    if events.iter().any(|e| e.token() == STOP) {
                        return;
                    }
                    loop {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let served = TcpStream::from(stream);
                                if let Err(e) = served
                                    .set_nonblocking(false)
                                    .and_then(|()| admin.serve(served, loopback))
                                    && failures.allow()
                                {
                                    warn!(error = %e, "admin request failed");
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                // Out of file descriptors, say: the connection stays
                                // queued, so trying again at once would spin.
                                if failures.allow() {
                                    warn!(error = %e, "admin accept failed");
                                }
                                std::thread::sleep(ACCEPT_RETRY);
                            }
                        }
                    }
                }
            })
            .context("cannot start the admin thread")?;
        Ok(AdminThread { addr, stop })
    }

    /// Answers one request.
    fn serve(&self, mut stream: TcpStream, loopback: bool) -> io::Result<()> {
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let Some(request) = read_request(&mut stream, deadline)? else {
            return respond(&mut stream, 400, "text/plain", "bad request\n");
        };
        let Request {
            method,
            path,
            bearer,
        } = request;
        if method == "POST"
            && let Some((status, why)) = self.refuse_write(bearer.as_deref(), loopback)
        {
            warn!(%path, "admin write refused: {}", why.trim_end());
            return respond(&mut stream, status, "text/plain", why);
        }
        let (status, body) = match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => {
                let body = self.metrics().unwrap_or_default();
                return respond(
                    &mut stream,
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    &body,
                );
            }
            ("GET", "/healthz") => (200, "ok\n".to_string()),
            ("GET", "/readyz") => match self.not_ready() {
                None => (200, "ready\n".to_string()),
                Some(why) => (503, format!("not ready: {why}\n")),
            },
            ("POST", "/reload") => match &self.reload {
                Some(reload) => {
                    info!("POST /reload: reloading the guest");
                    reload.request();
                    (202, "reloading\n".to_string())
                }
                None => (
                    409,
                    "nothing to reload: a built-in guest has no file (and there is no TLS certificate)\n"
                        .to_string(),
                ),
            },
            ("POST", "/upgrade") => match &self.upgrade {
                Some(upgrade) if upgrade.request() => (
                    202,
                    "upgrading: the log and /metrics say how it ends\n".to_string(),
                ),
                _ => (
                    409,
                    "an upgrade is under way, or this process has handed over already\n".to_string(),
                ),
            },
            (_, "/metrics" | "/healthz" | "/readyz" | "/reload" | "/upgrade") => {
                (405, "method not allowed\n".to_string())
            }
            _ => (
                404,
                "not found: try /metrics, /healthz, /readyz, POST /reload, POST /upgrade\n"
                    .to_string(),
            ),
        };
        respond(&mut stream, status, "text/plain", &body)
    }

    /// Why a write must be refused, if it must: a token is set and `bearer` is not
    /// it, or none is set and the listener is not on loopback.
    fn refuse_write(&self, bearer: Option<&str>, loopback: bool) -> Option<(u16, &'static str)> {
        match (&self.token, bearer) {
            (Some(token), Some(given)) if same_secret(token.as_bytes(), given.as_bytes()) => None,
            (Some(_), _) => Some((
                401,
                "a valid `Authorization: Bearer TOKEN` is needed (--admin-token-file)\n",
            )),
            (None, _) if loopback => None,
            (None, _) => Some((
                403,
                "admin writes on a listener that is not on loopback need --admin-token-file\n",
            )),
        }
    }

    /// Why the host should not get traffic now, if it should not: shutting down, or a
    /// worker's guest backing off after traps.
    fn not_ready(&self) -> Option<String> {
        for (id, worker) in self.workers.iter().enumerate() {
            if worker.stopping.load(Ordering::Relaxed) {
                return Some("shutting down".into());
            }
            if worker.backing_off.load(Ordering::Relaxed) {
                return Some(format!("the guest is in crash-loop back-off (worker {id})"));
            }
        }
        self.store.as_ref().and_then(|store| store.unavailable())
    }

    fn metrics(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape {
            workers: self.workers.clone(),
            reloads_refused: self.reloads_refused.clone(),
            max_connections: self.max_connections,
            store: self.store.clone(),
            record: self.record.clone(),
            upgrades: self.upgrades.clone(),
        }));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// Compares two secrets in time that depends on their lengths only, not on where
/// they first differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the admin listener reads of a request.
struct Request {
    method: String,
    /// The path, without its query.
    path: String,
    /// The `Authorization: Bearer` token, if one came.
    bearer: Option<String>,
}

/// Reads a request head by `deadline`, however the client spaces its bytes; `None`
/// if it is not one.
fn read_request(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<Request>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request did not arrive in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_string();
                let path = request.path.unwrap_or_default();
                let path = path.split('?').next().unwrap_or_default().to_string();
                let bearer = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().split_once(' '))
                    // The scheme's name is case-insensitive (RFC 9110).
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.trim().to_string());
                return Ok(Some(Request {
                    method,
                    path,
                    bearer,
                }));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_REQUEST => {}
            _ => return Ok(None),
        }
    }
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
