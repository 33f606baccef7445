//! A guest's stdout, stderr and `log` lines, turned into host log lines tagged with its
//! name, within a budget.
//!
//! WASI output would otherwise go to an empty sink; this is where a guest's
//! `println!` and its panic messages become visible to the operator. Within its time
//! budget a guest could write tens of megabytes of lines a second, so each instance,
//! and each compiled guest as a whole (a swap loads a new one), has a budget of bytes (a burst, then a steady rate);
//! lines past it are dropped and counted, and a line says how many.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::shared::wit::LogLevel;

/// A line longer than this is logged in pieces: a guest must not make the host
/// buffer without bound by never writing a newline.
const MAX_LINE: usize = 4096;

/// What a logged line costs against a budget besides its text: the record's own
/// timestamp, level, target and guest name.
const LINE_OVERHEAD: usize = 128;

/// Bytes of log one instance may write at once, then per second: enough for a panic
/// message and its context, or a few hundred lines of debugging.
const INSTANCE_BURST: f64 = 64.0 * 1024.0;
const INSTANCE_RATE: f64 = 16.0 * 1024.0;

/// Bytes of log all instances of one compiled guest may write at once, then per second:
/// with an instance per connection, many instances could each use their own budget.
const SHARED_BURST: f64 = 256.0 * 1024.0;
const SHARED_RATE: f64 = 64.0 * 1024.0;

/// How often, at most, a line says how many lines were dropped.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// A token bucket of bytes.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(burst: f64, per_second: f64) -> Self {
        Self {
            tokens: burst,
            burst,
            per_second,
            refilled: Instant::now(),
        }
    }

    /// Adds what has accrued since the last refill, up to the burst.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled = now;
    }

    /// Takes `cost` bytes if the bucket holds them.
    #[cfg(test)]
    fn take(&mut self, cost: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// The log budget of all instances of one compiled guest, and the lines they dropped.
///
/// Dropped lines are counted here, for the compiled guest as a whole, and reported in one
/// line at most once per [`DROP_REPORT_EVERY`]: before the next line admitted, or from
/// the loop's tick ([`Tenants`](crate::swap::tenants::Tenants) keeps the budgets with a
/// count waiting), so that a guest printing one line too many per call cannot turn
/// each call into a report.
#[derive(Debug)]
pub struct GuestBudget {
    guest: Arc<str>,
    shared: Mutex<Shared>,
    /// Lines dropped and not reported yet: an atomic, so that the loop can see after
    /// a call whether there are any without taking the lock.
    dropped: AtomicU64,
}

/// What the instances of a compiled guest share: its bucket, and when it last reported.
#[derive(Debug)]
struct Shared {
    bucket: Bucket,
    reported: Option<Instant>,
}

impl GuestBudget {
    /// The budget of the compiled guest named `guest`.
    pub fn new(guest: Arc<str>) -> Self {
        Self {
            guest,
            shared: Mutex::new(Shared {
                bucket: Bucket::new(SHARED_BURST, SHARED_RATE),
                reported: None,
            }),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a line costing `cost` may be logged now by the instance whose own
    /// bucket is `instance`: only if both buckets hold it, and then both pay. Says
    /// first how many lines were dropped before it, if that is due.
    fn admit(&self, instance: &mut Bucket, cost: f64, now: Instant) -> bool {
        let mut shared = self.lock();
        instance.refill(now);
        shared.bucket.refill(now);
        if instance.tokens < cost || shared.bucket.tokens < cost {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        instance.tokens -= cost;
        shared.bucket.tokens -= cost;
        self.report_if_due(&mut shared, now);
        true
    }

    /// Whether lines were dropped and not reported yet: one atomic load, for after
    /// each call.
    pub fn has_dropped(&self) -> bool {
        self.dropped.load(Ordering::Relaxed) > 0
    }

    /// After a call: reports the lines dropped if that is due, and says when the
    /// rest is due if some are left waiting (an atomic load when none were dropped).
    pub fn report_due(&self, now: Instant) -> Option<Instant> {
        if self.dropped.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut shared = self.lock();
        self.report_if_due(&mut shared, now)
    }

    /// Reports unless a report went out less than [`DROP_REPORT_EVERY`] ago; then
    /// says when the next is due.
    fn report_if_due(&self, shared: &mut Shared, now: Instant) -> Option<Instant> {
        if let Some(at) = shared.reported {
            let due = at + DROP_REPORT_EVERY;
            if now < due {
                return (self.dropped.load(Ordering::Relaxed) > 0).then_some(due);
            }
        }
        if self.report() {
            shared.reported = Some(now);
        }
        None
    }

    /// Logs how many lines were dropped since the last report, if any.
    fn report(&self) -> bool {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return false;
        }
        let guest = &*self.guest;
        tracing::warn!(
            target: "guest",
            guest,
            dropped,
            "guest output: {dropped} line(s) dropped, past its budget of log bytes"
        );
        true
    }
}

impl Drop for GuestBudget {
    /// The last count, when the compiled guest's last instance and record are gone.
    fn drop(&mut self) {
        self.report();
    }
}

/// One instance's budget, shared by its stdout and stderr.
#[derive(Debug)]
struct Budget {
    bucket: Bucket,
    shared: Arc<GuestBudget>,
}

impl Budget {
    /// Whether a line of `len` bytes may be logged now.
    fn admit(&mut self, len: usize) -> bool {
        let cost = (len + LINE_OVERHEAD) as f64;
        self.shared.admit(&mut self.bucket, cost, Instant::now())
    }
}

/// Which of the guest's streams.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// Logged at info level.
    Stdout,
    /// Logged at warn level: it is where panics go.
    Stderr,
}

/// A guest output stream that logs each line it receives, within the instance's and
/// the compiled guest's budgets.
#[derive(Clone, Debug)]
pub struct GuestLog {
    guest: Arc<str>,
    stream: Stream,
    budget: Arc<Mutex<Budget>>,
}

impl GuestLog {
    /// The stdout and stderr sinks of one instance of the guest named `guest`, whose
    /// compiled guest's budget is `shared`.
    pub fn pair(guest: Arc<str>, shared: Arc<GuestBudget>) -> (Self, Self) {
        let budget = Arc::new(Mutex::new(Budget {
            bucket: Bucket::new(INSTANCE_BURST, INSTANCE_RATE),
            shared,
        }));
        let sink = |stream| Self {
            guest: guest.clone(),
            stream,
            budget: budget.clone(),
        };
        (sink(Stream::Stdout), sink(Stream::Stderr))
    }

    /// Logs `text` (cut at [`MAX_LINE`]) at `level`, if the budget admits it: the
    /// `log` import's way in, beside stdout and stderr. A line the log's filter
    /// leaves out costs nothing.
    pub fn line(&self, level: LogLevel, text: &str) {
        let enabled = match level {
            LogLevel::Error => tracing::enabled!(target: "guest", tracing::Level::ERROR),
            LogLevel::Warn => tracing::enabled!(target: "guest", tracing::Level::WARN),
            LogLevel::Info => tracing::enabled!(target: "guest", tracing::Level::INFO),
            LogLevel::Debug => tracing::enabled!(target: "guest", tracing::Level::DEBUG),
            LogLevel::Trace => tracing::enabled!(target: "guest", tracing::Level::TRACE),
        };
        if !enabled {
            return;
        }
        let mut end = text.len().min(MAX_LINE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text[..end];
        if !self.admit(text.len()) {
            return;
        }
        let guest = &*self.guest;
        match level {
            LogLevel::Error => tracing::error!(target: "guest", guest, "{text}"),
            LogLevel::Warn => tracing::warn!(target: "guest", guest, "{text}"),
            LogLevel::Info => tracing::info!(target: "guest", guest, "{text}"),
            LogLevel::Debug => tracing::debug!(target: "guest", guest, "{text}"),
            LogLevel::Trace => tracing::trace!(target: "guest", guest, "{text}"),
        }
    }

    /// Whether a line of `len` bytes may be logged now, against the instance's and
    /// the compiled guest's budgets.
    fn admit(&self, len: usize) -> bool {
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(len)
    }

    fn writer(&self) -> LineWriter {
        LineWriter {
            log: self.clone(),
            line: Vec::new(),
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

/// The line a Rust runtime (a Rust guest's, or the one under a JavaScript or Python
/// guest's interpreter) prints after a panic message. It is dropped, at no cost to the
/// budget: the host logs the guest's backtrace with the trap itself, and no one can
/// set a guest's environment.
const BACKTRACE_HINT: &[u8] = b"note: run with `RUST_BACKTRACE=1`";

/// Collects bytes into lines and logs each complete one.
struct LineWriter {
    log: GuestLog,
    line: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() >= MAX_LINE {
            self.emit();
        }
    }

    fn emit(&mut self) {
        if self.line.starts_with(BACKTRACE_HINT) {
            self.line.clear();
            return;
        }
        if !self.log.admit(self.line.len()) {
            self.line.clear();
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches('\r');
        let guest = &*self.log.guest;
        match self.log.stream {
            Stream::Stdout => tracing::info!(target: "guest", guest, "{text}"),
            Stream::Stderr => tracing::warn!(target: "guest", guest, "{text}"),
        }
        self.line.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(100.0, 10.0);
        assert!(bucket.take(60.0, start));
        assert!(!bucket.take(60.0, start), "past the burst");
        assert!(bucket.take(40.0, start));
        assert!(!bucket.take(5.0, start));
        assert!(
            bucket.take(5.0, start + Duration::from_millis(500)),
            "5 bytes refilled"
        );
        let mut full = Bucket::new(100.0, 10.0);
        assert!(
            !full.take(101.0, start + Duration::from_secs(3600)),
            "never past the burst"
        );
    }

    #[test]
    fn an_instance_and_its_compiled_guest_share_the_limits() {
        let shared = Arc::new(GuestBudget::new("g".into()));
        let (stdout, _stderr) = GuestLog::pair("g".into(), shared.clone());
        let mut budget = stdout.budget.lock().unwrap();
        let line = 1024 - LINE_OVERHEAD;
        let admitted = (0..200).filter(|_| budget.admit(line)).count();
        assert_eq!(admitted, 64, "the instance's burst of 64 KiB");
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 136);
        drop(budget);
        let (other, _) = GuestLog::pair("g".into(), shared.clone());
        let mut other = other.budget.lock().unwrap();
        let admitted = (0..1000).filter(|_| other.admit(line)).count();
        assert_eq!(admitted, 64, "another instance has its own burst");
        let mut admitted = 0;
        for _ in 0..3 {
            let (more, _) = GuestLog::pair("g".into(), shared.clone());
            let mut more = more.budget.lock().unwrap();
            admitted += (0..1000).filter(|_| more.admit(line)).count();
        }
        // The compiled guest's 256 KiB: 128 KiB left for three more instances (a line
        // more if the test ran slowly enough for 1 KiB to accrue at 64 KiB/s).
        assert!((128..=129).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_line_the_shared_budget_refuses_costs_the_instance_nothing() {
        let shared = Arc::new(GuestBudget::new("g".into()));
        let now = Instant::now();
        let mut instance = Bucket::new(INSTANCE_BURST, 0.0);
        let mut greedy = Bucket::new(SHARED_BURST, 0.0);
        assert!(shared.admit(&mut greedy, SHARED_BURST, now));
        assert!(!shared.admit(&mut instance, 100.0, now));
        assert_eq!(
            instance.tokens, INSTANCE_BURST,
            "not charged for a dropped line"
        );
    }

    #[test]
    fn dropped_lines_are_reported_at_most_once_per_interval() {
        let shared = GuestBudget::new("g".into());
        let start = Instant::now();
        assert_eq!(shared.report_due(start), None, "nothing dropped");
        shared.dropped.store(5, Ordering::Relaxed);
        assert_eq!(shared.report_due(start), None, "the first report goes out");
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 0);
        shared.dropped.store(3, Ordering::Relaxed);
        let half = start + DROP_REPORT_EVERY / 2;
        assert_eq!(
            shared.report_due(half),
            Some(start + DROP_REPORT_EVERY),
            "too soon: waits, and says until when"
        );
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 3, "kept");
        assert_eq!(shared.report_due(start + DROP_REPORT_EVERY), None);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 0, "reported");
    }
}
