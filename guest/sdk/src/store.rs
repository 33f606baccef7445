//! The host-held store and topics (contract 1.1), through [`Io`]: state that
//! outlives the instance, shared by every worker of the host and every generation
//! of the guest.
//!
//! No call waits. Each store operation answers at once with an [`OpId`], and its
//! result comes later, in [`Handler::on_store`](crate::Handler::on_store) with that
//! id, as an [`Answer`]. A guest keeps what it needs to go on (which connection
//! asked, say) by the id. Operations of one instance take effect in the order they
//! were made. Topic messages come in
//! [`Handler::on_message`](crate::Handler::on_message).
//!
//! ```no_run
//! use std::collections::HashMap;
//! use sandsock_sdk::{Answer, Bucket, Conn, Handler, Io, OpId};
//!
//! /// Counts the connections of every worker and every run: `N\n` to each.
//! #[derive(Default)]
//! struct Visits {
//!     bucket: Option<Bucket>,
//!     asked: HashMap<OpId, Conn>,
//! }
//!
//! impl Handler for Visits {
//!     fn on_accept(&mut self, io: &mut Io, conn: Conn) {
//!         let bucket = *self.bucket.get_or_insert_with(|| io.open_bucket("visits").unwrap());
//!         let op = io.increment(bucket, "count", 1);
//!         self.asked.insert(op, conn);
//!     }
//!
//!     fn on_store(&mut self, io: &mut Io, op: OpId, answer: Answer<'_>) {
//!         if let Some(conn) = self.asked.remove(&op) {
//!             match answer.number() {
//!                 Some(n) => io.write(conn, format!("{n}\n").as_bytes()),
//!                 None => io.write(conn, b"ERROR\n"),
//!             }
//!             io.close(conn);
//!         }
//!     }
//! }
//! # sandsock_sdk::serve!(Visits);
//! ```

use crate::Io;
pub use crate::raw::store::Outcome as StoreOutcome;

/// A bucket this instance opened with [`Io::open_bucket`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bucket(u32);

/// A store operation's id: its [`Answer`] comes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(u64);

impl OpId {
    /// The id as the host numbers it.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// An id from its number (for a guest that keeps ids in a snapshot).
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

/// A subscription made with [`Io::subscribe`]: its messages come with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subscription(u64);

impl Subscription {
    /// The id as the host numbers it.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// A subscription from its number.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

/// How one store operation ended, as its `store` event said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer<'a> {
    outcome: StoreOutcome,
    value: u64,
    bytes: &'a [u8],
}

impl<'a> Answer<'a> {
    /// The answer a `store` event carries: its outcome's position, its number and
    /// its bytes.
    pub(crate) fn new(code: u32, value: u64, bytes: &'a [u8]) -> Self {
        Self {
            outcome: outcome(code),
            value,
            bytes,
        }
    }

    /// An answer made up, for a handler's unit tests.
    pub fn from_parts(outcome: StoreOutcome, value: u64, bytes: &'a [u8]) -> Self {
        Self {
            outcome,
            value,
            bytes,
        }
    }

    /// The outcome: `Ok`, `NotFound`, `Conflict`, or an error.
    pub fn outcome(&self) -> StoreOutcome {
        self.outcome
    }

    /// `ok`.
    pub fn is_ok(&self) -> bool {
        self.outcome == StoreOutcome::Ok
    }

    /// The error, if the operation failed (anything but `ok`, `not-found` and
    /// `conflict`).
    pub fn error(&self) -> Option<StoreOutcome> {
        match self.outcome {
            StoreOutcome::Ok | StoreOutcome::NotFound | StoreOutcome::Conflict => None,
            error => Some(error),
        }
    }

    /// `get` (and each key of `get-many`): the value, if the key was there.
    pub fn value(&self) -> Option<&'a [u8]> {
        self.is_ok().then_some(self.bytes)
    }

    /// `increment`: the new number.
    pub fn number(&self) -> Option<i64> {
        self.is_ok().then_some(self.value as i64)
    }

    /// `get-many`: the position of this answer's key in the keys asked for.
    pub fn index(&self) -> usize {
        self.value as usize
    }

    /// `list-keys`: the keys of this page, in order (empty on an error).
    pub fn keys(&self) -> Keys<'a> {
        Keys(if self.is_ok() { self.bytes } else { &[] })
    }

    /// `list-keys`: whether more keys follow (ask again with the page's last key
    /// as the cursor).
    pub fn more(&self) -> bool {
        self.is_ok() && self.value == 1
    }
}

/// The keys of a `list-keys` page: each a little-endian u32 length and its bytes.
#[derive(Clone, Debug)]
pub struct Keys<'a>(&'a [u8]);

impl<'a> Iterator for Keys<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let len = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let key = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        // The host sends keys the guest stored as strings: always UTF-8.
        std::str::from_utf8(key).ok()
    }
}

/// The outcome at `code` in the WIT's `outcome`; `failed` for one this SDK does
/// not know.
fn outcome(code: u32) -> StoreOutcome {
    use StoreOutcome::*;
    const ALL: [StoreOutcome; 12] = [
        Ok,
        NotFound,
        Conflict,
        KeyTooLarge,
        ValueTooLarge,
        NamespaceFull,
        NotANumber,
        BadName,
        Busy,
        Unavailable,
        TimedOut,
        Failed,
    ];
    ALL.get(code as usize).copied().unwrap_or(Failed)
}

/// The store and topics. Every operation answers by [`Handler::on_store`]
/// (crate::Handler::on_store), never at once, even a refusal.
impl Io {
    /// Opens the bucket `name` of the guest's namespace: a plain name (letters,
    /// digits, `-`, `_`, `.`). Opening it again answers the same handle.
    pub fn open_bucket(&mut self, name: &str) -> Result<Bucket, StoreOutcome> {
        self.host_mut().store_open(name).map(Bucket)
    }

    /// The value of `key`: `ok` with [`Answer::value`], or `not-found`.
    pub fn get(&mut self, bucket: Bucket, key: &str) -> OpId {
        OpId(self.host_mut().store_get(bucket.0, key))
    }

    /// Sets `key` to `value`: `ok` once stored.
    pub fn set(&mut self, bucket: Bucket, key: &str, value: &[u8]) -> OpId {
        OpId(self.host_mut().store_set(bucket.0, key, value))
    }

    /// Removes `key`: `ok` if it was there, `not-found` if not.
    pub fn delete(&mut self, bucket: Bucket, key: &str) -> OpId {
        OpId(self.host_mut().store_delete(bucket.0, key))
    }

    /// Whether `key` is there: `ok` or `not-found`.
    pub fn exists(&mut self, bucket: Bucket, key: &str) -> OpId {
        OpId(self.host_mut().store_exists(bucket.0, key))
    }

    /// A page of the bucket's keys after `cursor` ([`Answer::keys`],
    /// [`Answer::more`]).
    pub fn list_keys(&mut self, bucket: Bucket, cursor: Option<&str>) -> OpId {
        OpId(self.host_mut().store_list_keys(bucket.0, cursor))
    }

    /// Adds `delta` to the number `key` holds, atomically: [`Answer::number`].
    pub fn increment(&mut self, bucket: Bucket, key: &str, delta: i64) -> OpId {
        OpId(self.host_mut().store_increment(bucket.0, key, delta))
    }

    /// Sets `key` to `new` if it holds `old` (`None`: if missing), atomically:
    /// `ok`, or `conflict`.
    pub fn compare_and_swap(
        &mut self,
        bucket: Bucket,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> OpId {
        OpId(
            self.host_mut()
                .store_compare_and_swap(bucket.0, key, old, new),
        )
    }

    /// The values of `keys`: one answer per key, in order ([`Answer::index`]).
    pub fn get_many(&mut self, bucket: Bucket, keys: &[&str]) -> OpId {
        OpId(self.host_mut().store_get_many(bucket.0, keys))
    }

    /// Sets every entry, all or none.
    pub fn set_many(&mut self, bucket: Bucket, entries: &[(&str, &[u8])]) -> OpId {
        OpId(self.host_mut().store_set_many(bucket.0, entries))
    }

    /// Removes every key, all or none.
    pub fn delete_many(&mut self, bucket: Bucket, keys: &[&str]) -> OpId {
        OpId(self.host_mut().store_delete_many(bucket.0, keys))
    }

    /// Subscribes to `topic`: its messages come in
    /// [`Handler::on_message`](crate::Handler::on_message).
    pub fn subscribe(&mut self, topic: &str) -> Result<Subscription, StoreOutcome> {
        self.host_mut().subscribe(topic).map(Subscription)
    }

    /// Ends a subscription (messages on their way may still come).
    pub fn unsubscribe(&mut self, subscription: Subscription) {
        self.host_mut().unsubscribe(subscription.0);
    }

    /// Publishes `message` on `topic`, to every subscriber of every worker (this
    /// instance's own subscriptions included).
    pub fn publish(&mut self, topic: &str, message: &[u8]) -> Result<(), StoreOutcome> {
        self.host_mut().publish(topic, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_the_wit_says() {
        let value = Answer::new(0, 0, b"v");
        assert_eq!(value.value(), Some(&b"v"[..]));
        assert_eq!(value.error(), None);
        let missing = Answer::new(1, 0, b"");
        assert_eq!(missing.value(), None);
        assert_eq!(missing.outcome(), StoreOutcome::NotFound);
        assert_eq!(Answer::new(0, (-5i64) as u64, b"").number(), Some(-5));
        assert_eq!(
            Answer::new(5, 0, b"").error(),
            Some(StoreOutcome::NamespaceFull)
        );
        assert_eq!(Answer::new(99, 0, b"").error(), Some(StoreOutcome::Failed));
        let mut page = Vec::new();
        for key in ["a", "bc"] {
            page.extend_from_slice(&(key.len() as u32).to_le_bytes());
            page.extend_from_slice(key.as_bytes());
        }
        let list = Answer::new(0, 1, &page);
        assert_eq!(list.keys().collect::<Vec<_>>(), ["a", "bc"]);
        assert!(list.more());
    }
}
