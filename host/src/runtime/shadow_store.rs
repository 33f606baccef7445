//! [`ShadowStore`]: the store and topics as a canary's shadow sees them. A shadow
//! never changes the real store and never publishes for real:
//!
//! - An operation the serving instance also made (the same operation on the same
//!   key with the same value, the first such not yet matched) is answered what the
//!   serving instance was answered, once it was: a counter or a read gives the
//!   shadow exactly what the serving code saw, whatever other connections did
//!   since.
//! - Any other write goes to the shadow's own overlay, and is a difference: the
//!   canary compares store writes and publishes like a connection's bytes.
//! - Any other read is answered from the overlay if it knows the key, else read
//!   through to the real store (answered by event, like every store answer).
//! - A subscription hears the messages the serving instance heard on that topic;
//!   a publish is matched against the serving instance's.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::store::memory::increment;
use crate::store::{Asker, Delivery, Key, Op, Outcome, StoreError};

/// The serving instance's operations and publishes a shadow can still match: a
/// shadow that falls this far behind matches nothing older (its operations then
/// read through, or count as differences).
pub const MAX_SERVING: usize = 4096;

/// The most of each kind a recording holds between two batches (a trial's canary
/// takes it after every batch; only an instance that stopped serving keeps one).
pub const MAX_RECORDED: usize = 65_536;

/// What the serving instance did with the store while a canary runs, taken by the
/// canary after each batch (`StoreSession`'s recording).
#[derive(Debug, Default)]
pub struct Recording {
    /// Operations it made, with their ids.
    pub ops: Vec<(u64, Op)>,
    /// Answers it was given.
    pub answers: Vec<(u64, Outcome)>,
    /// Messages it published: topic and bytes.
    pub publishes: Vec<(String, Vec<u8>)>,
    /// Messages it heard: topic and bytes.
    pub messages: Vec<(String, Arc<[u8]>)>,
}

impl Recording {
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && self.answers.is_empty()
            && self.publishes.is_empty()
            && self.messages.is_empty()
    }
}

/// One operation of the serving instance.
#[derive(Debug)]
struct ServingOp {
    id: u64,
    op: Op,
    answer: Option<Outcome>,
    matched: bool,
}

/// One shadow's view of the store.
#[derive(Debug, Default)]
pub struct ShadowStore {
    /// Whose answers these are (the shadow instance's asker).
    pub asker: Option<Asker>,
    serving: VecDeque<ServingOp>,
    publishes: VecDeque<(String, Vec<u8>, bool)>,
    /// Shadow operations waiting for the serving answer they matched: shadow id,
    /// serving id, and the operation's kind.
    waiting: Vec<(u64, u64, u8)>,
    /// The shadow's own writes: a key's value, or `None` for one it deleted.
    overlay: HashMap<(String, String), Option<Vec<u8>>>,
    subscriptions: Vec<(u64, String)>,
    next_subscription: u64,
    /// Answers and messages for the shadow's next call.
    pub mail: Vec<Delivery>,
    /// The first write or publish the serving instance did not make, in words.
    pub difference: Option<String>,
}

impl ShadowStore {
    /// Whether answers or messages wait for the shadow.
    pub fn has_mail(&self) -> bool {
        !self.mail.is_empty()
    }

    /// Takes in what the serving instance did since the last batch.
    pub fn serving(&mut self, recording: &Recording) {
        for (id, op) in &recording.ops {
            self.serving.push_back(ServingOp {
                id: *id,
                op: op.clone(),
                answer: None,
                matched: false,
            });
            if self.serving.len() > MAX_SERVING
                && let Some(evicted) = self.serving.pop_front()
            {
                // A shadow operation waiting for it would wait for ever: it fails.
                let waiting: Vec<(u64, u8)> = self
                    .waiting
                    .iter()
                    .filter(|(_, serving, _)| *serving == evicted.id)
                    .map(|&(shadow, _, kind)| (shadow, kind))
                    .collect();
                self.waiting
                    .retain(|(_, serving, _)| *serving != evicted.id);
                for (shadow, kind) in waiting {
                    self.answer(shadow, kind, Outcome::Failed(StoreError::Failed));
                }
            }
        }
        for (id, outcome) in &recording.answers {
            let Some(served) = self.serving.iter_mut().find(|s| s.id == *id) else {
                continue;
            };
            served.answer = Some(outcome.clone());
            let waiting: Vec<(u64, u8)> = self
                .waiting
                .iter()
                .filter(|(_, serving, _)| serving == id)
                .map(|&(shadow, _, kind)| (shadow, kind))
                .collect();
            self.waiting.retain(|(_, serving, _)| serving != id);
            for (shadow, kind) in waiting {
                self.answer(shadow, kind, outcome.clone());
            }
        }
        for (topic, bytes) in &recording.publishes {
            self.publishes
                .push_back((topic.clone(), bytes.clone(), false));
            if self.publishes.len() > MAX_SERVING {
                self.publishes.pop_front();
            }
        }
        for (topic, bytes) in &recording.messages {
            for (subscription, _) in self.subscriptions.iter().filter(|(_, t)| t == topic) {
                if let Some(to) = self.asker {
                    self.mail.push(Delivery::Message {
                        to,
                        subscription: *subscription,
                        bytes: bytes.clone(),
                    });
                }
            }
        }
    }

    /// The shadow's operation `id`: matched, kept in the overlay, or read through
    /// `read_through` (which submits it to the real store as the shadow's).
    pub fn submit(&mut self, id: u64, op: Op, read_through: impl FnOnce(u64, Op)) {
        let kind = op.index();
        if let Some(served) = self.serving.iter_mut().find(|s| !s.matched && s.op == op) {
            served.matched = true;
            match &served.answer {
                Some(answer) => {
                    let answer = answer.clone();
                    self.answer(id, kind, answer);
                }
                None => self.waiting.push((id, served.id, kind)),
            }
            // The real store has this write: later reads go through to it.
            for key in keys(&op) {
                self.overlay.remove(&key);
            }
            return;
        }
        if op.writes() {
            self.difference.get_or_insert_with(|| {
                format!(
                    "its store write {} was not made by the serving generation",
                    describe(&op)
                )
            });
            let outcome = self.apply(&op);
            self.answer(id, kind, outcome);
            return;
        }
        let keys = keys(&op);
        if !keys.is_empty() && keys.iter().all(|key| self.overlay.contains_key(key)) {
            let outcome = self.apply(&op);
            self.answer(id, kind, outcome);
        } else {
            read_through(id, op);
        }
    }

    /// A subscription of the shadow's own: it hears what the serving instance
    /// hears on `topic`.
    pub fn subscribe(&mut self, topic: String) -> u64 {
        self.next_subscription += 1;
        self.subscriptions.push((self.next_subscription, topic));
        self.next_subscription
    }

    /// How many subscriptions it holds.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.len()
    }

    /// Ends one of its subscriptions.
    pub fn unsubscribe(&mut self, subscription: u64) {
        self.subscriptions.retain(|(id, _)| *id != subscription);
    }

    /// A publish: matched against the serving instance's, never sent.
    pub fn publish(&mut self, topic: &str, message: &[u8]) {
        if let Some(served) = self
            .publishes
            .iter_mut()
            .find(|(t, m, matched)| !matched && t == topic && m == message)
        {
            served.2 = true;
            return;
        }
        self.difference.get_or_insert_with(|| {
            format!(
                "it published {} bytes on `{topic}` that the serving generation did not",
                message.len()
            )
        });
    }

    fn answer(&mut self, op: u64, kind: u8, outcome: Outcome) {
        if let Some(to) = self.asker {
            self.mail.push(Delivery::Done {
                to,
                op,
                kind,
                outcome,
                submitted: Instant::now(),
            });
        }
    }

    /// `op` on the overlay alone (a key it does not know is missing).
    fn apply(&mut self, op: &Op) -> Outcome {
        let at = |key: &Key| (key.bucket.clone(), key.key.clone());
        let known = |overlay: &HashMap<_, Option<Vec<u8>>>, at: &(String, String)| {
            overlay.get(at).cloned().flatten()
        };
        match op {
            Op::Get(key) => {
                known(&self.overlay, &at(key)).map_or(Outcome::NotFound, Outcome::Value)
            }
            Op::Exists(key) => Outcome::Exists(known(&self.overlay, &at(key)).is_some()),
            Op::Set(key, value) => {
                self.overlay.insert(at(key), Some(value.clone()));
                Outcome::Done
            }
            Op::Delete(key) => match self.overlay.insert(at(key), None).flatten() {
                Some(_) => Outcome::Done,
                None => Outcome::NotFound,
            },
            Op::Increment(key, delta) => {
                let now = known(&self.overlay, &at(key));
                match increment(now.as_deref(), *delta) {
                    Ok(next) => {
                        self.overlay
                            .insert(at(key), Some(next.to_string().into_bytes()));
                        Outcome::Counter(next)
                    }
                    Err(error) => Outcome::Failed(error),
                }
            }
            Op::CompareAndSwap(key, old, new) => {
                if known(&self.overlay, &at(key)) != *old {
                    return Outcome::Swapped(false);
                }
                self.overlay.insert(at(key), Some(new.clone()));
                Outcome::Swapped(true)
            }
            Op::GetMany(bucket, keys) => Outcome::Values(
                keys.iter()
                    .map(|k| known(&self.overlay, &(bucket.clone(), k.clone())))
                    .collect(),
            ),
            Op::SetMany(bucket, entries) => {
                for (k, v) in entries {
                    self.overlay
                        .insert((bucket.clone(), k.clone()), Some(v.clone()));
                }
                Outcome::Done
            }
            Op::DeleteMany(bucket, keys) => {
                for k in keys {
                    self.overlay.insert((bucket.clone(), k.clone()), None);
                }
                Outcome::Done
            }
            // Listing would need the real store's keys merged with the overlay's:
            // a shadow is told it failed, and its output differs if it relies on it.
            Op::ListKeys(..) => Outcome::Failed(StoreError::Failed),
        }
    }
}

/// The keys an operation touches (none for `list-keys`).
fn keys(op: &Op) -> Vec<(String, String)> {
    match op {
        Op::Get(k) | Op::Set(k, _) | Op::Delete(k) | Op::Exists(k) | Op::Increment(k, _) => {
            vec![(k.bucket.clone(), k.key.clone())]
        }
        Op::CompareAndSwap(k, ..) => vec![(k.bucket.clone(), k.key.clone())],
        Op::GetMany(b, keys) | Op::DeleteMany(b, keys) => {
            keys.iter().map(|k| (b.clone(), k.clone())).collect()
        }
        Op::SetMany(b, entries) => entries
            .iter()
            .map(|(k, _)| (b.clone(), k.clone()))
            .collect(),
        Op::ListKeys(..) => Vec::new(),
    }
}

/// An operation in a few words, for the canary's verdict.
fn describe(op: &Op) -> String {
    let value = |v: &[u8]| format!("{} bytes", v.len());
    match op {
        Op::Set(k, v) => format!("set {}/{} to {}", k.bucket, k.key, value(v)),
        Op::Delete(k) => format!("delete {}/{}", k.bucket, k.key),
        Op::Increment(k, d) => format!("increment {}/{} by {d}", k.bucket, k.key),
        Op::CompareAndSwap(k, _, v) => {
            format!("compare-and-swap {}/{} to {}", k.bucket, k.key, value(v))
        }
        other => other.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHADOW: Asker = Asker {
        worker: 0,
        owner: 7,
        serial: 9,
    };

    fn answers(store: &mut ShadowStore) -> Vec<(u64, Outcome)> {
        store
            .mail
            .drain(..)
            .filter_map(|d| match d {
                Delivery::Done { op, outcome, .. } => Some((op, outcome)),
                _ => None,
            })
            .collect()
    }

    fn set(key: &str, value: &str) -> Op {
        Op::Set(Key::new("b", key), value.as_bytes().to_vec())
    }

    #[test]
    fn what_the_serving_instance_did_is_answered_as_it_was() {
        let mut store = ShadowStore {
            asker: Some(SHADOW),
            ..ShadowStore::default()
        };
        let counter = Op::Increment(Key::new("b", "n"), 1);
        store.serving(&Recording {
            ops: vec![(1, counter.clone()), (2, set("k", "v"))],
            answers: vec![(1, Outcome::Counter(41))],
            ..Recording::default()
        });
        let mut through = Vec::new();
        store.submit(10, counter, |id, op| through.push((id, op)));
        store.submit(11, set("k", "v"), |id, op| through.push((id, op)));
        assert_eq!(answers(&mut store), [(10, Outcome::Counter(41))]);
        store.serving(&Recording {
            answers: vec![(2, Outcome::Done)],
            ..Recording::default()
        });
        assert_eq!(answers(&mut store), [(11, Outcome::Done)], "once it came");
        assert_eq!(store.difference, None);

        let get = Op::Get(Key::new("b", "k"));
        store.submit(12, get.clone(), |id, op| through.push((id, op)));
        assert_eq!(through, [(12, get)], "a read of its own reads through");
    }

    #[test]
    fn other_writes_stay_in_the_overlay_and_are_a_difference() {
        let mut store = ShadowStore {
            asker: Some(SHADOW),
            ..ShadowStore::default()
        };
        store.submit(1, set("k", "mine"), |_, _| panic!("never through"));
        store.submit(2, Op::Get(Key::new("b", "k")), |_, _| {
            panic!("in the overlay")
        });
        assert_eq!(
            answers(&mut store),
            [(1, Outcome::Done), (2, Outcome::Value(b"mine".to_vec()))]
        );
        let said = store.difference.clone().expect("a difference");
        assert!(said.contains("set b/k to 4 bytes"), "{said}");
        store.publish("room", b"hi");
        assert!(store.difference.is_some());
    }
}
