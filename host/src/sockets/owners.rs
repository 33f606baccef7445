//! Owners: which guest instance a connection or a timer belongs to, and how much each
//! one holds.
//!
//! The sockets side knows nothing of wasm: to it a guest instance is an [`Owner`], a
//! number the handler picks, and what matters is what that owner holds. The handler
//! asks [`Net::owned_by`](super::Net::owned_by) to learn when an instance has nothing
//! left and can end; the timer cap is per owner.

use std::collections::HashMap;

/// Which guest instance a connection or timer belongs to: a guest may only touch its
/// own. The handler never reuses one, so a connection handed from one instance to the
/// next simply changes owner.
pub type Owner = u32;

/// The owner of a connection no guest may see yet: a TLS connection whose handshake
/// the host is running. The handler never picks it.
pub const HOST: Owner = Owner::MAX;

/// What one owner holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Connections it may use (not those it closed, which the host is finishing).
    pub conns: usize,
    /// Timers it has armed.
    pub timers: usize,
}

impl Holdings {
    fn is_empty(self) -> bool {
        self == Self::default()
    }
}

/// Every owner that holds something: one record each, dropped when it holds nothing.
#[derive(Debug, Default)]
pub struct Owners {
    holdings: HashMap<Owner, Holdings>,
}

impl Owners {
    /// What `owner` holds; nothing for an owner never seen.
    pub fn get(&self, owner: Owner) -> Holdings {
        self.holdings.get(&owner).copied().unwrap_or_default()
    }

    /// `owner` got a connection.
    pub fn conn_added(&mut self, owner: Owner) {
        self.update(owner, |held| held.conns += 1);
    }

    /// `owner` let go of a connection (closed it, or it failed and was released).
    pub fn conn_removed(&mut self, owner: Owner) {
        self.update(owner, |held| {
            debug_assert!(held.conns > 0, "owner {owner} held no connection");
            held.conns = held.conns.saturating_sub(1);
        });
    }

    /// `owner` armed a timer it did not have armed.
    pub fn timer_armed(&mut self, owner: Owner) {
        self.update(owner, |held| held.timers += 1);
    }

    /// `count` of `owner`'s timers fired or were disarmed.
    pub fn timers_gone(&mut self, owner: Owner, count: usize) {
        self.update(owner, |held| {
            debug_assert!(held.timers >= count, "owner {owner} had fewer timers");
            held.timers = held.timers.saturating_sub(count);
        });
    }

    /// Gives everything `old` holds to `new` (a hot swap's handoff).
    pub fn transfer(&mut self, old: Owner, new: Owner) {
        if let Some(moved) = self.holdings.remove(&old) {
            self.update(new, |held| {
                held.conns += moved.conns;
                held.timers += moved.timers;
            });
        }
    }

    /// Changes what `owner` holds, and forgets it once it holds nothing.
    fn update(&mut self, owner: Owner, change: impl FnOnce(&mut Holdings)) {
        let holdings = self.holdings.entry(owner).or_default();
        change(holdings);
        if holdings.is_empty() {
            self.holdings.remove(&owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_and_go_with_what_they_hold() {
        let mut owners = Owners::default();
        owners.conn_added(1);
        owners.conn_added(1);
        owners.timer_armed(1);
        assert_eq!(
            owners.get(1),
            Holdings {
                conns: 2,
                timers: 1
            }
        );
        owners.transfer(1, 2);
        assert_eq!(owners.get(1), Holdings::default());
        assert_eq!(
            owners.get(2),
            Holdings {
                conns: 2,
                timers: 1
            }
        );
        owners.conn_removed(2);
        owners.conn_removed(2);
        assert_eq!(owners.holdings.len(), 1, "it still holds a timer");
        owners.timers_gone(2, 1);
        assert!(owners.holdings.is_empty());
    }
}
