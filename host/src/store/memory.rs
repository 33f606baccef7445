//! [`MemoryStore`]: `--store memory`, shared by the workers of one process and gone
//! at exit. An operation is done in the submitting worker's thread, under one lock
//! held for a map lookup and a copy, and answered through that worker's inbox like
//! every backend's.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Backend, Inbox, Job, Namespace, Op, Outcome, StoreError, StoreLimits, last_of_each};

/// Keys one `list-keys` answers at most.
pub const LIST_PAGE: usize = 100;

/// What one namespace holds.
#[derive(Debug, Default)]
struct Held {
    /// By bucket, then key (ordered, so that listing with a cursor is a range):
    /// looked up by `&str`, so that a lookup allocates nothing.
    buckets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Keys and values, in bytes, against `max_namespace_bytes`.
    bytes: u64,
}

impl Held {
    fn get(&self, bucket: &str, key: &str) -> Option<&Vec<u8>> {
        self.buckets.get(bucket)?.get(key)
    }
}

/// Every namespace's keys, behind one lock: an operation holds it for a map
/// lookup and a copy, never across a guest call or a syscall.
#[derive(Debug)]
pub struct MemoryStore {
    namespaces: Mutex<HashMap<Namespace, Held>>,
    limits: StoreLimits,
    /// By worker index: where answers go.
    inboxes: Vec<Arc<Inbox>>,
}

impl MemoryStore {
    /// An empty store held to `limits`, answering into `inboxes` (by worker).
    pub fn new(limits: StoreLimits, inboxes: Vec<Arc<Inbox>>) -> Self {
        Self {
            namespaces: Mutex::new(HashMap::new()),
            limits,
            inboxes,
        }
    }

    /// Does `op` in `namespace`, atomically.
    pub fn apply(&self, namespace: &Namespace, op: &Op) -> Outcome {
        let mut namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !namespaces.contains_key(namespace) {
            namespaces.insert(namespace.clone(), Held::default());
        }
        let held = namespaces.get_mut(namespace).expect("inserted");
        match apply(held, &self.limits, op) {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Failed(error),
        }
    }

    /// Every namespace's keys and values, for a binary upgrade to hand to the new
    /// process: a count, then (namespace, bucket, key, value) each as a `u32`
    /// length and its bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = Vec::new();
        let mut count = 0u64;
        out.extend_from_slice(&0u64.to_le_bytes());
        for (namespace, held) in namespaces.iter() {
            for (bucket, keys) in &held.buckets {
                for (key, value) in keys {
                    for part in [
                        namespace.as_str().as_bytes(),
                        bucket.as_bytes(),
                        key.as_bytes(),
                        value,
                    ] {
                        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                        out.extend_from_slice(part);
                    }
                    count += 1;
                }
            }
        }
        out[..8].copy_from_slice(&count.to_le_bytes());
        out
    }

    /// Takes in what [`MemoryStore::snapshot`] gave, checking every length; the
    /// values were within the same limits in the old process, and are put back
    /// whatever this one's are (a value never disappears in an upgrade).
    pub fn restore(&self, snapshot: &[u8]) -> Result<u64, String> {
        let mut at = snapshot;
        let mut take = |n: usize| -> Result<&[u8], String> {
            if at.len() < n {
                return Err("the store snapshot ends early".into());
            }
            let (part, rest) = at.split_at(n);
            at = rest;
            Ok(part)
        };
        let count = u64::from_le_bytes(take(8)?.try_into().expect("eight bytes"));
        let mut namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..count {
            let mut parts: [&[u8]; 4] = [&[]; 4];
            for part in &mut parts {
                let len = u32::from_le_bytes(take(4)?.try_into().expect("four bytes"));
                *part = take(len as usize)?;
            }
            let text = |bytes: &[u8]| {
                std::str::from_utf8(bytes)
                    .map(str::to_string)
                    .map_err(|_| "a store snapshot name is not UTF-8".to_string())
            };
            let namespace = Namespace::new(&text(parts[0])?)?;
            let (bucket, key) = (text(parts[1])?, text(parts[2])?);
            let held = namespaces.entry(namespace).or_default();
            held.bytes += size(&bucket, &key, parts[3]);
            held.buckets
                .entry(bucket)
                .or_default()
                .insert(key, parts[3].to_vec());
        }
        Ok(count)
    }
}

impl Backend for MemoryStore {
    /// Done at once, in the submitting worker's thread, and answered through its
    /// inbox: the guest hears it in the next batch, as from any backend.
    fn submit(&self, job: Job) {
        let submitted = Instant::now();
        let outcome = self.apply(&job.namespace, &job.op);
        if let Some(inbox) = self.inboxes.get(job.asker.worker) {
            inbox.post_local(job.done(submitted, outcome));
        }
    }

    fn bytes_of(&self, namespace: &Namespace) -> u64 {
        let namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        namespaces.get(namespace).map_or(0, |held| held.bytes)
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(MemoryStore::snapshot(self))
    }
}

fn apply(held: &mut Held, limits: &StoreLimits, op: &Op) -> Result<Outcome, StoreError> {
    op.check(limits)?;
    Ok(match op {
        Op::Get(k) => match held.get(&k.bucket, &k.key) {
            Some(value) => Outcome::Value(value.clone()),
            None => Outcome::NotFound,
        },
        Op::Exists(k) => Outcome::Exists(held.get(&k.bucket, &k.key).is_some()),
        Op::Set(k, value) => {
            put(held, limits, &k.bucket, &[(&k.key, value)])?;
            Outcome::Done
        }
        Op::Delete(k) => {
            if remove(held, &k.bucket, &k.key) {
                Outcome::Done
            } else {
                Outcome::NotFound
            }
        }
        Op::Increment(k, delta) => {
            let next = increment(held.get(&k.bucket, &k.key).map(Vec::as_slice), *delta)?;
            put(
                held,
                limits,
                &k.bucket,
                &[(&k.key, &next.to_string().into_bytes())],
            )?;
            Outcome::Counter(next)
        }
        Op::CompareAndSwap(k, expected, new) => {
            if held.get(&k.bucket, &k.key) != expected.as_ref() {
                return Ok(Outcome::Swapped(false));
            }
            put(held, limits, &k.bucket, &[(&k.key, new)])?;
            Outcome::Swapped(true)
        }
        Op::ListKeys(bucket, cursor) => {
            let Some(keys) = held.buckets.get(bucket) else {
                return Ok(Outcome::Keys(Vec::new(), false));
            };
            let after = match cursor {
                Some(cursor) => Bound::Excluded(cursor.as_str()),
                None => Bound::Unbounded,
            };
            let mut page: Vec<String> = keys
                .range::<str, _>((after, Bound::Unbounded))
                .map(|(key, _)| key.clone())
                .take(LIST_PAGE + 1)
                .collect();
            let more = page.len() > LIST_PAGE;
            page.truncate(LIST_PAGE);
            Outcome::Keys(page, more)
        }
        Op::GetMany(bucket, keys) => Outcome::Values(
            keys.iter()
                .map(|key| held.get(bucket, key).cloned())
                .collect(),
        ),
        Op::SetMany(bucket, entries) => {
            put(held, limits, bucket, &last_of_each(entries))?;
            Outcome::Done
        }
        Op::DeleteMany(bucket, keys) => {
            for key in keys {
                remove(held, bucket, key);
            }
            Outcome::Done
        }
    })
}

/// `increment`'s new value: `delta` added to the decimal integer `now` holds (a
/// missing key holds 0).
pub fn increment(now: Option<&[u8]>, delta: i64) -> Result<i64, StoreError> {
    let now = match now {
        None => 0,
        // As Redis reads one: `-12`, not `+12`, `012` or `-0`, so that every backend
        // takes the same values.
        Some(value) => std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<i64>().ok().filter(|n| n.to_string() == text))
            .ok_or(StoreError::NotANumber)?,
    };
    now.checked_add(delta).ok_or(StoreError::NotANumber)
}

/// Stores every entry in `bucket` if the namespace has room for all of them
/// (counting what they replace); none if not.
fn put(
    held: &mut Held,
    limits: &StoreLimits,
    bucket: &str,
    entries: &[(&String, &Vec<u8>)],
) -> Result<(), StoreError> {
    let mut bytes = held.bytes;
    for (key, value) in entries {
        let old = held
            .get(bucket, key)
            .map_or(0, |old| size(bucket, key, old));
        bytes = bytes - old + size(bucket, key, value);
    }
    if bytes > limits.max_namespace_bytes {
        return Err(StoreError::NamespaceFull);
    }
    held.bytes = bytes;
    if !held.buckets.contains_key(bucket) {
        held.buckets.insert(bucket.to_string(), BTreeMap::new());
    }
    let keys = held.buckets.get_mut(bucket).expect("inserted");
    for (key, value) in entries {
        match keys.get_mut(key.as_str()) {
            Some(slot) => slot.clone_from(value),
            None => {
                keys.insert((*key).clone(), (*value).clone());
            }
        }
    }
    Ok(())
}

/// Removes the entry; true if it was there.
fn remove(held: &mut Held, bucket: &str, key: &str) -> bool {
    let Some(keys) = held.buckets.get_mut(bucket) else {
        return false;
    };
    let Some(old) = keys.remove(key) else {
        return false;
    };
    held.bytes -= size(bucket, key, &old);
    if keys.is_empty() {
        held.buckets.remove(bucket);
    }
    true
}

/// What an entry counts against its namespace: its bucket, key and value.
fn size(bucket: &str, key: &str, value: &[u8]) -> u64 {
    (bucket.len() + key.len() + value.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Key;

    fn store() -> MemoryStore {
        let limits = StoreLimits {
            max_key: 16,
            max_value: 16,
            max_namespace_bytes: 60,
        };
        MemoryStore::new(limits, Vec::new())
    }

    fn ns(name: &str) -> Namespace {
        Namespace::new(name).unwrap()
    }

    fn set(key: &str, value: &[u8]) -> Op {
        Op::Set(Key::new("b", key), value.to_vec())
    }

    fn get(key: &str) -> Op {
        Op::Get(Key::new("b", key))
    }

    #[test]
    fn a_snapshot_restores_every_value_and_the_byte_count() {
        let old = store();
        let (a, b) = (ns("a"), ns("b"));
        old.apply(&a, &set("k", b"one"));
        old.apply(&a, &Op::Set(Key::new("other", "k"), b"two".to_vec()));
        old.apply(&b, &set("k", b"\x00\xff"));
        let new = store();
        assert_eq!(new.restore(&old.snapshot()), Ok(3));
        assert_eq!(new.apply(&a, &get("k")), Outcome::Value(b"one".to_vec()));
        let other = Op::Get(Key::new("other", "k"));
        assert_eq!(new.apply(&a, &other), Outcome::Value(b"two".to_vec()));
        assert_eq!(
            new.apply(&b, &get("k")),
            Outcome::Value(b"\x00\xff".to_vec())
        );
        assert_eq!(new.bytes_of(&a), old.bytes_of(&a));
        let snapshot = old.snapshot();
        assert!(store().restore(&snapshot[..snapshot.len() - 1]).is_err());
    }

    #[test]
    fn set_get_delete_and_namespaces_apart() {
        let store = store();
        let (a, b) = (ns("a"), ns("b"));
        assert_eq!(store.apply(&a, &set("k", b"one")), Outcome::Done);
        assert_eq!(store.apply(&a, &get("k")), Outcome::Value(b"one".to_vec()));
        assert_eq!(
            store.apply(&b, &get("k")),
            Outcome::NotFound,
            "another namespace"
        );
        let delete = Op::Delete(Key::new("b", "k"));
        assert_eq!(store.apply(&a, &delete), Outcome::Done);
        assert_eq!(store.apply(&a, &delete), Outcome::NotFound, "gone already");
        assert_eq!(store.apply(&a, &get("k")), Outcome::NotFound);
        assert_eq!(Backend::bytes_of(&store, &a), 0);
    }

    #[test]
    fn limits_are_errors_and_a_full_namespace_takes_no_more() {
        let store = store();
        let a = ns("a");
        let long = "k".repeat(17);
        assert_eq!(
            store.apply(&a, &set(&long, b"x")),
            Outcome::Failed(StoreError::KeyTooLarge)
        );
        assert_eq!(
            store.apply(&a, &set("k", &[0; 17])),
            Outcome::Failed(StoreError::ValueTooLarge)
        );
        // Each entry counts its bucket, key and value: 1 + 2 + 12 bytes.
        for i in 0..4 {
            assert_eq!(
                store.apply(&a, &set(&format!("k{i}"), &[0; 12])),
                Outcome::Done
            );
        }
        assert_eq!(Backend::bytes_of(&store, &a), 60);
        assert_eq!(
            store.apply(&a, &set("k9", &[0; 12])),
            Outcome::Failed(StoreError::NamespaceFull)
        );
        assert_eq!(
            store.apply(&a, &set("k0", &[0; 13])),
            Outcome::Failed(StoreError::NamespaceFull),
            "a replacement counts what it replaces"
        );
        assert_eq!(store.apply(&a, &set("k0", &[0; 11])), Outcome::Done);
    }

    #[test]
    fn increment_and_compare_and_swap() {
        let store = store();
        let a = ns("a");
        let incr = |delta| Op::Increment(Key::new("b", "n"), delta);
        assert_eq!(store.apply(&a, &incr(5)), Outcome::Counter(5));
        assert_eq!(store.apply(&a, &incr(-7)), Outcome::Counter(-2));
        assert_eq!(store.apply(&a, &get("n")), Outcome::Value(b"-2".to_vec()));
        store.apply(&a, &set("t", b"text"));
        let on_text = Op::Increment(Key::new("b", "t"), 1);
        assert_eq!(
            store.apply(&a, &on_text),
            Outcome::Failed(StoreError::NotANumber)
        );

        let cas = |expected: Option<&[u8]>, new: &[u8]| {
            Op::CompareAndSwap(
                Key::new("b", "c"),
                expected.map(<[u8]>::to_vec),
                new.to_vec(),
            )
        };
        assert_eq!(store.apply(&a, &cas(None, b"1")), Outcome::Swapped(true));
        assert_eq!(store.apply(&a, &cas(None, b"2")), Outcome::Swapped(false));
        assert_eq!(
            store.apply(&a, &cas(Some(b"1"), b"2")),
            Outcome::Swapped(true)
        );
        assert_eq!(store.apply(&a, &get("c")), Outcome::Value(b"2".to_vec()));
    }

    #[test]
    fn keys_are_listed_a_page_at_a_time() {
        let store = MemoryStore::new(StoreLimits::default(), Vec::new());
        let a = ns("a");
        for i in 0..250 {
            store.apply(&a, &set(&format!("key{i:03}"), b"v"));
        }
        store.apply(&a, &Op::Set(Key::new("other", "zzz"), b"v".to_vec()));
        let mut cursor = None;
        let mut all = Vec::new();
        loop {
            let list = Op::ListKeys("b".into(), cursor.clone());
            let Outcome::Keys(keys, more) = store.apply(&a, &list) else {
                panic!("a list of keys");
            };
            assert!(keys.len() <= LIST_PAGE);
            cursor = keys.last().cloned();
            all.extend(keys);
            if !more {
                break;
            }
        }
        let expected: Vec<String> = (0..250).map(|i| format!("key{i:03}")).collect();
        assert_eq!(all, expected, "every key of the bucket once, in order");
    }

    #[test]
    fn many_at_once_is_all_or_none() {
        let store = store();
        let a = ns("a");
        let entries = |n: usize| {
            (0..n)
                .map(|i| (format!("m{i}"), vec![0; 12]))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            store.apply(&a, &Op::SetMany("b".into(), entries(5))),
            Outcome::Failed(StoreError::NamespaceFull),
            "five entries do not fit"
        );
        assert_eq!(Backend::bytes_of(&store, &a), 0, "and none was stored");
        assert_eq!(
            store.apply(&a, &Op::SetMany("b".into(), entries(2))),
            Outcome::Done
        );
        let twice = vec![
            ("m0".to_string(), vec![1; 3]),
            ("m0".to_string(), vec![2; 5]),
        ];
        assert_eq!(
            store.apply(&a, &Op::SetMany("b".into(), twice)),
            Outcome::Done
        );
        assert_eq!(
            Backend::bytes_of(&store, &a),
            (1 + 2 + 5) + (1 + 2 + 12),
            "a key given twice counts once, with its last value"
        );
        assert_eq!(store.apply(&a, &get("m0")), Outcome::Value(vec![2; 5]));
        store.apply(&a, &Op::Set(Key::new("b", "m0"), vec![0; 12]));
        let keys = vec!["m0".to_string(), "nope".to_string(), "m1".to_string()];
        assert_eq!(
            store.apply(&a, &Op::GetMany("b".into(), keys.clone())),
            Outcome::Values(vec![Some(vec![0; 12]), None, Some(vec![0; 12])])
        );
        assert_eq!(
            store.apply(&a, &Op::DeleteMany("b".into(), keys)),
            Outcome::Done
        );
        assert_eq!(Backend::bytes_of(&store, &a), 0);
    }
}
