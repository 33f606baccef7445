//! The admin listener (`--admin ADDR`), on a thread of its own, off the event loops:
//! `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz`, `POST /reload`.
//!
//! It reads what the workers published (see [`crate::metrics`]) and never touches a
//! loop. One request per connection, answered with `Connection: close`; a client that
//! does not send its whole request within [`REQUEST_TIMEOUT`] is dropped, so each
//! stalled client delays the requests behind it by that much at most.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::metrics::{Published, PublishedHistogram, TrapCause};
use crate::rate_limit::RateLimit;
use crate::swap::ReloadHandle;

/// How long a client may take to send its request, in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the listener waits after a failed accept before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The largest request head read: the endpoints take no more.
const MAX_REQUEST: usize = 8 * 1024;

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
}

impl Admin {
    /// Binds `addr` (a loopback address unless `allow_remote`) and serves on a thread
    /// of its own; returns the address bound.
    pub fn start(self, addr: SocketAddr, allow_remote: bool) -> Result<SocketAddr> {
        if !addr.ip().is_loopback() && !allow_remote {
            bail!(
                "--admin {addr} is not a loopback address: the admin listener shows the \
                 host's internals and can reload its guest; add --admin-allow-remote to \
                 serve it there anyway"
            );
        }
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} (--admin)"))?;
        let bound = listener
            .local_addr()
            .with_context(|| format!("cannot listen on {addr} (--admin)"))?;
        let admin = Arc::new(self);
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                let mut failures = RateLimit::default();
                for stream in listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(e) = admin.serve(stream)
                                && failures.allow()
                            {
                                warn!(error = %e, "admin request failed");
                            }
                        }
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
            })
            .context("cannot start the admin thread")?;
        Ok(bound)
    }

    /// Answers one request.
    fn serve(&self, mut stream: TcpStream) -> io::Result<()> {
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let Some((method, path)) = read_request(&mut stream, deadline)? else {
            return respond(&mut stream, 400, "text/plain", "bad request\n");
        };
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
            (_, "/metrics" | "/healthz" | "/readyz" | "/reload") => {
                (405, "method not allowed\n".to_string())
            }
            _ => (
                404,
                "not found: try /metrics, /healthz, /readyz, POST /reload\n".to_string(),
            ),
        };
        respond(&mut stream, status, "text/plain", &body)
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
        None
    }

    fn metrics(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape {
            workers: self.workers.clone(),
            reloads_refused: self.reloads_refused.clone(),
            max_connections: self.max_connections,
        }));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// One scrape's view of the published metrics.
#[derive(Debug)]
struct Scrape {
    workers: Vec<Arc<Published>>,
    reloads_refused: Arc<AtomicU64>,
    max_connections: usize,
}

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

impl Scrape {
    /// The workers that have published, with their `worker` label.
    fn live(&self) -> impl Iterator<Item = (Labels, &Published)> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.live.load(Ordering::Relaxed))
            .map(|(id, p)| (vec![("worker".into(), id.to_string().into())], p.as_ref()))
    }

    /// A counter or gauge per worker.
    fn per_worker(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        kind: MetricType,
        value: impl Fn(&Published) -> u64,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, published) in self.live() {
            let mut metric = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => {
                    metric.encode_counter::<NoLabelSet, _, u64>(&value(published), None)?
                }
                _ => metric.encode_gauge(&(value(published) as i64))?,
            }
        }
        Ok(())
    }

    /// A counter per worker and per value of one more label (`label`), the values
    /// and counts given by `counts`.
    fn labelled_counters<const N: usize>(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        label: &str,
        counts: impl Fn(&Published) -> [(&'static str, u64); N],
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, published) in self.live() {
            for (value, count) in counts(published) {
                let mut labels = labels.clone();
                labels.push((label.to_string().into(), value.into()));
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        Ok(())
    }

    /// A histogram per worker.
    fn histogram<const N: usize>(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        histogram: impl Fn(&Published) -> &PublishedHistogram<N>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, published) in self.live() {
            let (sum, count, buckets) = histogram(published).read();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let e = &mut encoder;
        let load = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        self.per_worker(
            e,
            "sandsock_connections_open",
            "Connections held, closing ones included.",
            Gauge,
            |p| load(&p.open),
        )?;
        self.per_worker(
            e,
            "sandsock_connections_accepted",
            "Connections accepted.",
            Counter,
            |p| load(&p.accepted),
        )?;
        self.labelled_counters(
            e,
            "sandsock_connections_refused",
            "Connections accepted and closed at once: at --max-connections (limit), or while the guest backed off after traps (guest_down).",
            "reason",
            |p| {
                [
                    ("limit", load(&p.refused_at_limit)),
                    ("guest_down", load(&p.refused_guest_down)),
                ]
            },
        )?;
        self.labelled_counters(
            e,
            "sandsock_tls_handshakes",
            "TLS handshakes on --listen-tls connections, by outcome: done, failed (a bad client hello or record, or a peer that left), timeout (--tls-handshake-timeout).",
            "outcome",
            |p| {
                [
                    ("done", load(&p.tls_handshakes)),
                    ("failed", load(&p.tls_handshakes_failed)),
                    ("timeout", load(&p.tls_handshakes_timed_out)),
                ]
            },
        )?;
        let mut max = e.encode_descriptor(
            "sandsock_connections_max",
            "--max-connections, for the whole process.",
            None,
            Gauge,
        )?;
        max.encode_gauge(&(self.max_connections as i64))?;
        self.per_worker(
            e,
            "sandsock_read_bytes",
            "Bytes guests read from their connections.",
            Counter,
            |p| load(&p.bytes_read),
        )?;
        self.per_worker(
            e,
            "sandsock_written_bytes",
            "Bytes guests wrote to their connections.",
            Counter,
            |p| load(&p.bytes_written),
        )?;
        self.per_worker(
            e,
            "sandsock_write_buffer_bytes",
            "Bytes the host holds unsent in write buffers.",
            Gauge,
            |p| load(&p.buffered),
        )?;
        self.per_worker(
            e,
            "sandsock_timers_armed",
            "Guest timers armed.",
            Gauge,
            |p| load(&p.timers),
        )?;
        self.per_worker(
            e,
            "sandsock_guest_calls",
            "Calls into guest instances (handle).",
            Counter,
            |p| load(&p.calls),
        )?;
        self.histogram(
            e,
            "sandsock_guest_call_duration_seconds",
            "Wall time of a call into a guest instance.",
            |p| &p.call_seconds,
        )?;
        self.histogram(
            e,
            "sandsock_guest_call_events",
            "Events per call into a guest instance.",
            |p| &p.call_events,
        )?;
        let mut traps = e.encode_descriptor(
            "sandsock_guest_traps",
            "Guest traps, by cause.",
            None,
            Counter,
        )?;
        for (labels, p) in self.live() {
            for (cause, cell) in TrapCause::ALL.iter().zip(&p.traps) {
                let mut labels = labels.clone();
                labels.push(("cause".into(), cause.label().into()));
                traps
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&load(cell), None)?;
            }
        }
        self.per_worker(
            e,
            "sandsock_guest_backoff",
            "1 while the serving instance is in crash-loop back-off.",
            Gauge,
            |p| u64::from(p.backing_off.load(Ordering::Relaxed)),
        )?;
        self.per_worker(
            e,
            "sandsock_swaps",
            "Swaps done: a new generation serving.",
            Counter,
            |p| load(&p.swaps),
        )?;
        self.per_worker(
            e,
            "sandsock_recycles",
            "Shared instances replaced by a fresh one of the same code (--recycle-at-memory, --recycle-after), nothing closed.",
            Counter,
            |p| load(&p.recycles),
        )?;
        for (i, (name, help)) in [
            ("sandsock_canary_connections_compared", "Connections a canary compared with no divergence (--swap canary)."),
            ("sandsock_canary_divergences", "Connections whose output from a canary's candidate diverged from the serving generation's."),
            ("sandsock_canary_promotions", "Candidates a canary promoted to serving."),
            ("sandsock_canary_rejections", "Candidates a canary rejected (a divergence, a trap, a timeout)."),
        ]
        .into_iter()
        .enumerate()
        {
            self.per_worker(e, name, help, Counter, |p| load(&p.canary[i]))?;
        }
        let mut shadow_seconds = e.encode_descriptor(
            "sandsock_canary_shadow_seconds",
            "Time spent in a canary's shadow calls: what trying candidates cost.",
            None,
            Counter,
        )?;
        for (labels, p) in self.live() {
            let seconds = f64::from_bits(load(&p.canary_seconds));
            shadow_seconds
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&seconds, None)?;
        }
        self.histogram(
            e,
            "sandsock_swap_duration_seconds",
            "A swap's time from trigger to serving.",
            |p| &p.swap_seconds,
        )?;
        self.per_worker(
            e,
            "sandsock_handoff_snapshots_refused",
            "Snapshots a new generation's restore refused at a handoff.",
            Counter,
            |p| load(&p.snapshots_refused),
        )?;
        let mut refused_reloads = e.encode_descriptor(
            "sandsock_reloads_refused",
            "Reloads refused: the file could not be read, compiled or fitted to the world (stage=load), or the new guest could not start (stage=start, per worker).",
            None,
            Counter,
        )?;
        let loaded: Labels = vec![("stage".into(), "load".into())];
        refused_reloads
            .encode_family(&loaded)?
            .encode_counter::<NoLabelSet, _, u64>(&load(&self.reloads_refused), None)?;
        for (mut labels, p) in self.live() {
            labels.push(("stage".into(), "start".into()));
            refused_reloads
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&load(&p.swaps_refused), None)?;
        }
        let mut info = e.encode_descriptor(
            "sandsock_generation",
            "The serving generation: its number, the guest's name and its SHA-256 prefix.",
            None,
            MetricType::Info,
        )?;
        for (mut labels, p) in self.live() {
            let serving = p.serving.lock().unwrap_or_else(|e| e.into_inner()).clone();
            labels.push(("generation".into(), serving.generation.to_string().into()));
            labels.push(("guest".into(), serving.guest.into()));
            labels.push(("sha256".into(), serving.sha256.into()));
            info.encode_info(&labels)?;
        }
        let mut retired = e.encode_descriptor(
            "sandsock_retired_generation_connections",
            "Connections each older generation still holds (drain).",
            None,
            Gauge,
        )?;
        for (labels, p) in self.live() {
            for (generation, conns) in p.retired() {
                let mut labels = labels.clone();
                labels.push(("generation".into(), generation.to_string().into()));
                retired
                    .encode_family(&labels)?
                    .encode_gauge(&(conns as i64))?;
            }
        }
        Ok(())
    }
}

/// Reads a request head by `deadline`, however the client spaces its bytes; `None`
/// if it is not one.
fn read_request(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<(String, String)>> {
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
                return Ok(Some((method, path)));
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
