//! [`Health`]: whether a Redis store's connections are up, and why not (what
//! `/readyz` and `sandsock_store_up` report); and how soon a lost one is tried again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, warn};

/// The first wait before connecting again after a failure; it doubles up to
/// [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to connect.
pub const MAX_RETRY: Duration = Duration::from_secs(2);
/// How often an idle connection is checked (a PING), so that `/readyz` notices a
/// server that stopped answering even when no operation is under way.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether the store's two connections are up, and why not: what `/readyz` and
/// `sandsock_store_up` report. Each change is logged once.
#[derive(Debug)]
pub struct Health {
    /// The connection operations go over.
    pub commands: Condition,
    /// The pub/sub connection topics come over.
    pub messages: Condition,
}

/// One connection's state.
#[derive(Debug)]
pub struct Condition {
    what: &'static str,
    up: AtomicBool,
    why: Mutex<String>,
}

impl Condition {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            up: AtomicBool::new(false),
            why: Mutex::new("not connected yet".into()),
        }
    }

    /// The connection works (logged if it did not).
    pub fn up(&self, url: &str) {
        if !self.up.swap(true, Ordering::Relaxed) {
            info!(store = url, "the store's {} connection is up", self.what);
        }
    }

    /// The connection failed, for `why` (logged if it worked).
    pub fn down(&self, url: &str, why: &str) {
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = why.to_string();
        if self.up.swap(false, Ordering::Relaxed) {
            warn!(
                store = url,
                "the store's {} connection is down: {why}; trying again", self.what
            );
        }
    }

    /// Why it is down, if it is.
    pub fn unavailable(&self) -> Option<String> {
        if self.up.load(Ordering::Relaxed) {
            return None;
        }
        let why = self.why.lock().unwrap_or_else(|p| p.into_inner());
        Some(format!(
            "the store's {} connection is down: {why}",
            self.what
        ))
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Both down until they connect.
    pub fn new() -> Self {
        Self {
            commands: Condition::new("command"),
            messages: Condition::new("pub/sub"),
        }
    }

    /// Why the store cannot serve, if it cannot: the first connection down.
    pub fn unavailable(&self) -> Option<String> {
        self.commands
            .unavailable()
            .or_else(|| self.messages.unavailable())
    }
}
