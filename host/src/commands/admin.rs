//! The admin listener (`--admin ADDR`), on a thread of its own, off the event loops:
//! `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz`, `POST /reload`.
//!
//! It reads what the workers published (see [`crate::shared::metrics`]) and never touches a
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
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::record::writer::RecordStats;
use crate::runtime::contracts::Contract;
use crate::shared::metrics::{Published, TrapCause};
use crate::shared::rate_limit::RateLimit;
use crate::store::{OP_NAMES, StoreError, Stores};
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
    /// The store, for the bytes its namespace holds (none for the native baseline).
    pub store: Option<Arc<Stores>>,
    /// `--record`'s counters, when it records.
    pub record: Option<Arc<RecordStats>>,
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
    store: Option<Arc<Stores>>,
    record: Option<Arc<RecordStats>>,
}

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

/// The values of one label, each with its count.
type ByLabel = Vec<(Cow<'static, str>, u64)>;

/// A histogram as [`PublishedHistogram::read`](crate::shared::metrics::PublishedHistogram::read)
/// gives it: sum, count, and the count in each bucket.
type HistogramRead = (f64, u64, Vec<(f64, u64)>);

/// One metric family of /metrics: a row of [`METRICS`].
struct Metric {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// Where its samples come from, in the order they are written.
    samples: &'static [Samples],
}

/// How a metric's samples are read. Every per-worker sample carries a `worker` label,
/// and only workers that have published get one.
enum Samples {
    /// One value for the whole process, with these labels.
    Process(&'static [(&'static str, &'static str)], fn(&Scrape) -> u64),
    /// One value for the whole process, with labels known at the scrape, if any.
    ProcessLabelled(fn(&Scrape) -> Option<(Labels, u64)>),
    /// A value for the whole process per value of one label (named here), if any.
    ProcessBy(&'static str, fn(&Scrape) -> Option<ByLabel>),
    /// A value per worker.
    Worker(fn(&Published) -> u64),
    /// A value in seconds per worker (a counter).
    WorkerSeconds(fn(&Published) -> f64),
    /// A value per worker and per value of one more label (named here), the values
    /// and their counts as the function gives them.
    WorkerBy(&'static str, fn(&Published) -> ByLabel),
    /// A histogram per worker.
    WorkerHistogram(fn(&Published) -> HistogramRead),
    /// An info metric per worker: its labels beside `worker`.
    WorkerInfo(fn(&Published) -> Labels),
}

fn load(cell: &AtomicU64) -> u64 {
    cell.load(Ordering::Relaxed)
}

/// Every metric /metrics shows, in the order it shows them: a new metric is a row here.
const METRICS: &[Metric] = {
    use MetricType::{Counter, Gauge, Histogram, Info};
    use Samples::*;
    &[
        Metric {
            name: "sandsock_connections_open",
            help: "Connections held, closing ones included.",
            kind: Gauge,
            samples: &[Worker(|p| load(&p.open))],
        },
        Metric {
            name: "sandsock_connections_accepted",
            help: "Connections accepted.",
            kind: Counter,
            samples: &[Worker(|p| load(&p.accepted))],
        },
        Metric {
            name: "sandsock_connections_refused",
            help: "Connections accepted and closed at once: at --max-connections (limit), or while the guest backed off after traps (guest_down).",
            kind: Counter,
            samples: &[WorkerBy("reason", |p| {
                vec![
                    ("limit".into(), load(&p.refused_at_limit)),
                    ("guest_down".into(), load(&p.refused_guest_down)),
                ]
            })],
        },
        Metric {
            name: "sandsock_tls_handshakes",
            help: "TLS handshakes on --listen-tls connections, by outcome: done, failed (a bad client hello or record, or a peer that left), timeout (--tls-handshake-timeout).",
            kind: Counter,
            samples: &[WorkerBy("outcome", |p| {
                vec![
                    ("done".into(), load(&p.tls_handshakes)),
                    ("failed".into(), load(&p.tls_handshakes_failed)),
                    ("timeout".into(), load(&p.tls_handshakes_timed_out)),
                ]
            })],
        },
        Metric {
            name: "sandsock_connections_max",
            help: "--max-connections, for the whole process.",
            kind: Gauge,
            samples: &[Process(&[], |s| s.max_connections as u64)],
        },
        Metric {
            name: "sandsock_read_bytes",
            help: "Bytes guests read from their connections.",
            kind: Counter,
            samples: &[Worker(|p| load(&p.bytes_read))],
        },
        Metric {
            name: "sandsock_written_bytes",
            help: "Bytes guests wrote to their connections.",
            kind: Counter,
            samples: &[Worker(|p| load(&p.bytes_written))],
        },
        Metric {
            name: "sandsock_write_buffer_bytes",
            help: "Bytes the host holds unsent in write buffers.",
            kind: Gauge,
            samples: &[Worker(|p| load(&p.buffered))],
        },
        Metric {
            name: "sandsock_timers_armed",
            help: "Guest timers armed.",
            kind: Gauge,
            samples: &[Worker(|p| load(&p.timers))],
        },
        Metric {
            name: "sandsock_guest_calls",
            help: "Calls into guest instances (handle).",
            kind: Counter,
            samples: &[Worker(|p| load(&p.calls))],
        },
        Metric {
            name: "sandsock_guest_call_duration_seconds",
            help: "Wall time of a call into a guest instance.",
            kind: Histogram,
            samples: &[WorkerHistogram(|p| p.call_seconds.read())],
        },
        Metric {
            name: "sandsock_guest_call_events",
            help: "Events per call into a guest instance.",
            kind: Histogram,
            samples: &[WorkerHistogram(|p| p.call_events.read())],
        },
        Metric {
            name: "sandsock_guest_traps",
            help: "Guest traps, by cause.",
            kind: Counter,
            samples: &[WorkerBy("cause", |p| {
                TrapCause::ALL
                    .iter()
                    .zip(&p.traps)
                    .map(|(cause, cell)| (cause.label().into(), load(cell)))
                    .collect()
            })],
        },
        Metric {
            name: "sandsock_guest_backoff",
            help: "1 while the serving instance is in crash-loop back-off.",
            kind: Gauge,
            samples: &[Worker(|p| u64::from(p.backing_off.load(Ordering::Relaxed)))],
        },
        Metric {
            name: "sandsock_swaps",
            help: "Swaps done: a new generation serving.",
            kind: Counter,
            samples: &[Worker(|p| load(&p.swaps))],
        },
        Metric {
            name: "sandsock_recycles",
            help: "Shared instances replaced by a fresh one of the same code (--recycle-at-memory, --recycle-after), nothing closed.",
            kind: Counter,
            samples: &[Worker(|p| load(&p.recycles))],
        },
        Metric {
            name: "sandsock_canary_connections_compared",
            help: "Connections a canary compared with no divergence (--swap canary).",
            kind: Counter,
            samples: &[Worker(|p| load(&p.canary[0]))],
        },
        Metric {
            name: "sandsock_canary_divergences",
            help: "Connections whose output from a canary's candidate diverged from the serving generation's.",
            kind: Counter,
            samples: &[Worker(|p| load(&p.canary[1]))],
        },
        Metric {
            name: "sandsock_canary_promotions",
            help: "Candidates a canary promoted to serving.",
            kind: Counter,
            samples: &[Worker(|p| load(&p.canary[2]))],
        },
        Metric {
            name: "sandsock_canary_rejections",
            help: "Candidates a canary rejected (a divergence, a trap, a timeout).",
            kind: Counter,
            samples: &[Worker(|p| load(&p.canary[3]))],
        },
        Metric {
            name: "sandsock_canary_shadow_seconds",
            help: "Time spent in a canary's shadow calls: what trying candidates cost.",
            kind: Counter,
            samples: &[WorkerSeconds(|p| f64::from_bits(load(&p.canary_seconds)))],
        },
        Metric {
            name: "sandsock_swap_duration_seconds",
            help: "A swap's time from trigger to serving.",
            kind: Histogram,
            samples: &[WorkerHistogram(|p| p.swap_seconds.read())],
        },
        Metric {
            name: "sandsock_handoff_snapshots_refused",
            help: "Snapshots a new generation's restore refused at a handoff.",
            kind: Counter,
            samples: &[Worker(|p| load(&p.snapshots_refused))],
        },
        Metric {
            name: "sandsock_reloads_refused",
            help: "Reloads refused: the file could not be read, compiled or fitted to the world (stage=load), or the new guest could not start (stage=start, per worker).",
            kind: Counter,
            samples: &[
                Process(&[("stage", "load")], |s| load(&s.reloads_refused)),
                WorkerBy("stage", |p| vec![("start".into(), load(&p.swaps_refused))]),
            ],
        },
        Metric {
            name: "sandsock_generation",
            help: "The serving generation: its number, the guest's name, its SHA-256 prefix and the contract version it was built for.",
            kind: Info,
            samples: &[WorkerInfo(|p| {
                let serving = p.serving.lock().unwrap_or_else(|e| e.into_inner()).clone();
                vec![
                    ("generation".into(), serving.generation.to_string().into()),
                    ("guest".into(), serving.guest.into()),
                    ("sha256".into(), serving.sha256.into()),
                    ("contract".into(), serving.contract.into()),
                ]
            })],
        },
        Metric {
            name: "sandsock_generations",
            help: "Live generations (serving, and retired ones still holding connections), by the contract version they were built for.",
            kind: Gauge,
            samples: &[WorkerBy("contract", |p| {
                p.generations_by_contract
                    .iter()
                    .zip(Contract::ALL)
                    .map(|(slot, contract)| (contract.version().into(), load(slot)))
                    .collect()
            })],
        },
        Metric {
            name: "sandsock_store_operations",
            help: "Store operations answered (contract 1.1), by operation.",
            kind: Counter,
            samples: &[WorkerBy("op", |p| {
                OP_NAMES
                    .iter()
                    .zip(&p.store_ops)
                    .map(|(name, cell)| ((*name).into(), load(cell)))
                    .collect()
            })],
        },
        Metric {
            name: "sandsock_store_errors",
            help: "Store operations answered with an error, by error (the contract's outcome).",
            kind: Counter,
            samples: &[WorkerBy("error", |p| {
                StoreError::ALL
                    .iter()
                    .zip(&p.store_errors)
                    .map(|(error, cell)| (error.name().into(), load(cell)))
                    .collect()
            })],
        },
        Metric {
            name: "sandsock_store_operation_seconds",
            help: "Time from a store operation's submission to its answer reaching the worker.",
            kind: Histogram,
            samples: &[WorkerHistogram(|p| p.store_seconds.read())],
        },
        Metric {
            name: "sandsock_topic_messages",
            help: "Topic messages for this worker's instances: delivered, or lost (the instance fell behind).",
            kind: Counter,
            samples: &[WorkerBy("outcome", |p| {
                vec![
                    ("delivered".into(), load(&p.topic_messages)),
                    ("lost".into(), load(&p.topic_lost)),
                ]
            })],
        },
        Metric {
            name: "sandsock_topic_messages_unsent",
            help: "Messages published that never reached the remote store's server (it could not be reached): no host heard them.",
            kind: Counter,
            samples: &[ProcessLabelled(|s| {
                let stores = s.store.as_ref()?;
                Some((Vec::new(), stores.unsent_messages()))
            })],
        },
        Metric {
            name: "sandsock_record_connections",
            help: "Connections under --record: recorded from their start, skipped by --record-sample, or cut (recording stopped because the tape writer fell behind).",
            kind: Counter,
            samples: &[ProcessBy("outcome", |s| {
                let stats = s.record.as_ref()?;
                Some(vec![
                    ("recorded".into(), stats.recorded.load(Ordering::Relaxed)),
                    ("skipped".into(), stats.skipped.load(Ordering::Relaxed)),
                    ("cut".into(), stats.cut.load(Ordering::Relaxed)),
                ])
            })],
        },
        Metric {
            name: "sandsock_record_bytes",
            help: "Bytes written into tapes under --record.",
            kind: Counter,
            samples: &[ProcessLabelled(|s| {
                Some((Vec::new(), s.record.as_ref()?.bytes.load(Ordering::Relaxed)))
            })],
        },
        Metric {
            name: "sandsock_record_tapes",
            help: "Tapes of instances that trapped, and tapes removed to keep --record's DIR within --record-max-bytes.",
            kind: Counter,
            samples: &[ProcessBy("event", |s| {
                let stats = s.record.as_ref()?;
                Some(vec![
                    ("trapped".into(), stats.traps.load(Ordering::Relaxed)),
                    ("removed".into(), stats.removed.load(Ordering::Relaxed)),
                ])
            })],
        },
        Metric {
            name: "sandsock_store_up",
            help: "Whether the store can be reached (1) or not (0): only a remote one can be down.",
            kind: Gauge,
            samples: &[ProcessLabelled(|s| {
                let stores = s.store.as_ref()?;
                let labels: Labels = vec![("store".into(), stores.config().kind.label().into())];
                Some((labels, u64::from(stores.unavailable().is_none())))
            })],
        },
        Metric {
            name: "sandsock_store_bytes",
            help: "Bytes (keys and values) the guest's namespace holds, against --store-max-bytes.",
            kind: Gauge,
            samples: &[ProcessLabelled(|s| {
                let stores = s.store.as_ref()?;
                let config = stores.config();
                let labels: Labels = vec![
                    ("namespace".into(), config.namespace.to_string().into()),
                    ("store".into(), config.kind.label().into()),
                ];
                Some((labels, stores.namespace_bytes()))
            })],
        },
        Metric {
            name: "sandsock_retired_generation_connections",
            help: "Connections each older generation still holds (drain).",
            kind: Gauge,
            samples: &[WorkerBy("generation", |p| {
                p.retired()
                    .into_iter()
                    .map(|(generation, conns)| (generation.to_string().into(), conns))
                    .collect()
            })],
        },
    ]
};

impl Scrape {
    /// The workers that have published, with their `worker` label.
    fn live(&self) -> impl Iterator<Item = (Labels, &Published)> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.live.load(Ordering::Relaxed))
            .map(|(id, p)| (vec![("worker".into(), id.to_string().into())], p.as_ref()))
    }

    /// Writes the samples `samples` reads, of a metric of type `kind`.
    fn encode_samples(
        &self,
        family: &mut MetricEncoder,
        kind: MetricType,
        samples: &Samples,
    ) -> Result<(), std::fmt::Error> {
        match *samples {
            Samples::Process(labels, value) => {
                encode_value(&mut family.encode_family(&labels)?, kind, value(self))?
            }
            Samples::ProcessLabelled(read) => {
                if let Some((labels, value)) = read(self) {
                    encode_value(&mut family.encode_family(&labels)?, kind, value)?;
                }
            }
            Samples::ProcessBy(label, read) => {
                for (value, count) in read(self).unwrap_or_default() {
                    let labels: Labels = vec![(label.into(), value)];
                    encode_value(&mut family.encode_family(&labels)?, kind, count)?;
                }
            }
            Samples::Worker(value) => {
                for (labels, p) in self.live() {
                    encode_value(&mut family.encode_family(&labels)?, kind, value(p))?;
                }
            }
            Samples::WorkerSeconds(value) => {
                for (labels, p) in self.live() {
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&value(p), None)?;
                }
            }
            Samples::WorkerBy(label, values) => {
                for (labels, p) in self.live() {
                    for (value, count) in values(p) {
                        let mut labels = labels.clone();
                        labels.push((label.into(), value));
                        encode_value(&mut family.encode_family(&labels)?, kind, count)?;
                    }
                }
            }
            Samples::WorkerHistogram(histogram) => {
                for (labels, p) in self.live() {
                    let (sum, count, buckets) = histogram(p);
                    family
                        .encode_family(&labels)?
                        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                }
            }
            Samples::WorkerInfo(info) => {
                for (mut labels, p) in self.live() {
                    labels.extend(info(p));
                    family.encode_info(&labels)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes one sample's value: a counter's, or a gauge's.
fn encode_value(
    metric: &mut MetricEncoder,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&value, None),
        _ => metric.encode_gauge(&(value as i64)),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for metric in METRICS {
            let mut family =
                encoder.encode_descriptor(metric.name, metric.help, None, metric.kind)?;
            for samples in metric.samples {
                self.encode_samples(&mut family, metric.kind, samples)?;
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
