//! [`Timers`]: one-shot guest timers, keyed by the guest instance and the guest's own id.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use super::owners::Owner;

/// A timer: the guest instance that armed it, and the guest's id for it.
pub type TimerKey = (Owner, u64);

/// The longest delay a timer is armed for: today's contract refuses more than a day,
/// 0.1.0's has no maximum (a longer delay fires after a year), and this keeps the
/// arithmetic safe whatever a caller passes (an `Instant` cannot hold `u64::MAX`
/// milliseconds from now).
const MAX_DELAY: Duration = Duration::from_secs(86_400 * 365);

/// Armed timers. Re-arming or cancelling an id leaves its old heap entry behind;
/// the entry is recognised as stale by its sequence number and skipped when it
/// comes up, which keeps both operations O(log n).
///
/// How many timers each owner has is [`Owners`](super::Owners)' to count: every
/// change here says whether a timer was armed or disarmed.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKey)>>,
    /// The live sequence number of each armed timer.
    armed: HashMap<TimerKey, u64>,
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

    /// Whether this timer is armed.
    pub fn is_armed(&self, key: TimerKey) -> bool {
        self.armed.contains_key(&key)
    }

    /// Arms `key` to fire at `now + after`, replacing an earlier arming. True if it
    /// was not armed before.
    pub fn set(&mut self, key: TimerKey, now: Instant, after: Duration) -> bool {
        let at = now + after.min(MAX_DELAY);
        self.next_seq += 1;
        let new = self.armed.insert(key, self.next_seq).is_none();
        self.heap.push(Reverse((at, self.next_seq, key)));
        new
    }

    /// Disarms `key`; true if it was armed.
    pub fn cancel(&mut self, key: TimerKey) -> bool {
        let was_armed = self.armed.remove(&key).is_some();
        if self.armed.is_empty() {
            self.heap.clear();
        }
        was_armed
    }

    /// Disarms every timer of one guest instance (it trapped, or is gone), and says
    /// how many there were.
    pub fn clear_owner(&mut self, owner: Owner) -> usize {
        let before = self.armed.len();
        self.armed.retain(|key, _| key.0 != owner);
        before - self.armed.len()
    }

    /// Gives every timer of `old` to `new`, due at the same time, under the same ids,
    /// and says how many moved.
    pub fn reassign(&mut self, old: Owner, new: Owner) -> usize {
        let moved: Vec<(Instant, u64)> = self
            .heap
            .iter()
            .filter(|Reverse((_, seq, key))| key.0 == old && self.armed.get(key) == Some(seq))
            .map(|Reverse((at, _, key))| (*at, key.1))
            .collect();
        self.clear_owner(old);
        for &(at, id) in &moved {
            self.next_seq += 1;
            self.armed.insert((new, id), self.next_seq);
            self.heap.push(Reverse((at, self.next_seq, (new, id))));
        }
        moved.len()
    }

    /// The armed timers of `owner`: its id for each, and when it fires.
    pub fn of_owner(&self, owner: Owner) -> Vec<(u64, Instant)> {
        self.heap
            .iter()
            .filter(|Reverse((_, seq, key))| key.0 == owner && self.armed.get(key) == Some(seq))
            .map(|Reverse((at, _, key))| (key.1, *at))
            .collect()
    }

    /// When the earliest armed timer fires.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Calls `fire` with every timer due at `now`, earliest first; each is disarmed.
    pub fn expire(&mut self, now: Instant, mut fire: impl FnMut(TimerKey)) {
        loop {
            self.drop_stale();
            match self.heap.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {}
                _ => return,
            }
            let Some(Reverse((_, _, key))) = self.heap.pop() else {
                return;
            };
            self.armed.remove(&key);
            fire(key);
        }
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, seq, key))) = self.heap.peek() {
            if self.armed.get(key) == Some(seq) {
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
        assert!(timers.set((0, 1), start, Duration::from_millis(30)));
        assert!(timers.set((0, 2), start, Duration::from_millis(10)));
        assert!(timers.set((0, 3), start, Duration::from_millis(20)));
        assert!(
            !timers.set((0, 1), start, Duration::from_millis(5)),
            "re-armed earlier"
        );
        assert!(timers.cancel((0, 3)));
        assert!(!timers.cancel((0, 3)), "cancelled twice");
        assert_eq!(timers.len(), 2);
        assert_eq!(
            timers.next_deadline(),
            Some(start + Duration::from_millis(5))
        );

        let mut fired = Vec::new();
        timers.expire(start + Duration::from_millis(50), |key| fired.push(key));
        assert_eq!(fired, [(0, 1), (0, 2)]);
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn owners_are_cleared_and_reassigned_apart() {
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.set((1, 7), start, Duration::from_millis(5));
        timers.set((2, 7), start, Duration::from_millis(5));
        timers.set((2, 8), start, Duration::from_millis(6));
        assert_eq!(timers.reassign(2, 3), 2);
        assert!(timers.is_armed((3, 8)) && !timers.is_armed((2, 8)));
        assert_eq!(timers.clear_owner(1), 1);
        let mut fired = Vec::new();
        timers.expire(start + Duration::from_millis(10), |key| fired.push(key));
        assert_eq!(
            fired,
            [(3, 7), (3, 8)],
            "due when they were, under the same ids"
        );
    }

    #[test]
    fn a_delay_past_what_an_instant_holds_is_capped() {
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.set((0, 1), start, Duration::from_millis(u64::MAX));
        assert_eq!(timers.next_deadline(), Some(start + MAX_DELAY));
    }
}
