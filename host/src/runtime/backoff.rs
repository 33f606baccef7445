//! [`Backoff`]: crash-loop back-off for a guest that keeps failing.

use std::time::{Duration, Instant};

/// A crash-looping guest is started again no sooner than this after a failure,
/// doubling up to [`MAX_BACKOFF`], so that it cannot make the host spin.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between two attempts to start a guest that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Two failures closer together than this count as a crash loop.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(1);

/// Delays restarts of a guest that keeps failing: an isolated failure is retried at
/// once; one soon after the guest was allowed to run again waits, twice as long each
/// time, up to a bound.
///
/// "Soon" counts from the end of the last wait, not from the last failure: a guest
/// that fails as soon as it is restarted after a 2 s wait is still looping.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    until: Option<Instant>,
    /// Since when the guest has been allowed to run without failing.
    running_since: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delay: FIRST_BACKOFF,
            until: None,
            running_since: None,
        }
    }
}

impl Backoff {
    /// Records a failure at `now`.
    pub fn failed(&mut self, now: Instant) {
        let looping = self
            .running_since
            .is_some_and(|at| now.saturating_duration_since(at) < CRASH_LOOP_WINDOW);
        if looping {
            let until = now + self.delay;
            self.until = Some(until);
            self.running_since = Some(until);
            self.delay = (self.delay * 2).min(MAX_BACKOFF);
        } else {
            self.delay = FIRST_BACKOFF;
            self.until = None;
            self.running_since = Some(now);
        }
    }

    /// Whether a start may be attempted at `now`.
    pub fn ready(&mut self, now: Instant) -> bool {
        match self.until {
            Some(until) if now < until => false,
            _ => {
                self.until = None;
                true
            }
        }
    }

    /// When a start may be attempted again, while backing off.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// How long until a start may be attempted, from `now`.
    pub fn waiting(&self, now: Instant) -> Duration {
        self.until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_isolated_failure_is_retried_at_once() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        backoff.failed(start);
        assert!(backoff.ready(start));
        backoff.failed(start + 2 * CRASH_LOOP_WINDOW);
        assert!(backoff.ready(start + 2 * CRASH_LOOP_WINDOW));
    }

    #[test]
    fn a_crash_loop_waits_twice_as_long_each_time_up_to_the_bound() {
        let mut now = Instant::now();
        let mut backoff = Backoff::default();
        backoff.failed(now);
        let mut expected = FIRST_BACKOFF;
        for _ in 0..20 {
            now += MS;
            backoff.failed(now);
            assert_eq!(backoff.waiting(now), expected);
            assert!(!backoff.ready(now + expected - MS), "too early");
            assert!(backoff.ready(now + expected));
            now += expected;
            expected = (expected * 2).min(MAX_BACKOFF);
        }
        assert_eq!(expected, MAX_BACKOFF, "the delay stops growing");
    }

    #[test]
    fn a_quiet_spell_resets_the_delay() {
        let mut now = Instant::now();
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            backoff.failed(now);
            now += MS;
        }
        assert!(backoff.waiting(now) > FIRST_BACKOFF);
        now += MAX_BACKOFF + CRASH_LOOP_WINDOW;
        backoff.failed(now);
        assert!(
            backoff.ready(now),
            "an isolated failure after a quiet spell"
        );
        backoff.failed(now + MS);
        assert_eq!(backoff.waiting(now + MS), FIRST_BACKOFF);
    }
}
