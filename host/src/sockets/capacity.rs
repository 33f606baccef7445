//! [`Capacity`]: the connections the host holds, counted across every worker against
//! `--max-connections`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Places for connections, shared by every worker's `Net`: the limit is the
/// process's, since it guards the process's file descriptors and memory.
///
/// A [`Place`] is taken before a connection enters a table and lives in its record,
/// so it is given back however the connection leaves: a few atomic operations per
/// connection, none per event.
#[derive(Clone, Debug)]
pub struct Capacity {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl Capacity {
    /// Room for `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Takes a place, given back when the [`Place`] is dropped; `None` when every
    /// place is taken.
    pub fn take(&self) -> Option<Place> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        Some(Place(self.open.clone()))
    }

    /// Takes a place even past the limit: for a connection an upgrade's old process
    /// hands over, which was accepted under the limit already.
    pub fn take_anyway(&self) -> Place {
        self.open.fetch_add(1, Ordering::Relaxed);
        Place(self.open.clone())
    }

    /// Places taken now, across every worker.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One connection's place, given back when it is dropped.
#[derive(Debug)]
pub struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// No limit: for the placeholder `Net` a guest's store holds between calls.
impl Default for Capacity {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_shared_and_bounded() {
        let one = Capacity::new(2);
        let other = one.clone();
        let first = one.take().expect("room");
        let _second = other.take().expect("room");
        assert!(one.take().is_none(), "the limit holds across clones");
        drop(first);
        assert_eq!(one.open(), 1, "a dropped place is given back");
        let _third = one.take().expect("room again");
        assert_eq!(other.open(), 2);
    }
}
