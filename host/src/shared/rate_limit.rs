//! A log line that could repeat per connection (a flood, a crash loop) is let through
//! at most once per interval, so that the log cannot become the next flood.

use std::time::{Duration, Instant};

/// Lets one event through per interval.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
}

impl RateLimit {
    /// At most one per `every`.
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether this occurrence should be logged.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

impl Default for RateLimit {
    /// Once a second.
    fn default() -> Self {
        Self::new(Duration::from_secs(1))
    }
}
