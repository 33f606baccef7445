//! [`SqliteStore`]: `--store PATH`, embedded and durable, in one SQLite file.
//!
//! Why SQLite: one file that several processes can open at once and share safely
//! (its own locks; a binary upgrade needs the old and the new host on it for a
//! moment), transactions for the atomic operations and the all-or-none batches,
//! decades of crash testing, and no server. (redb, the pure-Rust choice, locks its
//! file to one process.)
//!
//! A thread of its own does every operation, in the order submitted, so that no
//! worker ever waits on the disk: it takes what has queued up (at most
//! [`GROUP`] operations), does them in one transaction, commits, and only then
//! answers them (group commit: one fsync for many writes). The file is in WAL mode
//! with `synchronous=FULL`: a commit returns once the log is on disk. So an
//! operation acknowledged (its `store` event delivered) survives the process being
//! killed at any moment, and a power loss too, as far as the disk keeps what an
//! fsync told it; what was not yet acknowledged may or may not be there.
//!
//! The bytes each namespace holds are a table in the file, updated in the same
//! transaction as the writes, so that two processes on one file count alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tracing::error;

use super::memory::{LIST_PAGE, increment};
use super::{Backend, Inbox, Job, Namespace, Op, Outcome, StoreError, StoreLimits, last_of_each};

/// The most operations one transaction does: enough to spread one fsync over a
/// burst, few enough that the first answer is not held up for long.
pub const GROUP: usize = 512;

/// How long an operation waits for another process's write lock on the file
/// before it fails: in the store's thread, never in a worker's.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The file's tables: every entry, keyed by namespace, bucket and key (ordered, so
/// that listing with a cursor is a range), and each namespace's bytes.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS entries (
        namespace TEXT NOT NULL,
        bucket TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (namespace, bucket, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS usage (
        namespace TEXT PRIMARY KEY NOT NULL,
        bytes INTEGER NOT NULL
    ) WITHOUT ROWID;
";

/// The store on one file, with the thread that does its operations.
pub struct SqliteStore {
    jobs: Sender<(Job, Instant)>,
    /// Where an operation is answered if the store's thread is gone.
    inboxes: Vec<Arc<Inbox>>,
    /// Each namespace's bytes as of the last transaction, for `/metrics`.
    bytes: Arc<Mutex<HashMap<Namespace, u64>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` and starts its thread; answers go to
    /// `inboxes`, by worker. An error names the file and what went wrong.
    pub fn open(path: &Path, limits: StoreLimits, inboxes: Vec<Arc<Inbox>>) -> Result<Self> {
        let conn =
            open(path).with_context(|| format!("cannot open the store {}", path.display()))?;
        let known = usage_of_all(&conn)
            .with_context(|| format!("cannot read the store {}", path.display()))?;
        let (jobs, queue) = mpsc::channel();
        let bytes = Arc::new(Mutex::new(known));
        let answers = inboxes.clone();
        let worker = Worker {
            conn,
            path: path.to_path_buf(),
            limits,
            inboxes,
            bytes: bytes.clone(),
        };
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || worker.run(queue))
            .context("cannot start the store's thread")?;
        Ok(Self {
            jobs,
            inboxes: answers,
            bytes,
        })
    }
}

impl Backend for SqliteStore {
    fn submit(&self, job: Job) {
        // The thread ends only with the process, or if it panicked: then the
        // operation is answered `failed` here, never left without an answer.
        if let Err(mpsc::SendError((job, submitted))) = self.jobs.send((job, Instant::now())) {
            job.answer(
                &self.inboxes,
                submitted,
                Outcome::Failed(StoreError::Failed),
            );
        }
    }

    fn bytes_of(&self, namespace: &Namespace) -> u64 {
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        bytes.get(namespace).copied().unwrap_or(0)
    }
}

/// Opens the file in WAL mode with full sync and the tables in place. A new file is
/// made readable by its owner alone (SQLite gives its `-wal` and `-shm` files the
/// same mode): it holds the guest's data.
fn open(path: &Path) -> Result<Connection> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    Ok(configure(Connection::open(path)?)?)
}

fn configure(conn: Connection) -> rusqlite::Result<Connection> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// What every namespace in the file holds, as it was opened (for `/metrics` until
/// the first write; another process's writes show from this one's next write).
fn usage_of_all(conn: &Connection) -> rusqlite::Result<HashMap<Namespace, u64>> {
    let mut statement = conn.prepare("SELECT namespace, bytes FROM usage")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut known = HashMap::new();
    for row in rows {
        let (name, bytes) = row?;
        if let Ok(namespace) = Namespace::new(&name) {
            known.insert(namespace, bytes.max(0) as u64);
        }
    }
    Ok(known)
}

/// The store's thread: the connection and where answers go.
struct Worker {
    conn: Connection,
    path: PathBuf,
    limits: StoreLimits,
    inboxes: Vec<Arc<Inbox>>,
    bytes: Arc<Mutex<HashMap<Namespace, u64>>>,
}

impl Worker {
    /// Runs until every sender is gone (the process exits).
    fn run(mut self, queue: Receiver<(Job, Instant)>) {
        let mut group = Vec::with_capacity(GROUP);
        let mut outcomes = Vec::with_capacity(GROUP);
        while let Ok(first) = queue.recv() {
            group.push(first);
            while group.len() < GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            if let Err(err) = self.transaction(&group, &mut outcomes) {
                error!(store = %self.path.display(), "a store transaction failed: {err}");
                outcomes.clear();
                outcomes.resize(group.len(), Outcome::Failed(StoreError::Failed));
            }
            for ((job, submitted), outcome) in group.drain(..).zip(outcomes.drain(..)) {
                job.answer(&self.inboxes, submitted, outcome);
            }
        }
    }

    /// Does every job of `group` in one transaction, their outcomes into
    /// `outcomes`, and commits. An error undoes all of them.
    fn transaction(
        &mut self,
        group: &[(Job, Instant)],
        outcomes: &mut Vec<Outcome>,
    ) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut touched: Vec<(&Namespace, u64)> = Vec::new();
        for (job, _) in group {
            let outcome = match job.op.check(&self.limits) {
                Ok(()) => apply(&tx, &self.limits, &job.namespace, &job.op)?,
                Err(error) => Outcome::Failed(error),
            };
            outcomes.push(outcome);
            if !touched.iter().any(|(ns, _)| *ns == &job.namespace) {
                touched.push((&job.namespace, 0));
            }
        }
        for (namespace, bytes) in &mut touched {
            *bytes = usage(&tx, namespace.as_str())?;
        }
        tx.commit()?;
        let mut known = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        for (namespace, bytes) in touched {
            known.insert(namespace.clone(), bytes);
        }
        Ok(())
    }
}

/// Does `op` in `namespace` inside the open transaction. A limit is an outcome; an
/// error is SQLite's.
fn apply(
    tx: &rusqlite::Transaction<'_>,
    limits: &StoreLimits,
    namespace: &Namespace,
    op: &Op,
) -> rusqlite::Result<Outcome> {
    let ns = namespace.as_str();
    Ok(match op {
        Op::Get(key) => match value(tx, ns, &key.bucket, &key.key)? {
            Some(value) => Outcome::Value(value),
            None => Outcome::NotFound,
        },
        Op::Exists(key) => Outcome::Exists(value(tx, ns, &key.bucket, &key.key)?.is_some()),
        Op::Set(key, new) => match put(tx, limits, ns, &key.bucket, &[(&key.key, new)])? {
            Ok(()) => Outcome::Done,
            Err(error) => Outcome::Failed(error),
        },
        Op::Delete(key) => {
            if remove(tx, ns, &key.bucket, &key.key)? {
                Outcome::Done
            } else {
                Outcome::NotFound
            }
        }
        Op::Increment(key, delta) => {
            let now = value(tx, ns, &key.bucket, &key.key)?;
            match increment(now.as_deref(), *delta) {
                Err(error) => Outcome::Failed(error),
                Ok(next) => {
                    let text = next.to_string().into_bytes();
                    match put(tx, limits, ns, &key.bucket, &[(&key.key, &text)])? {
                        Ok(()) => Outcome::Counter(next),
                        Err(error) => Outcome::Failed(error),
                    }
                }
            }
        }
        Op::CompareAndSwap(key, expected, new) => {
            if value(tx, ns, &key.bucket, &key.key)? != *expected {
                return Ok(Outcome::Swapped(false));
            }
            match put(tx, limits, ns, &key.bucket, &[(&key.key, new)])? {
                Ok(()) => Outcome::Swapped(true),
                Err(error) => Outcome::Failed(error),
            }
        }
        Op::ListKeys(bucket, cursor) => {
            let mut statement = tx.prepare_cached(
                "SELECT key FROM entries WHERE namespace = ?1 AND bucket = ?2 \
                 AND (?3 IS NULL OR key > ?3) ORDER BY key LIMIT ?4",
            )?;
            let after = cursor.as_deref();
            let mut keys = statement
                .query_map(params![ns, bucket, after, LIST_PAGE as i64 + 1], |row| {
                    row.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            let more = keys.len() > LIST_PAGE;
            keys.truncate(LIST_PAGE);
            Outcome::Keys(keys, more)
        }
        Op::GetMany(bucket, keys) => Outcome::Values(
            keys.iter()
                .map(|key| value(tx, ns, bucket, key))
                .collect::<rusqlite::Result<_>>()?,
        ),
        Op::SetMany(bucket, entries) => {
            let entries: Vec<(&str, &Vec<u8>)> = last_of_each(entries)
                .into_iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect();
            match put(tx, limits, ns, bucket, &entries)? {
                Ok(()) => Outcome::Done,
                Err(error) => Outcome::Failed(error),
            }
        }
        Op::DeleteMany(bucket, keys) => {
            for key in keys {
                remove(tx, ns, bucket, key)?;
            }
            Outcome::Done
        }
    })
}

fn value(
    tx: &rusqlite::Transaction<'_>,
    ns: &str,
    bucket: &str,
    key: &str,
) -> rusqlite::Result<Option<Vec<u8>>> {
    tx.prepare_cached(
        "SELECT value FROM entries WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
    )?
    .query_row(params![ns, bucket, key], |row| row.get(0))
    .optional()
}

/// What an entry counts against its namespace: its bucket, key and value.
fn size(bucket: &str, key: &str, value: &[u8]) -> i64 {
    (bucket.len() + key.len() + value.len()) as i64
}

/// The bytes `ns` holds.
fn usage(tx: &rusqlite::Transaction<'_>, ns: &str) -> rusqlite::Result<u64> {
    let bytes: Option<i64> = tx
        .prepare_cached("SELECT bytes FROM usage WHERE namespace = ?1")?
        .query_row(params![ns], |row| row.get(0))
        .optional()?;
    Ok(bytes.unwrap_or(0).max(0) as u64)
}

fn add_usage(tx: &rusqlite::Transaction<'_>, ns: &str, delta: i64) -> rusqlite::Result<()> {
    if delta != 0 {
        tx.prepare_cached(
            "INSERT INTO usage (namespace, bytes) VALUES (?1, ?2) \
             ON CONFLICT (namespace) DO UPDATE SET bytes = bytes + ?2",
        )?
        .execute(params![ns, delta])?;
    }
    Ok(())
}

/// Stores every entry of `bucket` if the namespace has room for all of them
/// (counting what they replace); stores none if not.
fn put(
    tx: &rusqlite::Transaction<'_>,
    limits: &StoreLimits,
    ns: &str,
    bucket: &str,
    entries: &[(&str, &Vec<u8>)],
) -> rusqlite::Result<Result<(), StoreError>> {
    let mut delta = 0;
    for (key, new) in entries {
        let old = value(tx, ns, bucket, key)?;
        delta += size(bucket, key, new) - old.map_or(0, |old| size(bucket, key, &old));
    }
    if usage(tx, ns)? as i64 + delta > limits.max_namespace_bytes as i64 {
        return Ok(Err(StoreError::NamespaceFull));
    }
    let mut statement = tx.prepare_cached(
        "INSERT INTO entries (namespace, bucket, key, value) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (namespace, bucket, key) DO UPDATE SET value = excluded.value",
    )?;
    for (key, new) in entries {
        statement.execute(params![ns, bucket, key, new])?;
    }
    add_usage(tx, ns, delta)?;
    Ok(Ok(()))
}

/// Removes the entry; true if it was there.
fn remove(
    tx: &rusqlite::Transaction<'_>,
    ns: &str,
    bucket: &str,
    key: &str,
) -> rusqlite::Result<bool> {
    let Some(old) = value(tx, ns, bucket, key)? else {
        return Ok(false);
    };
    tx.prepare_cached("DELETE FROM entries WHERE namespace = ?1 AND bucket = ?2 AND key = ?3")?
        .execute(params![ns, bucket, key])?;
    add_usage(tx, ns, -size(bucket, key, &old))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Asker, Delivery, Key};

    const ASKER: Asker = Asker {
        worker: 0,
        owner: 1,
        serial: 1,
    };

    /// Submits `ops` and waits for their answers, in order.
    fn run(store: &SqliteStore, inbox: &Inbox, ns: &Namespace, ops: Vec<Op>) -> Vec<Outcome> {
        let count = ops.len();
        for (i, op) in ops.into_iter().enumerate() {
            store.submit(Job {
                asker: ASKER,
                op_id: i as u64 + 1,
                namespace: ns.clone(),
                op,
            });
        }
        let mut answers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while answers.len() < count {
            assert!(Instant::now() < deadline, "the store did not answer");
            let mut taken = Vec::new();
            inbox.take(&mut taken);
            for delivery in taken {
                if let Delivery::Done { op, outcome, .. } = delivery {
                    answers.push((op, outcome));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        answers.sort_by_key(|(op, _)| *op);
        answers.into_iter().map(|(_, outcome)| outcome).collect()
    }

    #[test]
    fn writes_survive_reopening_and_namespaces_stay_apart() {
        let dir = std::env::temp_dir().join(format!("sandsock-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        let limits = StoreLimits {
            max_key: 16,
            max_value: 16,
            max_namespace_bytes: 25,
        };
        let (a, b) = (Namespace::new("a").unwrap(), Namespace::new("b").unwrap());
        let set = |k: &str, v: &[u8]| Op::Set(Key::new("x", k), v.to_vec());
        let get = |k: &str| Op::Get(Key::new("x", k));
        {
            let inbox = Inbox::new();
            let store = SqliteStore::open(&path, limits, vec![inbox.clone()]).unwrap();
            let answers = run(
                &store,
                &inbox,
                &a,
                vec![
                    set("k", b"one"),
                    get("k"),
                    Op::Increment(Key::new("x", "n"), 41),
                    Op::Increment(Key::new("x", "n"), 1),
                    set("big", &[0; 17]),
                    set("full", &[0; 16]),
                    Op::CompareAndSwap(Key::new("x", "k"), Some(b"two".to_vec()), b"3".to_vec()),
                ],
            );
            assert_eq!(
                answers,
                [
                    Outcome::Done,
                    Outcome::Value(b"one".to_vec()),
                    Outcome::Counter(41),
                    Outcome::Counter(42),
                    Outcome::Failed(StoreError::ValueTooLarge),
                    Outcome::Failed(StoreError::NamespaceFull),
                    Outcome::Swapped(false),
                ]
            );
            assert_eq!(store.bytes_of(&a), 1 + 1 + 3 + 1 + 1 + 2);
            assert_eq!(run(&store, &inbox, &b, vec![get("k")]), [Outcome::NotFound]);
        }
        let inbox = Inbox::new();
        let store = SqliteStore::open(&path, limits, vec![inbox.clone()]).unwrap();
        assert_eq!(
            run(&store, &inbox, &a, vec![get("k"), get("n")]),
            [
                Outcome::Value(b"one".to_vec()),
                Outcome::Value(b"42".to_vec())
            ],
            "what was answered is in the file"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
