//! [`Stores`]: the store and topics as every worker of the process shares them, built
//! once at start; and [`StoreLink`], one worker's handle on them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use super::redis_store::{self, RedisOptions, RedisStore};
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
    /// `--store redis://...` or `rediss://...` (`valkey://`, `valkeys://`): a Redis
    /// or Valkey server, shared by every host that uses it. Any URL parses as one;
    /// [`StoreKind::check`] refuses what is not one, or holds a password.
    Redis(String),
}

impl StoreKind {
    /// `memory`, a Redis URL, or a path (write `./memory` for a file of that name).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" => Err("--store needs `memory`, a file's path or a redis:// URL".into()),
            "memory" => Ok(Self::Memory),
            // Any URL is checked later (`check`), never here: clap would echo a refused
            // value whole, and it may hold a password.
            url if url.contains("://") => Ok(Self::Redis(url.to_string())),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }

    /// Checks what parsing leaves for later: a Redis URL must parse and hold no
    /// password. The error names the URL with its credentials hidden.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Redis(url) => redis_store::check_url(url),
            _ => Ok(()),
        }
    }

    /// Whether the store is shared by hosts on other machines.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Its kind, as `/metrics` labels it (not the path: a label stays short).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::File(_) => "file",
            Self::Redis(_) => "redis",
        }
    }

    /// How the log names it.
    pub fn describe(&self) -> String {
        match self {
            Self::Memory => "memory".into(),
            Self::File(path) => path.display().to_string(),
            Self::Redis(url) => redis_store::redact(url),
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
    /// A remote store's password, timeout and CA.
    pub redis: RedisOptions,
}

/// The store and topics of the process.
pub struct Stores {
    backend: Box<dyn Backend>,
    topics: Arc<Topics>,
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
    /// it is woken ([`Inbox::wake_with`] on [`StoreLink::inbox`]). `carried` is what
    /// the process a binary upgrade replaces handed over ([`Stores::snapshot`]).
    pub fn open(config: StoreConfig, workers: usize, carried: Option<&[u8]>) -> Result<Arc<Self>> {
        let inboxes: Vec<Arc<Inbox>> = (0..workers).map(|_| Inbox::new()).collect();
        let topics = Arc::new(Topics::new(inboxes.clone()));
        let backend: Box<dyn Backend> = match &config.kind {
            StoreKind::Memory => {
                let store = MemoryStore::new(config.limits, inboxes.clone());
                if let Some(snapshot) = carried {
                    let values = store
                        .restore(snapshot)
                        .map_err(|e| anyhow::anyhow!("the store handed over is damaged: {e}"))?;
                    tracing::info!(
                        values,
                        bytes = snapshot.len(),
                        "upgrade: took over the memory store"
                    );
                }
                Box::new(store)
            }
            StoreKind::File(path) => {
                Box::new(SqliteStore::open(path, config.limits, inboxes.clone())?)
            }
            StoreKind::Redis(url) => Box::new(RedisStore::open(
                url,
                &config.redis,
                &config.namespace,
                config.limits,
                inboxes.clone(),
                topics.clone(),
            )?),
        };
        Ok(Arc::new(Self {
            backend,
            topics,
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

    /// Messages published that never reached the server (a remote store that could
    /// not be reached).
    pub fn unsent_messages(&self) -> u64 {
        self.backend.unsent()
    }

    /// Why the store cannot serve now, if it cannot (a remote one that cannot be
    /// reached): `/readyz` says not ready.
    pub fn unavailable(&self) -> Option<String> {
        self.backend.unavailable()
    }

    /// What a binary upgrade hands over: `--store memory`'s keys and values.
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        self.backend.snapshot()
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
        if self
            .stores
            .topics
            .subscribe(namespace, topic, asker, subscription)
        {
            self.stores.backend.heard_changed();
        }
    }

    /// Ends one subscription of `asker`.
    pub fn unsubscribe(&self, asker: Asker, subscription: u64) {
        if self.stores.topics.unsubscribe(asker, subscription) {
            self.stores.backend.heard_changed();
        }
    }

    /// `asker` ended: its subscriptions hear nothing more.
    pub fn forget(&self, asker: Asker) {
        if self.stores.topics.drop_asker(asker) {
            self.stores.backend.heard_changed();
        }
    }

    /// Publishes `message` on `topic` to every subscriber: of every host sharing a
    /// remote store, or of the process.
    pub fn publish(&self, topic: &str, message: &[u8]) {
        let namespace = &self.stores.config.namespace;
        if !self.stores.backend.publish(namespace, topic, message) {
            self.stores
                .topics
                .publish(namespace, topic, message, self.worker);
        }
    }
}
