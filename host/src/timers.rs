//! One-shot guest timers, keyed by the guest's own ids.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Armed timers. Re-arming or cancelling an id leaves its old heap entry behind;
/// the entry is recognised as stale by its sequence number and skipped when it
/// comes up, which keeps both operations O(log n).
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    /// The live sequence number of each armed id.
    armed: HashMap<u64, u64>,
    next_seq: u64,
}

impl Timers {
    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    /// Whether `id` is armed.
    pub fn is_armed(&self, id: u64) -> bool {
        self.armed.contains_key(&id)
    }

    /// Arms `id` to fire at `now + after`, replacing an earlier arming.
    pub fn set(&mut self, id: u64, now: Instant, after: Duration) {
        let at = now
            .checked_add(after)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.next_seq += 1;
        self.armed.insert(id, self.next_seq);
        self.heap.push(Reverse((at, self.next_seq, id)));
    }

    /// Disarms `id`.
    pub fn cancel(&mut self, id: u64) {
        self.armed.remove(&id);
        if self.armed.is_empty() {
            self.heap.clear();
        }
    }

    /// Disarms every timer.
    pub fn clear(&mut self) {
        self.armed.clear();
        self.heap.clear();
    }

    /// When the earliest armed timer fires.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Calls `fire` with the id of every timer due at `now`, earliest first.
    pub fn expire(&mut self, now: Instant, mut fire: impl FnMut(u64)) {
        loop {
            self.drop_stale();
            match self.heap.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {}
                _ => return,
            }
            let Some(Reverse((_, _, id))) = self.heap.pop() else {
                return;
            };
            self.armed.remove(&id);
            fire(id);
        }
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, seq, id))) = self.heap.peek() {
            if self.armed.get(id) == Some(seq) {
                return;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_honours_rearm_and_cancel() {
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.set(1, start, Duration::from_millis(30));
        timers.set(2, start, Duration::from_millis(10));
        timers.set(3, start, Duration::from_millis(20));
        timers.set(1, start, Duration::from_millis(5)); // re-armed earlier
        timers.cancel(3);
        assert_eq!(timers.len(), 2);
        assert_eq!(
            timers.next_deadline(),
            Some(start + Duration::from_millis(5))
        );

        let mut fired = Vec::new();
        timers.expire(start + Duration::from_millis(50), |id| fired.push(id));
        assert_eq!(fired, [1, 2]);
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_deadline(), None);
    }
}
