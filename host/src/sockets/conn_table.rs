//! [`ConnTable`]: a slab whose slot index is the mio token, and whose handles carry a
//! per-slot generation so that a handle is never reused.
//!
//! A handle is `generation << SLOT_BITS | slot`: looking one up is an index and a
//! compare, no hashing, and a stale handle (its slot reused since) is simply unknown.
//! Handles stay below 2^53, so that a JavaScript number holds one exactly: a slot
//! whose generations are used up is retired, never wrapped round.

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
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ConnTable<T> {
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
        entry.generation += 1;
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
        if entry.generation < MAX_GENERATION {
            self.free.push(slot as u32);
        }
        Some(value)
    }

    /// Every entry held, with its slot: for sweeps, not for the hot path.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| Some((slot, s.value.as_ref()?)))
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
