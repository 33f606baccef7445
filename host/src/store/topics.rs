//! [`Topics`]: a guest publishes bytes to a named topic of its namespace, and every
//! subscriber, in every worker, gets them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Asker, Delivery, Inbox, Namespace};

/// One subscription: who gets the messages, and the guest's id for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Subscriber {
    asker: Asker,
    subscription: u64,
}

/// What [`Topics::publish`] is told for a message no worker published.
pub const NO_WORKER: usize = usize::MAX;

/// Every subscription of the process, and each worker's inbox.
///
/// A publish holds the lock while it posts to every subscriber's inbox, so every
/// subscriber sees the messages of one topic in one order: the order they were
/// published in, whoever published them.
#[derive(Debug)]
pub struct Topics {
    subscribers: Mutex<HashMap<(Namespace, String), Vec<Subscriber>>>,
    /// By worker index.
    inboxes: Vec<Arc<Inbox>>,
}

impl Topics {
    /// No subscription yet; messages go to `inboxes`, one per worker.
    pub fn new(inboxes: Vec<Arc<Inbox>>) -> Self {
        Self {
            subscribers: Mutex::new(HashMap::new()),
            inboxes,
        }
    }

    /// `asker` hears `topic` of `namespace` as `subscription` from now on. True if
    /// the topic had no subscriber in the process before (a remote store's relay
    /// then starts listening to it).
    pub fn subscribe(
        &self,
        namespace: &Namespace,
        topic: &str,
        asker: Asker,
        subscription: u64,
    ) -> bool {
        let mut subscribers = self.lock();
        let list = subscribers
            .entry((namespace.clone(), topic.to_string()))
            .or_default();
        let new = Subscriber {
            asker,
            subscription,
        };
        let first = list.is_empty();
        if !list.contains(&new) {
            list.push(new);
        }
        first
    }

    /// `asker` no longer hears `subscription`. True if a topic lost its last
    /// subscriber in the process.
    pub fn unsubscribe(&self, asker: Asker, subscription: u64) -> bool {
        self.forget(|s| s.asker == asker && s.subscription == subscription)
    }

    /// An instance ended: none of its subscriptions hears anything more. True if a
    /// topic lost its last subscriber in the process.
    pub fn drop_asker(&self, asker: Asker) -> bool {
        self.forget(|s| s.asker == asker)
    }

    /// The topics of `namespace` that someone in the process hears.
    pub fn heard(&self, namespace: &Namespace) -> Vec<String> {
        self.lock()
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, topic)| topic.clone())
            .collect()
    }

    /// Sends `bytes` to every subscriber of `topic` in `namespace`; answers how many
    /// there were. `from` is the publishing worker: its own loop needs no wake-up
    /// ([`NO_WORKER`] when a message comes from elsewhere: a remote store's relay).
    pub fn publish(&self, namespace: &Namespace, topic: &str, bytes: &[u8], from: usize) -> usize {
        // Made before the lock, which every worker's publishes share.
        let key = (namespace.clone(), topic.to_string());
        let bytes: Arc<[u8]> = bytes.into();
        let subscribers = self.lock();
        let Some(list) = subscribers.get(&key) else {
            return 0;
        };
        for subscriber in list {
            let Some(inbox) = self.inboxes.get(subscriber.asker.worker) else {
                continue;
            };
            let delivery = Delivery::Message {
                to: subscriber.asker,
                subscription: subscriber.subscription,
                bytes: bytes.clone(),
            };
            if subscriber.asker.worker == from {
                inbox.post_local(delivery);
            } else {
                inbox.post(delivery);
            }
        }
        list.len()
    }

    fn forget(&self, gone: impl Fn(&Subscriber) -> bool) -> bool {
        let mut subscribers = self.lock();
        let before = subscribers.len();
        subscribers.retain(|_, list| {
            list.retain(|s| !gone(s));
            !list.is_empty()
        });
        subscribers.len() != before
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Namespace, String), Vec<Subscriber>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn inboxes(n: usize) -> (Vec<Arc<Inbox>>, Vec<Arc<AtomicUsize>>) {
        (0..n)
            .map(|_| {
                let wakes = Arc::new(AtomicUsize::new(0));
                let counted = wakes.clone();
                let inbox = Inbox::new();
                inbox.wake_with(move || {
                    counted.fetch_add(1, Ordering::Relaxed);
                });
                (inbox, wakes)
            })
            .unzip()
    }

    fn messages(inbox: &Inbox) -> Vec<(u32, u64, Vec<u8>)> {
        let mut taken = Vec::new();
        inbox.take(&mut taken);
        taken
            .into_iter()
            .map(|d| match d {
                Delivery::Message {
                    to,
                    subscription,
                    bytes,
                } => (to.owner, subscription, bytes.to_vec()),
                other => panic!("not a message: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn every_subscriber_in_every_worker_hears_each_message_in_order() {
        let (inboxes, wakes) = inboxes(2);
        let topics = Topics::new(inboxes.clone());
        let room = Namespace::new("chat").unwrap();
        let other = Namespace::new("other").unwrap();
        let a = Asker {
            worker: 0,
            owner: 1,
            serial: 1,
        };
        let b = Asker {
            worker: 1,
            owner: 7,
            serial: 2,
        };
        assert!(topics.subscribe(&room, "lobby", a, 10), "the first");
        assert!(!topics.subscribe(&room, "lobby", b, 20));
        assert!(topics.subscribe(&other, "lobby", b, 30));
        assert_eq!(topics.heard(&room), ["lobby"]);
        assert_eq!(topics.publish(&room, "lobby", b"one", 0), 2);
        assert_eq!(topics.publish(&room, "lobby", b"two", 1), 2);
        assert_eq!(topics.publish(&room, "nobody", b"x", 0), 0);
        assert_eq!(
            messages(&inboxes[0]),
            [(1, 10, b"one".to_vec()), (1, 10, b"two".to_vec())]
        );
        assert_eq!(
            messages(&inboxes[1]),
            [(7, 20, b"one".to_vec()), (7, 20, b"two".to_vec())],
            "not the other namespace's subscription"
        );
        assert_eq!(
            wakes[1].load(Ordering::Relaxed),
            1,
            "woken by worker 0's publish"
        );
        assert_eq!(
            wakes[0].load(Ordering::Relaxed),
            0,
            "worker 1's publish found worker 0's own message waiting: its loop looks \
             before it sleeps"
        );
        topics.publish(&room, "lobby", b"again", 1);
        assert_eq!(
            wakes[0].load(Ordering::Relaxed),
            1,
            "into an empty inbox: woken"
        );
        assert_eq!(messages(&inboxes[0]), [(1, 10, b"again".to_vec())]);
        messages(&inboxes[1]);

        assert!(!topics.unsubscribe(b, 20), "a still hears it");
        topics.publish(&room, "lobby", b"three", 0);
        assert!(messages(&inboxes[1]).is_empty());
        assert!(topics.drop_asker(a), "nobody hears it now");
        assert_eq!(topics.publish(&room, "lobby", b"four", 0), 0);
        assert!(topics.heard(&room).is_empty());
    }
}
