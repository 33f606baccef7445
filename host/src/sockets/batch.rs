//! [`Batch`]: one turn's events, grouped by the guest instance they go to.

use std::collections::HashMap;

use super::events::Event;
use super::owners::Owner;

/// The events of one turn of the loop, grouped by [`Owner`] as they are pushed.
///
/// Groups come in the order of their first event, and each group's events in the
/// order they were pushed, so a handler with one instance sees every event in order.
/// A turn with one owner (the shared instance) needs no lookup; the index is built
/// only when a second owner appears.
#[derive(Debug, Default)]
pub struct Batch {
    /// `groups[..used]` are this turn's; the rest keep their memory for later turns.
    groups: Vec<Group>,
    used: usize,
    /// Owner to group, once a turn has more than one owner.
    index: HashMap<Owner, usize>,
}

#[derive(Debug)]
struct Group {
    owner: Owner,
    events: Vec<Event>,
}

impl Batch {
    /// Adds an event for `owner`.
    pub fn push(&mut self, owner: Owner, event: Event) {
        let group = self.group_of(owner);
        self.groups[group].events.push(event);
    }

    /// Each owner with its events, in the order of their first event.
    pub fn groups(&self) -> impl Iterator<Item = (Owner, &[Event])> {
        self.groups[..self.used]
            .iter()
            .map(|group| (group.owner, group.events.as_slice()))
    }

    /// Every event, group after group: for a handler that has one instance.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.groups[..self.used]
            .iter()
            .flat_map(|group| &group.events)
    }

    /// Whether there is nothing to deliver.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Empties it, keeping its memory for the next turn.
    pub fn clear(&mut self) {
        for group in &mut self.groups[..self.used] {
            group.events.clear();
        }
        self.used = 0;
        self.index.clear();
    }

    fn group_of(&mut self, owner: Owner) -> usize {
        if let Some(last) = self.used.checked_sub(1) {
            if self.groups[last].owner == owner {
                return last;
            }
            if self.index.is_empty() {
                let open = &self.groups[..self.used];
                self.index
                    .extend(open.iter().enumerate().map(|(i, g)| (g.owner, i)));
            }
            if let Some(&group) = self.index.get(&owner) {
                return group;
            }
            self.index.insert(owner, self.used);
        }
        let group = self.used;
        self.used += 1;
        match self.groups.get_mut(group) {
            Some(reused) => reused.owner = owner,
            None => self.groups.push(Group {
                owner,
                events: Vec::new(),
            }),
        }
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each group as its owner and its events' debug text (bindgen's types have no
    /// `PartialEq`).
    fn groups(batch: &Batch) -> Vec<(Owner, String)> {
        batch.groups().map(|(o, e)| (o, format!("{e:?}"))).collect()
    }

    fn text(events: &[Event]) -> String {
        format!("{events:?}")
    }

    #[test]
    fn groups_by_owner_in_order_of_first_event() {
        let mut batch = Batch::default();
        batch.push(7, Event::Readable(1));
        batch.push(3, Event::Readable(2));
        batch.push(7, Event::Writable(1));
        batch.push(9, Event::Timer(5));
        batch.push(3, Event::Readable(4));
        assert_eq!(
            groups(&batch),
            [
                (7, text(&[Event::Readable(1), Event::Writable(1)])),
                (3, text(&[Event::Readable(2), Event::Readable(4)])),
                (9, text(&[Event::Timer(5)])),
            ]
        );
        assert_eq!(batch.events().count(), 5);
    }

    #[test]
    fn a_cleared_batch_starts_over() {
        let mut batch = Batch::default();
        batch.push(1, Event::Readable(1));
        batch.push(2, Event::Readable(2));
        batch.clear();
        assert!(batch.is_empty());
        batch.push(2, Event::Shutdown);
        batch.push(1, Event::Shutdown);
        batch.push(2, Event::Timer(1));
        assert_eq!(
            groups(&batch),
            [
                (2, text(&[Event::Shutdown, Event::Timer(1)])),
                (1, text(&[Event::Shutdown])),
            ]
        );
    }
}
