//! [`Stores`]: the store and topics as every worker of the process shares them, built
//! once at start; and [`StoreLink`], one worker's handle on them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use super::{
    Asker, Backend, Inbox, Job, MemoryStore, Namespace, Op, StoreLimits, Topics,
    sqlite::SqliteStore,
};

/// Which backend `--store` chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `--store memory`: shared by the workers, gone at exit.
    Memory,
    /// `--store PATH`: a SQLite file, durable, shareable by several processes.
    File(PathBuf),
}

impl StoreKind {
    /// `memory`, or a path (write `./memory` for a file of that name).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" => Err("--store needs `memory` or a file's path".into()),
            "memory" => Ok(Self::Memory),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }

    /// Its kind, as `/metrics` labels it (not the path: a label stays short).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::File(_) => "file",
        }
    }

    /// How the log names it.
    pub fn describe(&self) -> String {
        match self {
            Self::Memory => "memory".into(),
            Self::File(path) => path.display().to_string(),
        }
    }
}

/// What the store is built from, once per process.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The backend.
    pub kind: StoreKind,
    /// Whose keys and topics the guest sees.
    pub namespace: Namespace,
    /// What one namespace may hold.
    pub limits: StoreLimits,
}

/// The store and topics of the process.
pub struct Stores {
    backend: Box<dyn Backend>,
    topics: Topics,
    inboxes: Vec<Arc<Inbox>>,
    config: StoreConfig,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Opens the backend for `workers` workers. Each worker's loop must then say how
    /// it is woken ([`Inbox::wake_with`] on [`StoreLink::inbox`]).
    pub fn open(config: StoreConfig, workers: usize) -> Result<Arc<Self>> {
        let inboxes: Vec<Arc<Inbox>> = (0..workers).map(|_| Inbox::new()).collect();
        let backend: Box<dyn Backend> = match &config.kind {
            StoreKind::Memory => Box::new(MemoryStore::new(config.limits, inboxes.clone())),
            StoreKind::File(path) => {
                Box::new(SqliteStore::open(path, config.limits, inboxes.clone())?)
            }
        };
        Ok(Arc::new(Self {
            backend,
            topics: Topics::new(inboxes.clone()),
            inboxes,
            config,
        }))
    }

    /// Worker `worker`'s link.
    pub fn link(self: &Arc<Self>, worker: usize) -> StoreLink {
        StoreLink {
            stores: self.clone(),
            worker,
        }
    }

    /// What it was built from.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The bytes the guest's namespace holds.
    pub fn namespace_bytes(&self) -> u64 {
        self.backend.bytes_of(&self.config.namespace)
    }
}

/// One worker's handle on the [`Stores`]: what a guest instance's store calls go
/// through.
#[derive(Clone, Debug)]
pub struct StoreLink {
    stores: Arc<Stores>,
    worker: usize,
}

impl StoreLink {
    /// The worker's inbox, where answers and messages for its instances arrive.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.stores.inboxes[self.worker]
    }

    /// The worker's index.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The limits names and sizes are held to.
    pub fn limits(&self) -> &StoreLimits {
        &self.stores.config.limits
    }

    /// Submits `op` for `asker` as `op_id`; its answer comes to this worker's inbox.
    pub fn submit(&self, asker: Asker, op_id: u64, op: Op) {
        self.stores.backend.submit(Job {
            asker,
            op_id,
            namespace: self.stores.config.namespace.clone(),
            op,
        });
    }

    /// `asker` hears `topic` as `subscription` from now on.
    pub fn subscribe(&self, asker: Asker, topic: &str, subscription: u64) {
        let namespace = &self.stores.config.namespace;
        self.stores
            .topics
            .subscribe(namespace, topic, asker, subscription);
    }

    /// Ends one subscription of `asker`.
    pub fn unsubscribe(&self, asker: Asker, subscription: u64) {
        self.stores.topics.unsubscribe(asker, subscription);
    }

    /// `asker` ended: its subscriptions hear nothing more.
    pub fn forget(&self, asker: Asker) {
        self.stores.topics.drop_asker(asker);
    }

    /// Publishes `message` on `topic` to every subscriber of the process.
    pub fn publish(&self, topic: &str, message: &[u8]) {
        let namespace = &self.stores.config.namespace;
        self.stores
            .topics
            .publish(namespace, topic, message, self.worker);
    }
}
