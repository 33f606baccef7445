//! [`Supervisor`]: the main thread's job while the workers serve: the signals
//! (`SIGHUP` reloads the guest; `SIGUSR2` upgrades the binary; `SIGTERM` or `SIGINT`
//! shuts every worker down, and a second one ends the process at once), an upgrade's
//! link to its new process, and waiting for the workers to finish.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use tracing::{info, warn};

use super::admin::AdminThread;
use crate::sockets::event_loop::Remote;
use crate::swap::Reloader;
use crate::upgrade::hand_over::Outcome;
use crate::upgrade::{UpgradeHandle, UpgradeStats, Upgrader};

const SIGNALS: Token = Token(0);
/// A worker wakes the supervisor with it when its loop has ended.
const FINISHED: Token = Token(1);
/// The admin listener wakes the supervisor with it at `POST /upgrade`.
const UPGRADE_ASKED: Token = Token(2);
/// An upgrade's link to its new process.
pub const UPGRADE_LINK: Token = Token(3);

/// One worker: its loop's remote, and its thread (until it is joined).
struct Worker {
    remote: Remote,
    thread: Option<JoinHandle<()>>,
}

/// Signals and workers.
pub struct Supervisor {
    poll: Poll,
    signals: Signals,
    finished: Arc<Waker>,
    /// Each worker's thread sends its loop's result here, then wakes `finished`.
    results: Receiver<(usize, Result<()>)>,
    results_tx: Sender<(usize, Result<()>)>,
    workers: Vec<Worker>,
    upgrade: UpgradeHandle,
}

/// What the supervisor looks after besides the workers.
pub struct Duties {
    /// Answers `SIGHUP`.
    pub reloader: Option<Reloader>,
    /// Answers `SIGUSR2` and `POST /upgrade`.
    pub upgrader: Upgrader,
    /// How long an upgrade's new process may take to be ready.
    pub upgrade_timeout: Duration,
    /// Stopped once an upgrade has handed over.
    pub admin: Option<AdminThread>,
}

impl Supervisor {
    /// Installs the signal handlers: from here on a `SIGTERM` is a graceful shutdown,
    /// not the end of the process.
    pub fn new() -> Result<Self> {
        let poll = Poll::new().context("cannot create the supervisor's epoll instance")?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2])
            .context("cannot install signal handlers")?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .context("cannot register the signal pipe with epoll")?;
        let finished = Waker::new(poll.registry(), FINISHED)
            .context("cannot create the supervisor's waker")?;
        let asked = Waker::new(poll.registry(), UPGRADE_ASKED)
            .context("cannot create the supervisor's waker")?;
        let (results_tx, results) = mpsc::channel();
        Ok(Self {
            poll,
            signals,
            finished: Arc::new(finished),
            results,
            results_tx,
            workers: Vec::new(),
            upgrade: UpgradeHandle::new(Arc::new(asked), Arc::new(UpgradeStats::default())),
        })
    }

    /// How the admin listener asks for an upgrade.
    pub fn upgrade_handle(&self) -> UpgradeHandle {
        self.upgrade.clone()
    }

    /// Starts a worker: `work` runs on a thread named `name`, and its result (a
    /// panic too) comes back to the supervisor. `remote` reaches the worker's loop.
    pub fn spawn(
        &mut self,
        name: String,
        remote: Remote,
        work: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let id = self.workers.len();
        let results = self.results_tx.clone();
        let finished = self.finished.clone();
        let what = name.clone();
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(work))
                    .unwrap_or_else(|_| Err(anyhow!("{what} panicked")));
                // The result is in the channel before the supervisor is woken, so it
                // cannot look too early and sleep for ever.
                let _ = results.send((id, result));
                let _ = finished.wake();
            })
            .with_context(|| format!("cannot start {name}"))?;
        self.workers.push(Worker {
            remote,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Handles signals and upgrades until every worker has finished: `Ok` once all
    /// shut down cleanly, the first worker's error otherwise, or an error at a second
    /// signal during a shutdown.
    pub fn run(mut self, mut duties: Duties) -> Result<()> {
        let mut events = Events::with_capacity(8);
        let mut stopping = false;
        loop {
            let timeout = duties
                .upgrader
                .deadline(duties.upgrade_timeout)
                .map(|deadline| deadline.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("the supervisor's poll failed"),
            }
            let registry = self.poll.registry();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => {
                        for signal in self.signals.pending() {
                            match signal {
                                SIGHUP => match &duties.reloader {
                                    Some(reloader) => {
                                        info!("SIGHUP: reloading the guest");
                                        reloader.request();
                                    }
                                    None => warn!(
                                        "SIGHUP ignored: a built-in guest has no file to reload"
                                    ),
                                },
                                SIGUSR2 if stopping => {
                                    warn!("SIGUSR2 ignored: this process is shutting down");
                                }
                                SIGUSR2 => duties.upgrader.begin(registry, "SIGUSR2"),
                                _ if stopping => {
                                    bail!("a second signal during shutdown: exiting at once")
                                }
                                _ => {
                                    stopping = true;
                                    info!(signal, "shutting down");
                                    // After a handover the new process is the
                                    // service: its manager hears nothing from this one.
                                    if !duties.upgrader.handed_over() {
                                        crate::upgrade::systemd::stopping();
                                    }
                                    duties.upgrader.abandon(registry);
                                    for worker in &self.workers {
                                        worker.remote.stop();
                                    }
                                }
                            }
                        }
                    }
                    UPGRADE_ASKED if self.upgrade.take_request() && !stopping => {
                        duties.upgrader.begin(registry, "POST /upgrade");
                    }
                    UPGRADE_LINK
                        if duties.upgrader.on_readable(registry) == Outcome::HandedOver =>
                    {
                        // The workers finish as at SIGTERM (a SIGTERM now finds them
                        // doing so already, a second one ends this process), and the
                        // new process answers the admin endpoints.
                        if let Some(admin) = &duties.admin {
                            admin.stop();
                        }
                    }
                    _ => {}
                }
            }
            // After the events: a word that came at the deadline counts.
            duties
                .upgrader
                .check_deadline(registry, duties.upgrade_timeout);
            if self.reap()? {
                duties.upgrader.finish();
                return Ok(());
            }
        }
    }

    /// Joins the workers that have reported; true when none is left. A worker that
    /// failed (or panicked) ends the supervision with its error.
    fn reap(&mut self) -> Result<bool> {
        while let Ok((id, result)) = self.results.try_recv() {
            if let Some(thread) = self.workers[id].thread.take() {
                // It has sent its last message: it is returning, so this is brief.
                let _ = thread.join();
            }
            result.with_context(|| format!("worker {id}"))?;
        }
        Ok(self.workers.iter().all(|w| w.thread.is_none()))
    }
}
