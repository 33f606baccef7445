//! One-shot guest timers, keyed by the guest instance and the guest's own id.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::connection::Owner;

/// A timer: the guest instance that armed it, and the guest's id for it.
pub type TimerKey = (Owner, u64);

/// Armed timers. Re-arming or cancelling an id leaves its old heap entry behind;
/// the entry is recognised as stale by its sequence number and skipped when it
/// comes up, which keeps both operations O(log n).
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKey)>>,
    /// The live sequence number of each armed timer.
    armed: HashMap<TimerKey, u64>,
    /// Armed timers per guest instance: the limit is per guest.
    per_owner: HashMap<Owner, usize>,
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

    /// Timers armed by one guest instance.
    pub fn armed_by(&self, owner: Owner) -> usize {
        self.per_owner.get(&owner).copied().unwrap_or(0)
    }

    /// Whether this timer is armed.
    pub fn is_armed(&self, key: TimerKey) -> bool {
        self.armed.contains_key(&key)
    }

    /// Arms `key` to fire at `now + after`, replacing an earlier arming.
    pub fn set(&mut self, key: TimerKey, now: Instant, after: Duration) {
        let at = now
            .checked_add(after)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.next_seq += 1;
        if self.armed.insert(key, self.next_seq).is_none() {
            *self.per_owner.entry(key.0).or_default() += 1;
        }
        self.heap.push(Reverse((at, self.next_seq, key)));
    }

    /// Disarms `key`.
    pub fn cancel(&mut self, key: TimerKey) {
        if self.armed.remove(&key).is_some() {
            self.forget_one(key.0);
        }
        if self.armed.is_empty() {
            self.heap.clear();
        }
    }

    /// Disarms every timer of one guest instance (it trapped, or is gone).
    pub fn clear_owner(&mut self, owner: Owner) {
        if self.per_owner.remove(&owner).is_some() {
            self.armed.retain(|key, _| key.0 != owner);
        }
    }

    /// Gives every timer of `old` to `new`, due at the same time, under the same ids.
    pub fn reassign(&mut self, old: Owner, new: Owner) {
        if !self.per_owner.contains_key(&old) {
            return;
        }
        let moved: Vec<(Instant, u64)> = self
            .heap
            .iter()
            .filter(|Reverse((_, seq, key))| key.0 == old && self.armed.get(key) == Some(seq))
            .map(|Reverse((at, _, key))| (*at, key.1))
            .collect();
        self.clear_owner(old);
        for (at, id) in moved {
            self.next_seq += 1;
            if self.armed.insert((new, id), self.next_seq).is_none() {
                *self.per_owner.entry(new).or_default() += 1;
            }
            self.heap.push(Reverse((at, self.next_seq, (new, id))));
        }
    }

    /// When the earliest armed timer fires.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Calls `fire` with every timer due at `now`, earliest first.
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
            self.forget_one(key.0);
            fire(key);
        }
    }

    fn forget_one(&mut self, owner: Owner) {
        if let Some(count) = self.per_owner.get_mut(&owner) {
            *count -= 1;
            if *count == 0 {
                self.per_owner.remove(&owner);
            }
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
        timers.set((0, 1), start, Duration::from_millis(30));
        timers.set((0, 2), start, Duration::from_millis(10));
        timers.set((0, 3), start, Duration::from_millis(20));
        timers.set((0, 1), start, Duration::from_millis(5)); // re-armed earlier
        timers.cancel((0, 3));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.armed_by(0), 2);
        assert_eq!(
            timers.next_deadline(),
            Some(start + Duration::from_millis(5))
        );

        let mut fired = Vec::new();
        timers.expire(start + Duration::from_millis(50), |key| fired.push(key));
        assert_eq!(fired, [(0, 1), (0, 2)]);
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.armed_by(0), 0);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn owners_are_counted_and_cleared_apart() {
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.set((1, 7), start, Duration::from_millis(5));
        timers.set((2, 7), start, Duration::from_millis(5));
        timers.set((2, 8), start, Duration::from_millis(5));
        assert_eq!((timers.armed_by(1), timers.armed_by(2)), (1, 2));
        timers.clear_owner(2);
        let mut fired = Vec::new();
        timers.expire(start + Duration::from_millis(10), |key| fired.push(key));
        assert_eq!(fired, [(1, 7)]);
    }
}
