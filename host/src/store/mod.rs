//! The host-held store and topics (contract 1.1's `store` and `topics`): state that
//! outlives a guest instance, shared by every worker of the process and every
//! generation of the guest.
//!
//! A guest never waits on it: an operation is submitted with an id, and its outcome
//! is posted to the worker that submitted it (its [`Inbox`]), whose loop hands it
//! to the guest as an event in a later batch. A backend that could answer at once
//! (memory) still answers through the inbox, so every backend has one programming
//! model and a guest written against one runs on the others.
//!
//! - [`namespace`]: which names a namespace, bucket or topic may have, and the
//!   limits every operation is held to.
//! - [`memory`]: the in-memory backend (`--store memory`).
//! - [`sqlite`]: the embedded, durable backend (`--store PATH`).
//! - [`redis_store`]: the shared, remote backend (`--store redis://`), with
//!   [`redis_layout`] (its names and scripts), [`redis_ops`] (operations as
//!   commands, replies as outcomes), [`redis_health`] (its connections' state) and
//!   [`redis_relay`] (topics through Redis
//!   pub/sub).
//! - [`inbox`]: a worker's queue of finished operations and messages, and its wake-up.
//! - [`topics`]: publish and subscribe across every worker.
//! - [`shared`]: what every worker holds of the store: [`Stores`], and each
//!   worker's [`StoreLink`] to it.

use std::sync::Arc;

pub mod inbox;
pub mod memory;
pub mod namespace;
pub mod redis_health;
pub mod redis_layout;
pub mod redis_ops;
pub mod redis_relay;
pub mod redis_store;
pub mod shared;
pub mod sqlite;
pub mod topics;

pub use inbox::{Delivery, Inbox};
pub use memory::MemoryStore;
pub use namespace::{Namespace, StoreLimits};
pub use redis_store::{RedisOptions, RedisStore};
pub use shared::{StoreConfig, StoreKind, StoreLink, Stores};
pub use sqlite::SqliteStore;
pub use topics::Topics;

/// Who asked: the worker whose loop gets the answer, the guest instance (its owner
/// number there) the answer is for, and which instance of that owner (a restarted
/// one gets another serial: answers to its predecessor are dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Asker {
    /// The worker's index, which picks its inbox.
    pub worker: usize,
    /// The owner, as that worker's sockets side numbers guest instances.
    pub owner: u32,
    /// The instance, unique in the process.
    pub serial: u64,
}

/// Where a value lives in a namespace: a bucket (a plain name) and a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The bucket, as `wasi:keyvalue` opens one.
    pub bucket: String,
    /// The key in it.
    pub key: String,
}

impl Key {
    /// `key` in `bucket`.
    pub fn new(bucket: &str, key: &str) -> Self {
        Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }
    }
}

/// An operation on one namespace, shaped after `wasi:keyvalue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The value at the key.
    Get(Key),
    /// Sets the key to the value.
    Set(Key, Vec<u8>),
    /// Removes the key (not found if it was not there).
    Delete(Key),
    /// Whether the key is there.
    Exists(Key),
    /// Adds the delta to the decimal number the key holds (a missing key holds 0),
    /// atomically.
    Increment(Key, i64),
    /// Sets the key to the second value if it holds the first (`None`: if it is
    /// missing), atomically.
    CompareAndSwap(Key, Option<Vec<u8>>, Vec<u8>),
    /// Up to a page of a bucket's keys, in order, after the cursor (a key).
    ListKeys(String, Option<String>),
    /// The values of several keys of one bucket.
    GetMany(String, Vec<String>),
    /// Sets several keys of one bucket, all or none.
    SetMany(String, Vec<(String, Vec<u8>)>),
    /// Removes several keys of one bucket, all or none.
    DeleteMany(String, Vec<String>),
}

/// Every operation's name, as `/metrics` labels them, in [`Op::index`] order.
pub const OP_NAMES: [&str; 10] = [
    "get",
    "set",
    "delete",
    "exists",
    "increment",
    "compare-and-swap",
    "list-keys",
    "get-many",
    "set-many",
    "delete-many",
];

impl Op {
    /// Its place in [`OP_NAMES`].
    pub fn index(&self) -> u8 {
        match self {
            Self::Get(_) => 0,
            Self::Set(..) => 1,
            Self::Delete(_) => 2,
            Self::Exists(_) => 3,
            Self::Increment(..) => 4,
            Self::CompareAndSwap(..) => 5,
            Self::ListKeys(..) => 6,
            Self::GetMany(..) => 7,
            Self::SetMany(..) => 8,
            Self::DeleteMany(..) => 9,
        }
    }

    /// Its name, as `/metrics` labels it.
    pub fn name(&self) -> &'static str {
        OP_NAMES[usize::from(self.index())]
    }

    /// Whether it can change the store (a canary's shadow keeps these to itself).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            Self::Get(_) | Self::Exists(_) | Self::ListKeys(..) | Self::GetMany(..)
        )
    }

    /// Checks every name and size in it against `limits`, before a backend sees it.
    pub fn check(&self, limits: &StoreLimits) -> Result<(), StoreError> {
        let key = |key: &Key| {
            limits.check_name(&key.bucket)?;
            limits.check_key(&key.key)
        };
        match self {
            Self::Get(k) | Self::Delete(k) | Self::Exists(k) | Self::Increment(k, _) => key(k),
            Self::Set(k, value) => {
                key(k)?;
                limits.check_value(value)
            }
            Self::CompareAndSwap(k, old, new) => {
                key(k)?;
                if let Some(old) = old {
                    limits.check_value(old)?;
                }
                limits.check_value(new)
            }
            Self::ListKeys(bucket, cursor) => {
                limits.check_name(bucket)?;
                cursor.as_deref().map_or(Ok(()), |c| limits.check_key(c))
            }
            Self::GetMany(bucket, keys) | Self::DeleteMany(bucket, keys) => {
                limits.check_name(bucket)?;
                keys.iter().try_for_each(|k| limits.check_key(k))
            }
            Self::SetMany(bucket, entries) => {
                limits.check_name(bucket)?;
                entries.iter().try_for_each(|(k, v)| {
                    limits.check_key(k)?;
                    limits.check_value(v)
                })
            }
        }
    }
}

/// The entries of a `set-many`, each key once, with the last value given for it
/// (what setting them in order leaves), in the order of those last values: what a
/// backend sizes and writes, so that a key given twice is counted once.
pub fn last_of_each(entries: &[(String, Vec<u8>)]) -> Vec<(&String, &Vec<u8>)> {
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let mut kept: Vec<(&String, &Vec<u8>)> = entries
        .iter()
        .rev()
        .filter(|(key, _)| seen.insert(key.as_str()))
        .map(|(key, value)| (key, value))
        .collect();
    kept.reverse();
    kept
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `get`: the value.
    Value(Vec<u8>),
    /// `get` or `delete` of a missing key.
    NotFound,
    /// `set`, `delete` (of a key that was there) and the `-many` writes: done.
    Done,
    /// `exists`.
    Exists(bool),
    /// `increment`: the new value.
    Counter(i64),
    /// `compare-and-swap`: whether it swapped (false: the key held something else).
    Swapped(bool),
    /// `list-keys`: a page, and whether more keys follow (the page's last key is
    /// the cursor for the next).
    Keys(Vec<String>, bool),
    /// `get-many`: each key's value, in order.
    Values(Vec<Option<Vec<u8>>>),
    /// The operation was refused or failed.
    Failed(StoreError),
}

/// Why an operation failed: each is final for that operation. The contract's
/// `outcome` enum lists them after its three answers, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The key is longer than the host allows.
    KeyTooLarge,
    /// The value (or message) is larger than the host allows.
    ValueTooLarge,
    /// The namespace would hold more bytes than its limit.
    NamespaceFull,
    /// `increment` on a value that is not a decimal integer, or one that would
    /// overflow.
    NotANumber,
    /// A bucket or topic name that is not a plain name, or a bucket handle the
    /// instance did not open.
    BadName,
    /// Too many operations in flight, buckets or subscriptions for one instance.
    Busy,
    /// The backend cannot be reached, or cannot take the operation now (a remote one;
    /// never memory or a file): the operation was not sent, or did not run.
    Unavailable,
    /// The backend's answer did not come (a remote one): not within
    /// `--store-timeout`, or not before the connection broke. A write may or may not
    /// have happened.
    TimedOut,
    /// The backend failed (a disk error, say); the host logged why.
    Failed,
}

impl StoreError {
    /// Every error, in the contract's order.
    pub const ALL: [StoreError; 9] = [
        Self::KeyTooLarge,
        Self::ValueTooLarge,
        Self::NamespaceFull,
        Self::NotANumber,
        Self::BadName,
        Self::Busy,
        Self::Unavailable,
        Self::TimedOut,
        Self::Failed,
    ];

    /// Its place in [`StoreError::ALL`] (after the contract's three answers, its
    /// place in `outcome`).
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|e| *e == self)
            .expect("every error is in ALL")
    }

    /// Its name in the contract, as `/metrics` labels it.
    pub fn name(self) -> &'static str {
        match self {
            Self::KeyTooLarge => "key-too-large",
            Self::ValueTooLarge => "value-too-large",
            Self::NamespaceFull => "namespace-full",
            Self::NotANumber => "not-a-number",
            Self::BadName => "bad-name",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
            Self::TimedOut => "timed-out",
            Self::Failed => "failed",
        }
    }
}

/// Where operations go: a backend does each one, in the order submitted, and posts
/// its outcome to the asker's inbox. `submit` never waits on a disk or a network.
pub trait Backend: Send + Sync {
    /// Does `op` (checked against the limits already) in `namespace`, then posts
    /// `Delivery::Done` for `op_id` to `asker`'s worker through `inboxes`.
    fn submit(&self, job: Job);

    /// The bytes `namespace` holds, as far as this process knows, for `/metrics`.
    fn bytes_of(&self, namespace: &Namespace) -> u64;

    /// Takes `message`, published on `topic` of `namespace`, to every subscriber on
    /// every host that shares the backend; false if topics stay in the process (the
    /// caller then hands it to the process's subscribers itself).
    fn publish(&self, _namespace: &Namespace, _topic: &str, _message: &[u8]) -> bool {
        false
    }

    /// A topic gained its first subscriber in the process, or lost its last: a
    /// backend that carries topics listens to what the process's [`Topics`] hear.
    fn heard_changed(&self) {}

    /// Messages published that could not be handed on (a remote backend that could
    /// not be reached): counted in `/metrics`.
    fn unsent(&self) -> u64 {
        0
    }

    /// Why the backend cannot serve now, if it cannot (for `/readyz`): only a remote
    /// one can be unreachable.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// What a binary upgrade hands to the new process: only a store that lives in
    /// this process's memory has anything to hand (the others are files or servers
    /// the new process opens itself).
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }
}

/// One operation on its way to a backend.
#[derive(Debug)]
pub struct Job {
    /// Who gets the answer.
    pub asker: Asker,
    /// The guest's id for it.
    pub op_id: u64,
    /// Whose keys.
    pub namespace: Namespace,
    /// What to do.
    pub op: Op,
}

impl Job {
    /// Its answer, `outcome`, for the worker's inbox (`submitted`: when it was
    /// submitted, for the latency `/metrics` shows).
    pub fn done(&self, submitted: std::time::Instant, outcome: Outcome) -> Delivery {
        Delivery::Done {
            to: self.asker,
            op: self.op_id,
            kind: self.op.index(),
            outcome,
            submitted,
        }
    }

    /// Posts its answer to its worker's inbox, one of `inboxes`.
    pub fn answer(&self, inboxes: &[Arc<Inbox>], submitted: std::time::Instant, outcome: Outcome) {
        if let Some(inbox) = inboxes.get(self.asker.worker) {
            inbox.post(self.done(submitted, outcome));
        }
    }
}
