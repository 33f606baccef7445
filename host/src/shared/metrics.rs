//! What the admin listener reports: counters each worker keeps as it goes, and their
//! published copy, which the admin thread reads.
//!
//! The hot path gains no lock and no syscall: each part of a worker (its `Net`, its
//! tenants, its generations) counts in plain integers that only the worker's thread
//! touches, and once per turn, when `--admin` is on, the loop stores them into the
//! worker's [`Published`] copy with relaxed atomic stores (no read-modify-write, no
//! lock). The guest's name and digest, which change only at a swap, sit behind a
//! mutex taken at swaps and scrapes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds of the guest call duration histogram, in seconds: from a few
/// microseconds (an empty batch) to the longest `--event-timeout` worth telling apart.
pub const CALL_SECONDS: [f64; 14] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0,
];

/// Bucket bounds of the events-per-call histogram.
pub const CALL_EVENTS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Bucket bounds of the swap duration histogram (trigger to serving), in seconds.
pub const SWAP_SECONDS: [f64; 10] = [1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0, 10.0];

/// Bucket bounds of the store's answer time (an operation submitted to its answer
/// handed to the worker), in seconds: from the memory backend's next turn to a
/// remote store's timeout.
pub const STORE_SECONDS: [f64; 12] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 5e-2, 0.25, 1.0,
];

/// Kinds of store operation counted (the store's `OP_NAMES`).
pub const STORE_OPS: usize = 10;

/// Kinds of store error counted (the store's `StoreError::ALL`).
pub const STORE_ERRORS: usize = 9;

/// Why a guest trapped, as the metric's `cause` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapCause {
    /// Past `--event-timeout`.
    Timeout,
    /// A memory growth past `--max-memory` was refused.
    OutOfMemory,
    /// Past `--fuel`.
    OutOfFuel,
    /// The guest's stack ran out.
    StackOverflow,
    /// `unreachable` executed: a panic or an abort.
    Unreachable,
    /// Anything else.
    Other,
}

impl TrapCause {
    /// Every cause, in label order.
    pub const ALL: [TrapCause; 6] = [
        TrapCause::Timeout,
        TrapCause::OutOfMemory,
        TrapCause::OutOfFuel,
        TrapCause::StackOverflow,
        TrapCause::Unreachable,
        TrapCause::Other,
    ];

    /// The `cause` label.
    pub fn label(self) -> &'static str {
        match self {
            TrapCause::Timeout => "timeout",
            TrapCause::OutOfMemory => "out_of_memory",
            TrapCause::OutOfFuel => "out_of_fuel",
            TrapCause::StackOverflow => "stack_overflow",
            TrapCause::Unreachable => "unreachable",
            TrapCause::Other => "other",
        }
    }
}

/// A histogram a worker fills: counts per bucket, past the last bound, and the sum.
#[derive(Clone, Debug)]
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    counts: [u64; N],
    overflow: u64,
    sum: f64,
}

impl<const N: usize> Histogram<N> {
    /// Empty, with these bucket bounds.
    pub fn new(bounds: &'static [f64; N]) -> Self {
        Self {
            bounds,
            counts: [0; N],
            overflow: 0,
            sum: 0.0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, value: f64) {
        self.sum += value;
        match self.bounds.iter().position(|&bound| value <= bound) {
            Some(bucket) => self.counts[bucket] += 1,
            None => self.overflow += 1,
        }
    }

    fn publish(&self, to: &PublishedHistogram<N>) {
        for (cell, &count) in to.counts.iter().zip(&self.counts) {
            cell.store(count, Ordering::Relaxed);
        }
        to.overflow.store(self.overflow, Ordering::Relaxed);
        to.sum.store(self.sum.to_bits(), Ordering::Relaxed);
    }
}

/// The published copy of a [`Histogram`].
#[derive(Debug)]
pub struct PublishedHistogram<const N: usize> {
    /// The bucket bounds.
    pub bounds: &'static [f64; N],
    counts: [AtomicU64; N],
    overflow: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> PublishedHistogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        Self {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// The sum, the count, and the count in each bucket (not cumulative: the
    /// encoder adds them up), by upper bound, ending with the `+Inf` bucket that
    /// Prometheus requires (the encoder names a bound of infinity so).
    pub fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(bound, cell)| (*bound, cell.load(Ordering::Relaxed)))
            .chain([(f64::INFINITY, self.overflow.load(Ordering::Relaxed))])
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum::<u64>();
        (
            f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count,
            buckets,
        )
    }
}

/// What a worker's `Net` counts.
#[derive(Clone, Debug, Default)]
pub struct NetCounters {
    /// Connections accepted from a listener.
    pub accepted: u64,
    /// Connections accepted and closed at once at `--max-connections`.
    pub refused_at_limit: u64,
    /// Connections accepted and closed at once while the guest was backing off.
    pub refused_guest_down: u64,
    /// Bytes the guest read from its connections.
    pub bytes_read: u64,
    /// Bytes the guest wrote to its connections (taken by the host).
    pub bytes_written: u64,
    /// TLS handshakes done.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed: a bad client hello or record, or a peer that left.
    pub tls_handshakes_failed: u64,
    /// TLS handshakes not done within `--tls-handshake-timeout`.
    pub tls_handshakes_timed_out: u64,
}

/// The gauges a worker's `Net` reports, read off its state at publishing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetGauges {
    /// Connections the worker holds, closing ones included.
    pub open: u64,
    /// Bytes held in the worker's write buffers.
    pub buffered: u64,
    /// Timers armed by the worker's guest instances.
    pub timers: u64,
}

/// What a worker's tenants count.
#[derive(Clone, Debug)]
pub struct GuestCounters {
    /// Calls into guest instances (`handle`).
    pub calls: u64,
    /// Their wall time, in seconds.
    pub call_seconds: Histogram<14>,
    /// Events per call.
    pub call_events: Histogram<11>,
    /// Traps, by cause (in [`TrapCause::ALL`] order).
    pub traps: [u64; 6],
    /// Whether the serving instance is in crash-loop back-off.
    pub backing_off: bool,
}

impl Default for GuestCounters {
    fn default() -> Self {
        Self {
            calls: 0,
            call_seconds: Histogram::new(&CALL_SECONDS),
            call_events: Histogram::new(&CALL_EVENTS),
            traps: [0; 6],
            backing_off: false,
        }
    }
}

/// What a canary's counters add up to, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CanaryCounters {
    /// Connections compared with no divergence.
    pub compared: u64,
    /// Connections whose outputs diverged.
    pub divergences: u64,
    /// Candidates promoted.
    pub promotions: u64,
    /// Candidates rejected (a divergence, a trap, a timeout).
    pub rejections: u64,
    /// Time spent in shadow calls, in seconds.
    pub seconds: f64,
}

/// What a worker's handler counts of its instances' store operations and topic
/// messages, as their answers arrive.
#[derive(Clone, Debug)]
pub struct StoreCounters {
    /// Operations answered, by kind.
    pub ops: [u64; STORE_OPS],
    /// Operations answered with an error, by error.
    pub errors: [u64; STORE_ERRORS],
    /// Submitted to answered, in seconds.
    pub seconds: Histogram<12>,
    /// Topic messages delivered to this worker's instances.
    pub messages: u64,
    /// Topic messages dropped for this worker's instances (they fell behind).
    pub lost: u64,
}

impl Default for StoreCounters {
    fn default() -> Self {
        Self {
            ops: [0; STORE_OPS],
            errors: [0; STORE_ERRORS],
            seconds: Histogram::new(&STORE_SECONDS),
            messages: 0,
            lost: 0,
        }
    }
}

/// What a worker's generations count.
#[derive(Clone, Debug)]
pub struct SwapCounters {
    /// Swaps done (a new generation serving).
    pub swaps: u64,
    /// Swaps refused by this worker (the new guest could not start).
    pub refused: u64,
    /// Trigger to serving, in seconds.
    pub swap_seconds: Histogram<10>,
    /// Snapshots a new generation refused at a handoff (`restore` failed).
    pub snapshots_refused: u64,
    /// Shared instances replaced by fresh ones (`--recycle-at-memory`,
    /// `--recycle-after`); not counted as swaps.
    pub recycles: u64,
}

impl Default for SwapCounters {
    fn default() -> Self {
        Self {
            swaps: 0,
            refused: 0,
            recycles: 0,
            swap_seconds: Histogram::new(&SWAP_SECONDS),
            snapshots_refused: 0,
        }
    }
}

/// The serving generation, for the info metric.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    /// Its number.
    pub generation: u32,
    /// The guest's name.
    pub guest: String,
    /// The first 12 hex digits of its SHA-256.
    pub sha256: String,
    /// The version of the contract it was built for.
    pub contract: &'static str,
}

/// Live generations counted per contract version, one slot per version the host
/// serves (in the order of `runtime::contracts::Contract::ALL`), with room to grow.
pub const CONTRACT_SLOTS: usize = 8;

/// Retired generations still holding connections, reported one per slot.
pub const RETIRED_SLOTS: usize = 8;

/// One worker's published metrics: written by the worker, read by the admin thread.
#[derive(Debug)]
pub struct Published {
    /// Set once the worker has published: a worker that never did reports nothing.
    pub live: AtomicBool,
    /// Set during a shutdown.
    pub stopping: AtomicBool,
    /// See [`StoreCounters::ops`].
    pub store_ops: [AtomicU64; STORE_OPS],
    /// See [`StoreCounters::errors`].
    pub store_errors: [AtomicU64; STORE_ERRORS],
    /// See [`StoreCounters::seconds`].
    pub store_seconds: PublishedHistogram<12>,
    /// See [`StoreCounters::messages`].
    pub topic_messages: AtomicU64,
    /// See [`StoreCounters::lost`].
    pub topic_lost: AtomicU64,
    /// [`NetCounters`] and [`NetGauges`], field by field.
    pub accepted: AtomicU64,
    /// See [`NetCounters::refused_at_limit`].
    pub refused_at_limit: AtomicU64,
    /// See [`NetCounters::refused_guest_down`].
    pub refused_guest_down: AtomicU64,
    /// See [`NetCounters::bytes_read`].
    pub bytes_read: AtomicU64,
    /// See [`NetCounters::bytes_written`].
    pub bytes_written: AtomicU64,
    /// See [`NetCounters::tls_handshakes`].
    pub tls_handshakes: AtomicU64,
    /// See [`NetCounters::tls_handshakes_failed`].
    pub tls_handshakes_failed: AtomicU64,
    /// See [`NetCounters::tls_handshakes_timed_out`].
    pub tls_handshakes_timed_out: AtomicU64,
    /// See [`NetGauges::open`].
    pub open: AtomicU64,
    /// See [`NetGauges::buffered`].
    pub buffered: AtomicU64,
    /// See [`NetGauges::timers`].
    pub timers: AtomicU64,
    /// See [`GuestCounters::calls`].
    pub calls: AtomicU64,
    /// See [`GuestCounters::call_seconds`].
    pub call_seconds: PublishedHistogram<14>,
    /// See [`GuestCounters::call_events`].
    pub call_events: PublishedHistogram<11>,
    /// See [`GuestCounters::traps`].
    pub traps: [AtomicU64; 6],
    /// See [`GuestCounters::backing_off`].
    pub backing_off: AtomicBool,
    /// See [`SwapCounters::swaps`].
    pub swaps: AtomicU64,
    /// See [`SwapCounters::refused`].
    pub swaps_refused: AtomicU64,
    /// See [`SwapCounters::swap_seconds`].
    pub swap_seconds: PublishedHistogram<10>,
    /// See [`SwapCounters::snapshots_refused`].
    pub snapshots_refused: AtomicU64,
    /// See [`SwapCounters::recycles`].
    pub recycles: AtomicU64,
    /// See [`CanaryCounters`]: compared, divergences, promotions, rejections.
    pub canary: [AtomicU64; 4],
    /// See [`CanaryCounters::seconds`], as `f64` bits.
    pub canary_seconds: AtomicU64,
    /// Retired generations still holding connections: `generation << 32 |
    /// connections` per slot, 0 for an empty slot.
    pub retired: [AtomicU64; RETIRED_SLOTS],
    /// Live generations (serving and retired) per contract version: see
    /// [`CONTRACT_SLOTS`].
    pub generations_by_contract: [AtomicU64; CONTRACT_SLOTS],
    /// The serving generation: written at swaps, read at scrapes.
    pub serving: Mutex<Serving>,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            live: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused_at_limit: AtomicU64::new(0),
            store_ops: std::array::from_fn(|_| AtomicU64::new(0)),
            store_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            store_seconds: PublishedHistogram::new(&STORE_SECONDS),
            topic_messages: AtomicU64::new(0),
            topic_lost: AtomicU64::new(0),
            refused_guest_down: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            tls_handshakes: AtomicU64::new(0),
            tls_handshakes_failed: AtomicU64::new(0),
            tls_handshakes_timed_out: AtomicU64::new(0),
            open: AtomicU64::new(0),
            buffered: AtomicU64::new(0),
            timers: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            call_seconds: PublishedHistogram::new(&CALL_SECONDS),
            call_events: PublishedHistogram::new(&CALL_EVENTS),
            traps: std::array::from_fn(|_| AtomicU64::new(0)),
            backing_off: AtomicBool::new(false),
            swaps: AtomicU64::new(0),
            swaps_refused: AtomicU64::new(0),
            swap_seconds: PublishedHistogram::new(&SWAP_SECONDS),
            snapshots_refused: AtomicU64::new(0),
            recycles: AtomicU64::new(0),
            canary: std::array::from_fn(|_| AtomicU64::new(0)),
            canary_seconds: AtomicU64::new(0),
            retired: std::array::from_fn(|_| AtomicU64::new(0)),
            generations_by_contract: std::array::from_fn(|_| AtomicU64::new(0)),
            serving: Mutex::new(Serving::default()),
        }
    }
}

impl Published {
    /// Stores a `Net`'s counters and gauges.
    pub fn net(&self, counters: &NetCounters, gauges: NetGauges) {
        let store = |cell: &AtomicU64, value: u64| cell.store(value, Ordering::Relaxed);
        store(&self.accepted, counters.accepted);
        store(&self.refused_at_limit, counters.refused_at_limit);
        store(&self.refused_guest_down, counters.refused_guest_down);
        store(&self.bytes_read, counters.bytes_read);
        store(&self.bytes_written, counters.bytes_written);
        store(&self.tls_handshakes, counters.tls_handshakes);
        store(&self.tls_handshakes_failed, counters.tls_handshakes_failed);
        store(
            &self.tls_handshakes_timed_out,
            counters.tls_handshakes_timed_out,
        );
        store(&self.open, gauges.open);
        store(&self.buffered, gauges.buffered);
        store(&self.timers, gauges.timers);
        self.live.store(true, Ordering::Relaxed);
    }

    /// Stores the tenants' counters.
    pub fn guest(&self, counters: &GuestCounters) {
        self.calls.store(counters.calls, Ordering::Relaxed);
        counters.call_seconds.publish(&self.call_seconds);
        counters.call_events.publish(&self.call_events);
        for (cell, &count) in self.traps.iter().zip(&counters.traps) {
            cell.store(count, Ordering::Relaxed);
        }
        self.backing_off
            .store(counters.backing_off, Ordering::Relaxed);
    }

    /// Stores the generations' counters, and the connections each retired generation
    /// holds (at most [`RETIRED_SLOTS`] of them).
    pub fn swap(&self, counters: &SwapCounters, retired: impl Iterator<Item = (u32, u64)>) {
        self.swaps.store(counters.swaps, Ordering::Relaxed);
        self.swaps_refused
            .store(counters.refused, Ordering::Relaxed);
        counters.swap_seconds.publish(&self.swap_seconds);
        self.snapshots_refused
            .store(counters.snapshots_refused, Ordering::Relaxed);
        self.recycles.store(counters.recycles, Ordering::Relaxed);
        let mut retired = retired;
        for slot in &self.retired {
            let packed = retired.next().map_or(0, |(generation, conns)| {
                u64::from(generation) << 32 | conns.min(u64::from(u32::MAX))
            });
            slot.store(packed, Ordering::Relaxed);
        }
    }

    /// Stores what the handler counted of the store and topics.
    pub fn store(&self, counters: &StoreCounters) {
        for (cell, &count) in self.store_ops.iter().zip(&counters.ops) {
            cell.store(count, Ordering::Relaxed);
        }
        for (cell, &count) in self.store_errors.iter().zip(&counters.errors) {
            cell.store(count, Ordering::Relaxed);
        }
        counters.seconds.publish(&self.store_seconds);
        self.topic_messages
            .store(counters.messages, Ordering::Relaxed);
        self.topic_lost.store(counters.lost, Ordering::Relaxed);
    }

    /// Stores the canary's counters.
    pub fn canary(&self, counters: &CanaryCounters) {
        let values = [
            counters.compared,
            counters.divergences,
            counters.promotions,
            counters.rejections,
        ];
        for (cell, value) in self.canary.iter().zip(values) {
            cell.store(value, Ordering::Relaxed);
        }
        self.canary_seconds
            .store(counters.seconds.to_bits(), Ordering::Relaxed);
    }

    /// Says which generation serves now (at a swap).
    pub fn set_serving(&self, serving: Serving) {
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = serving;
    }

    /// The retired generations still holding connections, and how many each holds.
    ///
    /// Slots are read one by one while the worker may be repacking them (a
    /// generation dropped shifts the others down), so a generation can be seen in
    /// two slots: it is reported once, as two series with the same labels would
    /// make the scrape invalid.
    pub fn retired(&self) -> Vec<(u32, u64)> {
        let mut retired: Vec<(u32, u64)> = Vec::with_capacity(RETIRED_SLOTS);
        for slot in &self.retired {
            let packed = slot.load(Ordering::Relaxed);
            let generation = (packed >> 32) as u32;
            if packed != 0 && !retired.iter().any(|&(g, _)| g == generation) {
                retired.push((generation, packed & u64::from(u32::MAX)));
            }
        }
        retired
    }
}

/// Milliseconds of a duration, for a log line's `took_ms`.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_published_per_bucket() {
        let mut histogram = Histogram::new(&CALL_EVENTS);
        for events in [1.0, 1.0, 3.0, 5000.0] {
            histogram.observe(events);
        }
        let published = PublishedHistogram::new(&CALL_EVENTS);
        histogram.publish(&published);
        let (sum, count, buckets) = published.read();
        assert_eq!((sum, count), (5005.0, 4));
        assert_eq!(buckets[0], (1.0, 2));
        assert_eq!(buckets[2], (4.0, 1), "3 events fall in the 4 bucket");
        assert_eq!(buckets[buckets.len() - 2], (1024.0, 0));
        assert_eq!(
            buckets.last(),
            Some(&(f64::INFINITY, 1)),
            "5000 is past every bound"
        );
    }

    #[test]
    fn retired_generations_are_packed_per_slot() {
        let published = Published::default();
        published.swap(&SwapCounters::default(), [(2, 5), (3, 1)].into_iter());
        assert_eq!(published.retired(), [(2, 5), (3, 1)]);
        published.swap(&SwapCounters::default(), std::iter::empty());
        assert!(published.retired().is_empty(), "slots are emptied");
        // Half-way through a repack: generation 3 moved down, not yet cleared above.
        published.retired[0].store(3 << 32 | 1, Ordering::Relaxed);
        published.retired[1].store(3 << 32 | 1, Ordering::Relaxed);
        assert_eq!(published.retired(), [(3, 1)], "once");
    }
}
