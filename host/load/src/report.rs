//! [`LoadReport`]: what a run measured, and the tallies it is made from.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;

/// How many error messages a report keeps; the rest are only counted.
const KEPT_ERRORS: usize = 5;

/// What a run measured.
pub struct LoadReport {
    /// Requests answered correctly.
    pub requests: u64,
    /// Requests that failed: wrong answer, reset, early EOF, connect error, or in flight at the timeout.
    pub errors: u64,
    /// Bytes written to the server.
    pub bytes_sent: u64,
    /// Bytes read from the server.
    pub bytes_received: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of the correct requests, in microseconds: from the request's first write to
    /// its complete response, or with `--close` from the start of its connect.
    pub latency: Histogram<u64>,
    /// Requests asked for (`-n`); `planned - requests - errors` were never sent (timeout).
    pub planned: u64,
    /// Whether the run was stopped by `--timeout`.
    pub timed_out: bool,
    /// The first few error messages, each naming the connection and where its request stood.
    pub first_errors: Vec<String>,
}

impl LoadReport {
    /// Correct requests per second of wall time.
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// Whether every planned request was answered correctly.
    pub fn complete(&self) -> bool {
        self.errors == 0 && self.requests == self.planned
    }

    /// Requests never sent because the run stopped at the timeout.
    pub fn not_sent(&self) -> u64 {
        self.planned.saturating_sub(self.requests + self.errors)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "requests/s:     {:.0} ({:.2}s)",
            self.requests_per_sec(),
            self.elapsed.as_secs_f64()
        )?;
        write!(f, "requests ok:    {} of {}", self.requests, self.planned)?;
        match self.not_sent() {
            0 => writeln!(f)?,
            n => writeln!(f, " ({n} never sent)")?,
        }
        writeln!(f, "errors:         {}", self.errors)?;
        writeln!(f, "bytes sent:     {}", self.bytes_sent)?;
        writeln!(f, "bytes received: {}", self.bytes_received)?;
        if self.latency.is_empty() {
            write!(f, "latency:        none measured")?;
        } else {
            let at = |q| Micros(self.latency.value_at_quantile(q));
            write!(
                f,
                "latency:        p50 {}  p90 {}  p99 {}  max {}",
                at(0.5),
                at(0.9),
                at(0.99),
                Micros(self.latency.max())
            )?;
        }
        if self.timed_out {
            write!(f, "\nstopped at the timeout")?;
        }
        if !self.first_errors.is_empty() {
            write!(f, "\nfirst errors:")?;
            for message in &self.first_errors {
                write!(f, "\n  {message}")?;
            }
        }
        Ok(())
    }
}

/// A latency in microseconds, shown in the unit that reads best.
struct Micros(u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            us @ 0..1_000 => write!(f, "{us}µs"),
            us @ 1_000..1_000_000 => write!(f, "{:.2}ms", us as f64 / 1e3),
            us => write!(f, "{:.2}s", us as f64 / 1e6),
        }
    }
}

/// Tallies of the run.
pub(crate) struct Stats {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    latency: Histogram<u64>,
    first_errors: Vec<String>,
}

impl Stats {
    /// Empty tallies; the histogram covers 1µs up to the larger of 60s and the timeout.
    pub(crate) fn new(timeout: Duration) -> anyhow::Result<Self> {
        let high =
            u64::try_from(timeout.max(Duration::from_secs(60)).as_micros()).unwrap_or(u64::MAX);
        Ok(Self {
            ok: 0,
            errors: 0,
            bytes_sent: 0,
            bytes_received: 0,
            latency: Histogram::new_with_bounds(1, high, 3)
                .context("creating the latency histogram")?,
            first_errors: Vec::with_capacity(KEPT_ERRORS),
        })
    }

    pub(crate) fn record_ok(&mut self, latency: Duration) {
        self.ok += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros);
    }

    /// Counts an error; the message is only built while fewer than [`KEPT_ERRORS`] are kept.
    pub(crate) fn record_error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            let message = message();
            tracing::debug!("load: {message}");
            self.first_errors.push(message);
        }
    }

    pub(crate) fn into_report(
        self,
        planned: u64,
        elapsed: Duration,
        timed_out: bool,
    ) -> LoadReport {
        LoadReport {
            requests: self.ok,
            errors: self.errors,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            elapsed,
            latency: self.latency,
            planned,
            timed_out,
            first_errors: self.first_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shows_percentiles_and_errors() {
        let mut stats = Stats::new(Duration::from_secs(1)).unwrap();
        for micros in [100, 200, 300, 5_000] {
            stats.record_ok(Duration::from_micros(micros));
        }
        stats.record_error(|| "conn 0: boom".into());
        let report = stats.into_report(10, Duration::from_secs(2), false);
        assert_eq!(report.requests_per_sec(), 2.0);
        let text = report.to_string();
        assert!(
            text.contains("requests ok:    4 of 10 (5 never sent)"),
            "{text}"
        );
        assert!(text.contains("p50 200µs"), "{text}");
        assert!(text.contains("max 5.00ms"), "{text}");
        assert!(text.contains("conn 0: boom"), "{text}");
    }
}
