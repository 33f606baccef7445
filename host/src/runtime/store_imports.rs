//! The host side of the `store` and `topics` imports (contract 1.1): each call
//! goes to the instance's [`StoreSession`](super::store_session::StoreSession), or, for a canary's shadow, to the
//! shadow's own view of the store (`shadow_store.rs`).

use super::imports::GuestState;
use super::shadow_store::MAX_RECORDED;
use super::store_session::{MAX_BUCKETS, MAX_SUBSCRIPTIONS};
use crate::shared::wit::{StoreOutcome, sandsock};
use crate::store::{Key, Op, StoreError, StoreLink};

/// An error's place in the contract's `outcome`.
pub fn outcome_of(error: StoreError) -> StoreOutcome {
    match error {
        StoreError::KeyTooLarge => StoreOutcome::KeyTooLarge,
        StoreError::ValueTooLarge => StoreOutcome::ValueTooLarge,
        StoreError::NamespaceFull => StoreOutcome::NamespaceFull,
        StoreError::NotANumber => StoreOutcome::NotANumber,
        StoreError::BadName => StoreOutcome::BadName,
        StoreError::Busy => StoreOutcome::Busy,
        StoreError::Unavailable => StoreOutcome::Unavailable,
        StoreError::TimedOut => StoreOutcome::TimedOut,
        StoreError::Failed => StoreOutcome::Failed,
    }
}

fn key(bucket: String, key: String) -> Key {
    Key { bucket, key }
}

impl GuestState {
    /// An operation from this instance: to the store, or a shadow's view of it.
    fn submit_op(&mut self, bucket: u32, op: impl FnOnce(String) -> Op) -> u64 {
        let shadow = self.shadow.as_deref_mut().map(|io| &mut io.store);
        self.store.submit(bucket, op, shadow)
    }

    /// Moves a shadow's answers and messages to where the next call takes them.
    pub(super) fn collect_shadow_mail(&mut self) {
        if let Some(shadow) = self.shadow.as_deref_mut() {
            for delivery in shadow.store.mail.drain(..) {
                self.store.deliver(delivery);
            }
        }
    }
}

impl sandsock::net::store::Host for GuestState {
    fn open(&mut self, name: String) -> Result<u32, StoreOutcome> {
        let session = &mut self.store;
        if let Some(found) = session.buckets.iter().position(|b| *b == name) {
            return Ok(found as u32);
        }
        let limits = session.link.as_ref().map(StoreLink::limits);
        if let Some(limits) = limits
            && let Err(error) = limits.check_name(&name)
        {
            return Err(outcome_of(error));
        }
        if session.link.is_none() {
            return Err(StoreOutcome::Unavailable);
        }
        if session.buckets.len() >= MAX_BUCKETS {
            return Err(StoreOutcome::Busy);
        }
        session.buckets.push(name);
        Ok(session.buckets.len() as u32 - 1)
    }

    fn get(&mut self, b: u32, k: String) -> u64 {
        self.submit_op(b, |bucket| Op::Get(key(bucket, k)))
    }

    fn set(&mut self, b: u32, k: String, value: Vec<u8>) -> u64 {
        self.submit_op(b, |bucket| Op::Set(key(bucket, k), value))
    }

    fn delete(&mut self, b: u32, k: String) -> u64 {
        self.submit_op(b, |bucket| Op::Delete(key(bucket, k)))
    }

    fn exists(&mut self, b: u32, k: String) -> u64 {
        self.submit_op(b, |bucket| Op::Exists(key(bucket, k)))
    }

    fn list_keys(&mut self, b: u32, cursor: Option<String>) -> u64 {
        self.submit_op(b, |bucket| Op::ListKeys(bucket, cursor))
    }

    fn increment(&mut self, b: u32, k: String, delta: i64) -> u64 {
        self.submit_op(b, |bucket| Op::Increment(key(bucket, k), delta))
    }

    fn compare_and_swap(&mut self, b: u32, k: String, old: Option<Vec<u8>>, new: Vec<u8>) -> u64 {
        self.submit_op(b, |bucket| Op::CompareAndSwap(key(bucket, k), old, new))
    }

    fn get_many(&mut self, b: u32, keys: Vec<String>) -> u64 {
        self.submit_op(b, |bucket| Op::GetMany(bucket, keys))
    }

    fn set_many(&mut self, b: u32, entries: Vec<(String, Vec<u8>)>) -> u64 {
        self.submit_op(b, |bucket| Op::SetMany(bucket, entries))
    }

    fn delete_many(&mut self, b: u32, keys: Vec<String>) -> u64 {
        self.submit_op(b, |bucket| Op::DeleteMany(bucket, keys))
    }
}

impl sandsock::net::topics::Host for GuestState {
    fn subscribe(&mut self, topic: String) -> Result<u64, StoreOutcome> {
        let session = &mut self.store;
        let Some(link) = session.link.clone() else {
            return Err(StoreOutcome::Unavailable);
        };
        link.limits().check_name(&topic).map_err(outcome_of)?;
        if session.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(StoreOutcome::Busy);
        }
        if let Some(shadow) = self.shadow.as_deref_mut() {
            if shadow.store.subscriptions() >= MAX_SUBSCRIPTIONS {
                return Err(StoreOutcome::Busy);
            }
            return Ok(shadow.store.subscribe(topic));
        }
        session.next_subscription += 1;
        let id = session.next_subscription;
        link.subscribe(session.asker(&link), &topic, id);
        session.subscriptions.push((id, topic));
        Ok(id)
    }

    fn unsubscribe(&mut self, s: u64) {
        if let Some(shadow) = self.shadow.as_deref_mut() {
            shadow.store.unsubscribe(s);
            return;
        }
        let session = &mut self.store;
        let Some(at) = session.subscriptions.iter().position(|(id, _)| *id == s) else {
            return;
        };
        session.subscriptions.swap_remove(at);
        if let Some(link) = &session.link {
            link.unsubscribe(session.asker(link), s);
        }
    }

    fn publish(&mut self, topic: String, message: Vec<u8>) -> Result<(), StoreOutcome> {
        let Some(link) = &self.store.link else {
            return Err(StoreOutcome::Unavailable);
        };
        link.limits().check_name(&topic).map_err(outcome_of)?;
        link.limits().check_value(&message).map_err(outcome_of)?;
        if let Some(shadow) = self.shadow.as_deref_mut() {
            shadow.store.publish(&topic, &message);
            return Ok(());
        }
        link.publish(&topic, &message);
        self.store.note(|recording| {
            if recording.publishes.len() < MAX_RECORDED {
                recording.publishes.push((topic.clone(), message.clone()));
            }
        });
        Ok(())
    }
}
