//! What a guest instance holds on the sockets side (its connections and timers),
//! released when it is cut off, or handed to another instance at a handoff.

use super::Net;
use crate::shared::wit::Conn;
use crate::sockets::owners::Owner;

impl Net {
    /// Cuts a guest instance off: closes every connection it holds, as if it had
    /// called `close` on each (bytes it wrote are still sent), and disarms its
    /// timers. Returns how many connections it held.
    pub fn release(&mut self, owner: Owner) -> usize {
        let held = self.owners.get(owner);
        if held.timers > 0 {
            let disarmed = self.timers.clear_owner(owner);
            self.owners.timers_gone(owner, disarmed);
        }
        if held.conns == 0 {
            return 0;
        }
        let owned = self.slots_of(owner);
        for &slot in &owned {
            self.start_close(slot);
        }
        owned.len()
    }

    /// Hands everything `old` holds to `new` (a hot swap's handoff): its connections,
    /// whose buffered bytes and readiness stay as they are, and its timers, due when
    /// they were. Returns the handles of the connections.
    pub fn hand_over(&mut self, old: Owner, new: Owner) -> Vec<Conn> {
        let max_buffer = self.limits.max_buffer;
        let moved = self.slots_of(old);
        let mut handles = Vec::with_capacity(moved.len());
        for slot in moved {
            let Some(conn) = self.conns.slot_mut(slot) else {
                continue;
            };
            conn.owner = new;
            handles.push(conn.id);
            if conn.reportable(max_buffer) {
                self.agenda.enqueue(conn);
            }
        }
        self.timers.reassign(old, new);
        self.owners.transfer(old, new);
        handles
    }

    /// Drops every connection at once, sent or not: the end of a shutdown.
    pub fn drop_all(&mut self) -> usize {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for &slot in &slots {
            self.remove(slot);
        }
        self.agenda.ready.clear();
        slots.len()
    }
}
