//! [`Inbox`]: what the store and topics have for one worker's guests, and how that
//! worker's loop is woken for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{Asker, Outcome};

/// The message bytes one worker's inbox holds at most: a publisher faster than a
/// worker's guests can take its messages fills it, and what comes past it is dropped
/// and counted (the subscriber hears `lost`), so a slow subscriber cannot make the
/// host's memory grow without bound. Answers to operations are never dropped: an
/// instance has a bounded number in flight.
pub const MAX_QUEUED_MESSAGE_BYTES: usize = 16 << 20;

/// Something for one guest instance of the worker that owns the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The operation `op` that `to` submitted ended so.
    Done {
        /// The instance.
        to: Asker,
        /// The guest's id for the operation.
        op: u64,
        /// Which operation it was ([`Op::index`](super::Op::index)), for `/metrics`.
        kind: u8,
        /// How it ended.
        outcome: Outcome,
        /// When it was submitted, for the latency in `/metrics`.
        submitted: std::time::Instant,
    },
    /// A message on a topic `to` subscribed to with `subscription`.
    Message {
        /// The instance.
        to: Asker,
        /// The guest's id for the subscription.
        subscription: u64,
        /// The bytes published, shared by every subscriber.
        bytes: Arc<[u8]>,
    },
    /// `count` messages for `subscription` were dropped: the inbox was full.
    Lost {
        /// The instance.
        to: Asker,
        /// The guest's id for the subscription.
        subscription: u64,
        /// How many.
        count: u64,
    },
}

impl Delivery {
    /// The instance it is for.
    pub fn to(&self) -> Asker {
        match self {
            Self::Done { to, .. } | Self::Message { to, .. } | Self::Lost { to, .. } => *to,
        }
    }
}

#[derive(Default)]
struct Queue {
    deliveries: Vec<Delivery>,
    message_bytes: usize,
    /// Messages dropped since the last `take`, per subscription.
    lost: Vec<(Asker, u64, u64)>,
}

/// One worker's queue, filled by any thread, emptied by the worker's loop once per
/// turn. A post into an empty queue wakes the loop (unless the loop itself posts:
/// it looks at its inbox before it waits).
pub struct Inbox {
    queue: Mutex<Queue>,
    /// Whether anything waits: read by the loop every turn, without the lock.
    pending: AtomicBool,
    wake: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    /// An empty inbox; [`Inbox::wake_with`] says how its loop is woken.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            pending: AtomicBool::new(false),
            wake: OnceLock::new(),
        })
    }

    /// How posts from other threads wake the loop (set once, when the loop exists).
    pub fn wake_with(&self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.wake.set(Box::new(wake));
    }

    /// Posts from another thread (another worker, a backend's thread): wakes the
    /// loop if the queue was empty.
    pub fn post(&self, delivery: Delivery) {
        if self.push(delivery)
            && let Some(wake) = self.wake.get()
        {
            wake();
        }
    }

    /// Posts from the worker's own loop, which needs no waking: it looks at
    /// [`Inbox::has_pending`] before it waits.
    pub fn post_local(&self, delivery: Delivery) {
        self.push(delivery);
    }

    /// Queues `delivery` (or counts a message past the bound as lost); true if the
    /// queue was empty.
    fn push(&self, delivery: Delivery) -> bool {
        let mut queue = self.lock();
        let was_empty = queue.deliveries.is_empty() && queue.lost.is_empty();
        if let Delivery::Message {
            to,
            subscription,
            bytes,
        } = &delivery
        {
            // One message always fits an empty queue, however large.
            if queue.message_bytes > 0
                && queue.message_bytes + bytes.len() > MAX_QUEUED_MESSAGE_BYTES
            {
                match queue
                    .lost
                    .iter_mut()
                    .find(|(a, s, _)| a == to && s == subscription)
                {
                    Some((_, _, count)) => *count += 1,
                    None => queue.lost.push((*to, *subscription, 1)),
                }
                self.pending.store(true, Ordering::Release);
                return was_empty;
            }
            queue.message_bytes += bytes.len();
        }
        queue.deliveries.push(delivery);
        self.pending.store(true, Ordering::Release);
        was_empty
    }

    /// Moves everything posted so far into `into` (kept by the caller, so that a
    /// turn allocates nothing once it has grown), the losses last.
    pub fn take(&self, into: &mut Vec<Delivery>) {
        let mut queue = self.lock();
        into.append(&mut queue.deliveries);
        into.extend(
            queue
                .lost
                .drain(..)
                .map(|(to, subscription, count)| Delivery::Lost {
                    to,
                    subscription,
                    count,
                }),
        );
        queue.message_bytes = 0;
        self.pending.store(false, Ordering::Release);
    }

    /// Whether anything waits: the loop does not sleep while it does. One atomic
    /// load, no lock.
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A poisoned queue still holds valid deliveries: a panic elsewhere while
        // pushing cannot leave a `Vec` half-written.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    const TO: Asker = Asker {
        worker: 0,
        owner: 1,
        serial: 1,
    };

    fn done(op: u64, submitted: Instant) -> Delivery {
        Delivery::Done {
            to: TO,
            op,
            kind: 1,
            outcome: Outcome::Done,
            submitted,
        }
    }

    #[test]
    fn a_post_into_an_empty_inbox_wakes_once() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = wakes.clone();
        let inbox = Inbox::new();
        inbox.wake_with(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let now = Instant::now();
        inbox.post(done(1, now));
        inbox.post(done(2, now));
        assert_eq!(wakes.load(Ordering::Relaxed), 1, "one wake per empty queue");
        inbox.post_local(done(3, now));
        assert!(inbox.has_pending());
        let mut taken = Vec::new();
        inbox.take(&mut taken);
        assert_eq!(
            taken,
            [done(1, now), done(2, now), done(3, now)],
            "in order"
        );
        assert!(!inbox.has_pending());
        inbox.post(done(4, now));
        assert_eq!(wakes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn messages_past_the_bound_are_counted_as_lost() {
        let inbox = Inbox::new();
        let big: Arc<[u8]> = vec![0; MAX_QUEUED_MESSAGE_BYTES / 2].into();
        for _ in 0..5 {
            inbox.post_local(Delivery::Message {
                to: TO,
                subscription: 7,
                bytes: big.clone(),
            });
        }
        let mut taken = Vec::new();
        inbox.take(&mut taken);
        assert_eq!(taken.len(), 3, "two messages, then the count of the rest");
        assert_eq!(
            taken[2],
            Delivery::Lost {
                to: TO,
                subscription: 7,
                count: 3
            }
        );
        inbox.post_local(Delivery::Message {
            to: TO,
            subscription: 7,
            bytes: big,
        });
        taken.clear();
        inbox.take(&mut taken);
        assert_eq!(taken.len(), 1, "room again once taken");
    }
}
