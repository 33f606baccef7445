//! [`StoreSession`]: one instance's use of the host-held store and topics (contract
//! 1.1): its buckets, its operations' ids, its subscriptions, and the answers
//! waiting for its next call. The imports that use it are `store_imports.rs`.
//!
//! Every operation gets an id at once and is submitted to the backend through the
//! worker's [`StoreLink`]; even one refused at once (a bad bucket, too many in
//! flight) is answered by event, through the same inbox, so a guest has one path
//! for every outcome. The worker's handler routes each answer to the instance's
//! `mail`, which the next call lowers into events (`contracts/v1_0.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::shadow_store::{MAX_RECORDED, Recording, ShadowStore};
use crate::sockets::owners::{HOST, Owner};
use crate::store::{Asker, Delivery, Op, Outcome, StoreError, StoreLink};

/// The owner a canary's shadow instances ask as: the worker's handler gives their
/// answers (reads through to the real store) to the canary.
pub const SHADOW_OWNER: Owner = HOST - 1;

/// Operations one instance may have in flight: each holds its key and value in the
/// backend's queue until answered, so this bounds what one guest can make the host
/// hold. Past it, an operation answers `busy`.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Buckets one instance may open.
pub const MAX_BUCKETS: usize = 64;

/// Subscriptions one instance may hold.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Serial numbers of instances, unique in the process: an answer meant for an
/// instance that ended is not given to the one that took its place.
static SERIALS: AtomicU64 = AtomicU64::new(1);

/// One instance's buckets, subscriptions, operations in flight, and the answers
/// and messages waiting for its next call.
#[derive(Debug)]
pub struct StoreSession {
    /// The worker's link, once the instance is attached to one (its first call).
    pub(super) link: Option<StoreLink>,
    pub(super) owner: Owner,
    pub(super) serial: u64,
    pub(super) buckets: Vec<String>,
    pub(super) next_op: u64,
    pub(super) in_flight: usize,
    /// Its subscriptions, with their topics.
    pub(super) subscriptions: Vec<(u64, String)>,
    pub(super) next_subscription: u64,
    /// What came for this instance, in order, for its next call.
    pub(super) mail: Vec<Delivery>,
    /// While a canary tries a candidate against this (serving) instance: what it
    /// does with the store, for the shadows.
    pub(super) recording: Option<Recording>,
    /// With `--record`: the same, for the instance's tape.
    pub(super) tape: Option<Recording>,
}

impl Default for StoreSession {
    fn default() -> Self {
        Self {
            link: None,
            owner: 0,
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
            buckets: Vec::new(),
            next_op: 0,
            in_flight: 0,
            subscriptions: Vec::new(),
            next_subscription: 0,
            mail: Vec::new(),
            recording: None,
            tape: None,
        }
    }
}

impl Drop for StoreSession {
    /// An instance that ends stops hearing its topics.
    fn drop(&mut self) {
        if let Some(link) = &self.link
            && !self.subscriptions.is_empty()
        {
            link.forget(self.asker(link));
        }
    }
}

impl StoreSession {
    /// Attaches the instance to a worker's store as `owner` (once; later calls are
    /// a test of an `Option`).
    pub fn attach(&mut self, link: &StoreLink, owner: Owner) {
        if self.link.is_none() {
            self.link = Some(link.clone());
            self.owner = owner;
        }
    }

    /// Whether `delivery` is for this instance (and not for one it replaced).
    pub fn accepts(&self, delivery: &Delivery) -> bool {
        delivery.to().serial == self.serial
    }

    /// Who this instance asks as, once attached.
    pub fn asker_now(&self) -> Option<Asker> {
        self.link.as_ref().map(|link| self.asker(link))
    }

    /// Starts (or stops) recording what it does with the store, for a canary;
    /// recording on while it is already keeps what was recorded.
    pub fn record(&mut self, on: bool) {
        match on {
            true => {
                self.recording.get_or_insert_with(Recording::default);
            }
            false => self.recording = None,
        }
    }

    /// What it did since the last call, while recording.
    pub fn take_recording(&mut self) -> Option<Recording> {
        self.recording.as_mut().map(std::mem::take)
    }

    /// Starts recording what it does with the store for its tape (`--record`).
    pub fn record_tape(&mut self) {
        self.tape.get_or_insert_with(Recording::default);
    }

    /// What it did with the store since the last time, for its tape.
    pub fn take_tape(&mut self) -> Option<Recording> {
        self.tape.as_mut().map(std::mem::take)
    }

    /// Notes something in each recording that is on: the canary's, the tape's.
    pub(super) fn note(&mut self, each: impl FnMut(&mut Recording)) {
        note(&mut self.recording, &mut self.tape, each);
    }

    /// Takes `delivery` for the next call; true if nothing waited before it.
    pub fn deliver(&mut self, delivery: Delivery) -> bool {
        match &delivery {
            Delivery::Done { op, outcome, .. } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.note(|recording| {
                    if recording.answers.len() < MAX_RECORDED {
                        recording.answers.push((*op, outcome.clone()));
                    }
                });
            }
            Delivery::Message {
                subscription,
                bytes,
                ..
            } => {
                let recording = self.recording.is_some() || self.tape.is_some();
                let topic = self
                    .subscriptions
                    .iter()
                    .find(|(id, _)| recording && id == subscription)
                    .map(|(_, topic)| topic.clone());
                if let Some(topic) = topic {
                    self.note(|recording| {
                        if recording.messages.len() < MAX_RECORDED {
                            recording.messages.push((topic.clone(), bytes.clone()));
                        }
                    });
                }
            }
            Delivery::Lost { .. } => {}
        }
        self.mail.push(delivery);
        self.mail.len() == 1
    }

    pub(super) fn asker(&self, link: &StoreLink) -> Asker {
        Asker {
            worker: link.worker(),
            owner: self.owner,
            serial: self.serial,
        }
    }

    /// Submits `op` (on the bucket handle `bucket`), answering its id; a refusal is
    /// answered by event like any outcome. A canary's shadow (`shadow`) submits to
    /// its own view instead, reading through to the real store only.
    pub(super) fn submit(
        &mut self,
        bucket: u32,
        op: impl FnOnce(String) -> Op,
        shadow: Option<&mut ShadowStore>,
    ) -> u64 {
        self.next_op += 1;
        let id = self.next_op;
        let Some(link) = self.link.clone() else {
            // Outside a worker (the io contract's table): nothing to answer through.
            return id;
        };
        let asker = self.asker(&link);
        self.in_flight += 1;
        let name = self.buckets.get(bucket as usize);
        let op = op(name.cloned().unwrap_or_default());
        let kind = op.index();
        let refused = if self.in_flight > MAX_IN_FLIGHT {
            Some(StoreError::Busy)
        } else {
            match name {
                None => Some(StoreError::BadName),
                Some(_) => match op.check(link.limits()) {
                    Ok(()) => {
                        match shadow {
                            Some(shadow) => shadow.submit(id, op, |id, op| {
                                link.submit(asker, id, op);
                            }),
                            None => {
                                note(&mut self.recording, &mut self.tape, |recording| {
                                    if recording.ops.len() < MAX_RECORDED {
                                        recording.ops.push((id, op.clone()));
                                    }
                                });
                                link.submit(asker, id, op);
                            }
                        }
                        None
                    }
                    Err(error) => Some(error),
                },
            }
        };
        if let Some(error) = refused {
            link.inbox().post_local(Delivery::Done {
                to: asker,
                op: id,
                kind,
                outcome: Outcome::Failed(error),
                submitted: Instant::now(),
            });
        }
        id
    }
}

/// Notes something in each recording that is on (fields, not `self`, so that a
/// caller holding a borrow of another field can note).
fn note(
    recording: &mut Option<Recording>,
    tape: &mut Option<Recording>,
    mut each: impl FnMut(&mut Recording),
) {
    if let Some(recording) = recording {
        each(recording);
    }
    if let Some(tape) = tape {
        each(tape);
    }
}
