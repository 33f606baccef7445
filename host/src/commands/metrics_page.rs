//! What `/metrics` shows ([`Scrape`]): one table of metric families ([`METRICS`]),
//! each row naming where its samples come from: the workers' published counters,
//! or the process's (store, record, upgrades). A new metric is a row.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::record::writer::RecordStats;
use crate::runtime::contracts::Contract;
use crate::shared::metrics::{Published, TrapCause};
use crate::store::{OP_NAMES, StoreError, Stores};
use crate::upgrade::UpgradeStats;

/// One scrape's view of the published metrics.
#[derive(Debug)]
pub struct Scrape {
    /// Each worker's published metrics, in worker order.
    pub workers: Vec<Arc<Published>>,
    /// Reloads the loader refused.
    pub reloads_refused: Arc<AtomicU64>,
    /// `--max-connections`.
    pub max_connections: usize,
    /// The store, when there is one.
    pub store: Option<Arc<Stores>>,
    /// `--record`'s counters, when it records.
    pub record: Option<Arc<RecordStats>>,
    /// Binary upgrades: this process's, and those that led to it.
    pub upgrades: Arc<UpgradeStats>,
}

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

/// The values of one label, each with its count.
type ByLabel = Vec<(Cow<'static, str>, u64)>;

/// The values of one label, each with its seconds.
type SecondsByLabel = Vec<(Cow<'static, str>, f64)>;

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
    /// Seconds (a gauge) for the whole process per value of one label, if any.
    ProcessSecondsBy(&'static str, fn(&Scrape) -> Option<SecondsByLabel>),
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
            name: "sandsock_upgrades",
            help: "Binary upgrades: those that led to this process (succeeded, carried from process to process), and those this process tried that failed (it went on serving).",
            kind: Counter,
            samples: &[ProcessBy("outcome", |s| {
                Some(vec![
                    (
                        "succeeded".into(),
                        s.upgrades.succeeded.load(Ordering::Relaxed),
                    ),
                    ("failed".into(), s.upgrades.failed.load(Ordering::Relaxed)),
                ])
            })],
        },
        Metric {
            name: "sandsock_upgrades_started",
            help: "Binary upgrades this process started (SIGUSR2 or POST /upgrade); those not counted failed in sandsock_upgrades_total are under way, or handed this process's sockets over.",
            kind: Counter,
            samples: &[Process(&[], |s| s.upgrades.started.load(Ordering::Relaxed))],
        },
        Metric {
            name: "sandsock_upgrade_seconds",
            help: "The upgrade that started this process: time from SIGUSR2 (or POST /upgrade) to this process ready (its guest loaded) and serving.",
            kind: Gauge,
            samples: &[ProcessSecondsBy("phase", |s| {
                let ms = |cell: &AtomicU64| cell.load(Ordering::Relaxed) as f64 / 1000.0;
                (s.upgrades.succeeded.load(Ordering::Relaxed) > 0).then(|| {
                    vec![
                        ("ready".into(), ms(&s.upgrades.ready_ms)),
                        ("serving".into(), ms(&s.upgrades.serving_ms)),
                    ]
                })
            })],
        },
        Metric {
            name: "sandsock_upgrade_connections_taken",
            help: "The upgrade that started this process: open connections the old process handed over to it (--upgrade handover).",
            kind: Gauge,
            samples: &[Process(&[], |s| s.upgrades.taken.load(Ordering::Relaxed))],
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
            Samples::ProcessSecondsBy(label, read) => {
                for (value, seconds) in read(self).unwrap_or_default() {
                    let labels: Labels = vec![(label.into(), value)];
                    family.encode_family(&labels)?.encode_gauge(&seconds)?;
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
