//! The connection table: a slab whose slot index is the mio token, and whose handles
//! carry a per-slot generation so that a handle is never reused.
//!
//! A handle is `generation << SLOT_BITS | slot`: looking one up is an index and a
//! compare, no hashing, and a stale handle (its slot reused since) is simply unknown.

use crate::connection::Connection;
use crate::limits::SLOT_BITS;
use crate::wit::Conn;

/// Handles stay below 2^53 so that a JavaScript number holds them exactly.
const MAX_GENERATION: u64 = (1 << (53 - SLOT_BITS)) - 1;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

#[derive(Debug, Default)]
struct Slot {
    /// The generation of the handle that last used (or now uses) this slot.
    generation: u64,
    conn: Option<Connection>,
}

/// Connections by slot, with never-reused handles.
#[derive(Debug, Default)]
pub struct ConnTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
}

impl ConnTable {
    /// Number of connections held, closing ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores the connection `make` builds for a fresh handle, and returns its slot,
    /// or `None` when every slot is taken.
    pub fn insert(&mut self, make: impl FnOnce(Conn) -> Connection) -> Option<usize> {
        let slot = match self.free.pop() {
            Some(slot) => slot as usize,
            None if self.slots.len() < (1 << SLOT_BITS) => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
            None => return None,
        };
        let entry = &mut self.slots[slot];
        entry.generation += 1;
        let id = entry.generation << SLOT_BITS | slot as u64;
        entry.conn = Some(make(id));
        self.len += 1;
        Some(slot)
    }

    /// The connection with this handle, if it is still held.
    pub fn get_mut(&mut self, id: Conn) -> Option<&mut Connection> {
        let entry = self.slots.get_mut((id & SLOT_MASK) as usize)?;
        if entry.generation != id >> SLOT_BITS {
            return None;
        }
        entry.conn.as_mut()
    }

    /// The connection in a slot (the mio token), if any.
    pub fn slot_mut(&mut self, slot: usize) -> Option<&mut Connection> {
        self.slots.get_mut(slot)?.conn.as_mut()
    }

    /// Takes the connection out of its slot; dropping it closes the socket (and
    /// removes it from epoll).
    pub fn remove(&mut self, slot: usize) -> Option<Connection> {
        let entry = self.slots.get_mut(slot)?;
        let conn = entry.conn.take()?;
        self.len -= 1;
        // A slot whose generations are used up is retired rather than risk a reused handle.
        if entry.generation < MAX_GENERATION {
            self.free.push(slot as u32);
        }
        Some(conn)
    }

    /// All connections held, with their slots: for sweeps, not for the hot path.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Connection)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| Some((slot, s.conn.as_ref()?)))
    }
}

/// The slot (and mio token) of a handle.
pub fn slot_of(id: Conn) -> usize {
    (id & SLOT_MASK) as usize
}
