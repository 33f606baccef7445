//! [`ConnTable`]: a slab whose slot index is the mio token, and whose handles carry a
//! per-slot generation so that a handle is never reused.
//!
//! A handle is `generation << SLOT_BITS | slot`: looking one up is an index and a
//! compare, no hashing, and a stale handle (its slot reused since) is simply unknown.
//! Handles stay below 2^53, so that a JavaScript number holds one exactly: a slot
//! whose generations are used up is retired, never wrapped round. With several
//! workers, each table's generations are those equal to its worker's number modulo
//! the count ([`ConnTable::number_for_worker`]), so no two workers hand out the same
//! handle.

use crate::shared::limits::SLOT_BITS;
use crate::shared::wit::Conn;

/// The largest generation a handle can carry and stay below 2^53.
const MAX_GENERATION: u64 = (1 << (53 - SLOT_BITS)) - 1;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

#[derive(Debug)]
struct Slot<T> {
    /// The generation of the handle that last used (or now uses) this slot.
    generation: u64,
    value: Option<T>,
}

/// Connections (or, in unit tests, anything) by slot, with never-reused handles.
#[derive(Debug)]
pub struct ConnTable<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
    /// A slot's first generation, and the step to its next: 1 and 1 for one
    /// worker; worker `i` of `n` uses `i + 1`, `i + 1 + n`, ...
    first: u64,
    stride: u64,
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            first: 1,
            stride: 1,
        }
    }
}

impl<T> ConnTable<T> {
    /// Numbers handles for worker `worker` of `workers`, so that no other worker's
    /// table hands out the same one. Before the first insert.
    pub fn number_for_worker(&mut self, worker: usize, workers: usize) {
        debug_assert!(self.slots.is_empty(), "numbered before any handle exists");
        let workers = workers.max(1) as u64;
        self.first = worker as u64 % workers + 1;
        self.stride = workers;
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores what `make` builds for a fresh handle, and returns its slot, or `None`
    /// when every slot is taken.
    pub fn insert(&mut self, make: impl FnOnce(Conn) -> T) -> Option<usize> {
        let slot = match self.free.pop() {
            Some(slot) => slot as usize,
            None if self.slots.len() < (1 << SLOT_BITS) => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                self.slots.len() - 1
            }
            None => return None,
        };
        let entry = &mut self.slots[slot];
        entry.generation = if entry.generation == 0 {
            self.first
        } else {
            entry.generation + self.stride
        };
        let id = entry.generation << SLOT_BITS | slot as u64;
        entry.value = Some(make(id));
        self.len += 1;
        Some(slot)
    }

    /// The entry with this handle, if it is still held.
    pub fn get_mut(&mut self, id: Conn) -> Option<&mut T> {
        let entry = self.slots.get_mut(slot_of(id))?;
        if entry.generation != id >> SLOT_BITS {
            return None;
        }
        entry.value.as_mut()
    }

    /// The entry in a slot (the mio token), if any.
    pub fn slot_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.slots.get_mut(slot)?.value.as_mut()
    }

    /// Takes the entry out of its slot. For a connection, dropping it closes the
    /// socket (and removes it from epoll).
    pub fn remove(&mut self, slot: usize) -> Option<T> {
        let entry = self.slots.get_mut(slot)?;
        let value = entry.value.take()?;
        self.len -= 1;
        // A slot whose generations are used up is retired rather than risk a reused handle.
        if entry.generation + self.stride <= MAX_GENERATION {
            self.free.push(slot as u32);
        }
        Some(value)
    }

    /// The generation of each slot's last handle (0: never used), for an upgrade's
    /// new process to go on from: handles the guest still holds, even stale ones,
    /// mean there what they meant here.
    pub fn generations(&self) -> Vec<u64> {
        self.slots.iter().map(|slot| slot.generation).collect()
    }

    /// Rebuilds an empty table from an old process's [`generations`](Self::generations)
    /// and the entries it handed over, each at its handle's slot; the slots left free
    /// go on with their generations, so no handle the old process gave out is
    /// given out again. Fails (changing nothing) on a handle that does not fit.
    pub fn restore(&mut self, generations: &[u64], held: Vec<(Conn, T)>) -> Result<(), String> {
        if !self.slots.is_empty() {
            return Err("the table already holds connections".into());
        }
        if generations.len() > 1 << SLOT_BITS {
            return Err(format!(
                "{} slots, more than a table has",
                generations.len()
            ));
        }
        if let Some(bad) = generations.iter().find(|&&g| g > MAX_GENERATION) {
            return Err(format!("a slot of generation {bad}, past the last"));
        }
        let mut slots: Vec<Slot<T>> = generations
            .iter()
            .map(|&generation| Slot {
                generation,
                value: None,
            })
            .collect();
        let len = held.len();
        for (id, value) in held {
            let slot = slots
                .get_mut(slot_of(id))
                .filter(|slot| slot.generation == id >> SLOT_BITS && slot.value.is_none())
                .ok_or_else(|| format!("handle {id} does not fit the slots handed over"))?;
            slot.value = Some(value);
        }
        // Popped from the end: the lowest free slot is used first, as in a fresh table.
        self.free = (0..slots.len())
            .rev()
            .filter(|&i| {
                let slot = &slots[i];
                slot.value.is_none() && slot.generation + self.stride <= MAX_GENERATION
            })
            .map(|i| i as u32)
            .collect();
        self.slots = slots;
        self.len = len;
        Ok(())
    }

    /// Every entry held, with its slot: for sweeps, not for the hot path.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| Some((slot, s.value.as_ref()?)))
    }

    /// Every entry held, to change: for sweeps, not for the hot path.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> + '_ {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(slot, s)| Some((slot, s.value.as_mut()?)))
    }
}

/// The slot (and mio token) of a handle.
pub fn slot_of(id: Conn) -> usize {
    (id & SLOT_MASK) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_gets_a_new_handle_and_the_old_one_is_unknown() {
        let mut table = ConnTable::default();
        let first = table.insert(|id| id).unwrap();
        let old = *table.slot_mut(first).unwrap();
        table.remove(first);
        let second = table.insert(|id| id).unwrap();
        let new = *table.slot_mut(second).unwrap();
        assert_eq!(first, second, "the free slot is reused");
        assert_ne!(old, new, "with a new handle");
        assert_eq!(slot_of(old), slot_of(new));
        assert!(
            table.get_mut(old).is_none(),
            "the stale handle finds nothing"
        );
        assert_eq!(table.get_mut(new).copied(), Some(new));
    }

    #[test]
    fn handles_stay_below_2_pow_53_and_a_used_up_slot_is_retired() {
        let mut table = ConnTable::default();
        let slot = table.insert(|id| id).unwrap();
        table.remove(slot);
        table.slots[slot].generation = MAX_GENERATION - 1;
        let last = table.insert(|id| id).unwrap();
        assert_eq!(last, slot);
        let handle = *table.slot_mut(last).unwrap();
        assert_eq!(handle >> SLOT_BITS, MAX_GENERATION);
        assert!(handle < 1 << 53, "{handle} is not below 2^53");
        table.remove(last);
        let next = table.insert(|id| id).unwrap();
        assert_ne!(next, slot, "the used-up slot is never handed out again");
        assert!(table.get_mut(handle).is_none());
    }

    #[test]
    fn workers_never_hand_out_the_same_handle() {
        use std::collections::HashSet;
        let mut seen = HashSet::new();
        for worker in 0..3 {
            let mut table = ConnTable::default();
            table.number_for_worker(worker, 3);
            for _ in 0..50 {
                let slot = table.insert(|id| id).unwrap();
                let handle = *table.slot_mut(slot).unwrap();
                assert!(seen.insert(handle), "{handle} handed out twice");
                assert_eq!((handle >> SLOT_BITS) % 3, (worker as u64 + 1) % 3);
                table.remove(slot);
            }
        }
    }

    #[test]
    fn a_restored_table_never_hands_out_an_old_handle() {
        let mut old = ConnTable::default();
        old.number_for_worker(1, 2);
        let kept = old.insert(|id| id).unwrap();
        let closed = old.insert(|id| id).unwrap();
        let kept_id = *old.slot_mut(kept).unwrap();
        let closed_id = *old.slot_mut(closed).unwrap();
        old.remove(closed);

        let mut new = ConnTable::default();
        new.number_for_worker(1, 2);
        new.restore(&old.generations(), vec![(kept_id, kept_id)])
            .unwrap();
        assert_eq!(new.len(), 1);
        assert_eq!(new.get_mut(kept_id).copied(), Some(kept_id), "same handle");
        let slot = new.insert(|id| id).unwrap();
        let fresh = *new.slot_mut(slot).unwrap();
        assert_eq!(slot, closed, "the free slot is reused");
        assert_ne!(
            fresh, closed_id,
            "with a handle the old table never gave out"
        );
        assert!(
            new.get_mut(closed_id).is_none(),
            "the stale handle stays stale"
        );

        let mut full = ConnTable::default();
        let bad = 7 << SLOT_BITS;
        assert!(
            full.restore(&[1], vec![(bad, bad)]).is_err(),
            "a handle that does not fit"
        );
    }

    #[test]
    fn counts_and_iterates_what_it_holds() {
        let mut table = ConnTable::default();
        let a = table.insert(|_| 'a').unwrap();
        let b = table.insert(|_| 'b').unwrap();
        table.remove(a);
        assert_eq!(table.len(), 1);
        assert_eq!(table.iter().collect::<Vec<_>>(), [(b, &'b')]);
        assert!(table.remove(a).is_none(), "removing twice is a no-op");
        table.remove(b);
        assert!(table.is_empty());
    }
}
