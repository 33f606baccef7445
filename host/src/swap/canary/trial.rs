//! [`Trial`]: what the workers' canary trials of one new guest share.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// What the workers' canary trials of one new guest share, so that they reach one
/// verdict: the connections compared across all of them, and the verdict, taken by
/// whichever worker decides first and followed by the others.
#[derive(Debug, Default)]
pub struct Trial {
    compared: AtomicU32,
    verdict: AtomicU8,
}

/// [`Trial::verdict`] values.
const UNDECIDED: u8 = 0;
const PROMOTED: u8 = 1;
const REJECTED: u8 = 2;

impl Trial {
    /// Counts one more connection compared; the total across workers.
    pub fn compared(&self) -> u32 {
        self.compared.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The connections compared across workers.
    pub fn total(&self) -> u32 {
        self.compared.load(Ordering::Relaxed)
    }

    /// Decides `promote` (true) or reject, unless another worker decided first;
    /// answers the verdict that holds.
    pub fn decide(&self, promote: bool) -> bool {
        let wanted = if promote { PROMOTED } else { REJECTED };
        match self
            .verdict
            .compare_exchange(UNDECIDED, wanted, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => promote,
            Err(taken) => taken == PROMOTED,
        }
    }

    /// The verdict another worker took, if any: `Some(true)` promoted.
    pub fn decided(&self) -> Option<bool> {
        match self.verdict.load(Ordering::Acquire) {
            UNDECIDED => None,
            taken => Some(taken == PROMOTED),
        }
    }
}
