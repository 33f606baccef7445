//! The old process's side of a binary upgrade ([`Upgrader`]), run by the supervisor:
//! start the new binary, hand it the listening sockets, and once it is ready, stop
//! accepting and hand it the memory store and (`--upgrade handover`) the open plain
//! connections; then finish what stays (TLS connections; with `--upgrade drain`,
//! every connection) as at `SIGTERM` and exit. Until the new process serves (drain)
//! or this one lets the connections go (handover), this one can go back to
//! accepting: it still holds every socket (see the module above for what happens to
//! a new process that failed on the way).

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token, Waker};
use serde_json::json;
use tracing::{info, warn};

use super::UpgradeMode;
use super::binary::Binary;
use super::held::HeldSockets;
use super::link::{Kind, Link, MAX_FDS_PER_FRAME, MAX_FRAME};
use super::systemd;
use crate::shared::metrics::millis;
use crate::sockets::event_loop::{Bundle, HandoverOrder, Remote};
use crate::store::Stores;

/// How long the new process has, after go, to say it serves (drain) or that it
/// took the connections (handover): it only restores a memory store, takes the
/// connections and starts its threads in that time.
const SERVING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new process that closed its link is waited for, to report how it
/// ended.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// How long one read or write on the link may block the supervisor: the new
/// process reads and writes whole frames as soon as it can.
const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// The handover's version: a new process that speaks another version refuses it,
/// in one line. 2 carries connections; 3 adds the bytes a `--io uring` loop
/// received and its guest had not read. A process takes over from older versions
/// (one of 1 drains), never the other way round.
pub const PROTOCOL: u64 = 3;
/// How long the loops may take to pack their connections: the settling (see
/// `HandoverOrder`), a turn, at most a guest call's `--event-timeout`, and a
/// snapshot call per instance.
const PACK_WAIT: Duration = Duration::from_secs(10);
/// The most a frame from the new process may hold: its words are short.
const MAX_WORD: usize = 64 * 1024;
/// How long the loops may take to stop accepting before the store is handed over
/// anyway: a turn, at most a guest call's `--event-timeout`.
const PAUSE_WAIT: Duration = Duration::from_secs(1);

/// What `/metrics` says of upgrades.
#[derive(Debug, Default)]
pub struct UpgradeStats {
    /// Upgrade attempts this process began (each one not ignored), whether or not
    /// the new binary could be run: those not counted in `failed` are under way, or
    /// handed this process's sockets over.
    pub started: AtomicU64,
    /// Upgrades that led to this process (carried from process to process).
    pub succeeded: AtomicU64,
    /// Upgrades this process tried that failed (it went on serving).
    pub failed: AtomicU64,
    /// The upgrade that started this process: milliseconds from its start to the
    /// new process's readiness, and to its serving.
    pub ready_ms: AtomicU64,
    /// See `ready_ms`.
    pub serving_ms: AtomicU64,
    /// The upgrade that started this process: the connections the old process
    /// handed over to it.
    pub taken: AtomicU64,
    /// An upgrade is under way or done, or the process is shutting down: another
    /// is refused.
    pub busy: AtomicBool,
}

/// How the admin listener asks for an upgrade (`POST /upgrade`).
#[derive(Clone, Debug)]
pub struct UpgradeHandle {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    stats: Arc<UpgradeStats>,
}

impl UpgradeHandle {
    /// A handle that wakes the supervisor through `waker`.
    pub fn new(waker: Arc<Waker>, stats: Arc<UpgradeStats>) -> Self {
        Self {
            requested: Arc::new(AtomicBool::new(false)),
            waker,
            stats,
        }
    }

    /// Asks for an upgrade; false if one is under way (or done) already.
    pub fn request(&self) -> bool {
        if self.stats.busy.load(Ordering::Acquire) {
            return false;
        }
        self.requested.store(true, Ordering::Release);
        let _ = self.waker.wake();
        true
    }

    /// The counters `/metrics` shows, shared with the [`Upgrader`].
    pub fn stats(&self) -> Arc<UpgradeStats> {
        self.stats.clone()
    }

    /// Whether an upgrade was asked for since the last look.
    pub fn take_request(&self) -> bool {
        self.requested.swap(false, Ordering::AcqRel)
    }
}

/// One upgrade under way.
struct Attempt {
    child: Child,
    link: Link,
    began: Instant,
    /// When the new process said it was ready (and this one stopped accepting).
    ready: Option<Instant>,
    /// When go (and with it the store and the connections) was sent: the new
    /// process's time to answer counts from here.
    go_at: Option<Instant>,
    /// Go was sent with nothing to take over: from then on the new process may
    /// accept connections.
    may_accept: bool,
    /// With a handover under way: each loop's verdict, sent at `Taken` (dropped if
    /// the upgrade fails: the loops keep their connections).
    verdicts: Vec<mpsc::Sender<bool>>,
    /// Once the loops packed: connections handed over, and kept to finish here (TLS).
    handed: Option<(usize, usize)>,
}

/// What the supervisor should do after an upgrade event.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing: the upgrade goes on, or none is under way.
    Going,
    /// The new process serves: this one finishes its connections and exits.
    HandedOver,
}

/// The old process's side of upgrades.
pub struct Upgrader {
    binary: Result<Binary, String>,
    mode: UpgradeMode,
    /// With `--upgrade drain`: `--drain-timeout`, the longest the old process's
    /// connections may take.
    drain_limit: Option<Duration>,
    sockets: HeldSockets,
    remotes: Vec<Remote>,
    store: Option<Arc<Stores>>,
    stats: Arc<UpgradeStats>,
    token: Token,
    attempt: Option<Attempt>,
    /// New processes of failed attempts told to finish (SIGTERM), until they end.
    abandoned: Vec<Child>,
    /// After a handover: the new process and when the upgrade began.
    handed: Option<(u32, Instant)>,
}

impl Upgrader {
    /// An upgrader that runs `binary` and hands over `sockets`; `remotes` reach the
    /// workers' loops, `token` is the link's in the supervisor's poll.
    pub fn new(
        binary: Result<Binary, String>,
        sockets: HeldSockets,
        remotes: Vec<Remote>,
        store: Option<Arc<Stores>>,
        stats: Arc<UpgradeStats>,
        token: Token,
    ) -> Self {
        Self {
            binary,
            mode: UpgradeMode::Drain,
            drain_limit: None,
            sockets,
            remotes,
            store,
            stats,
            token,
            attempt: None,
            abandoned: Vec::new(),
            handed: None,
        }
    }

    /// What upgrades do with open connections (`--upgrade`); with drain, they take
    /// `drain_limit` at most.
    pub fn set_mode(&mut self, mode: UpgradeMode, drain_limit: Option<Duration>) {
        self.mode = mode;
        self.drain_limit = drain_limit;
    }

    /// Starts an upgrade (`why`: the signal or the request); a failure to start is
    /// logged, and this process goes on serving.
    pub fn begin(&mut self, registry: &Registry, why: &str) {
        if let Some((pid, _)) = self.handed {
            warn!("{why}: ignored: this process already handed over to pid {pid}");
            return;
        }
        if let Some(attempt) = &self.attempt {
            warn!(
                "{why}: ignored: an upgrade to pid {} is under way",
                attempt.child.id()
            );
            return;
        }
        self.stats.busy.store(true, Ordering::Release);
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        match self.start(registry, Instant::now()) {
            Ok(attempt) => {
                info!(
                    binary = %self.binary.as_ref().map(|b| b.path().display().to_string()).unwrap_or_default(),
                    pid = attempt.child.id(),
                    sockets = self.sockets.count(),
                    "{why}: upgrade: started the new binary and handed it the listening sockets"
                );
                self.attempt = Some(attempt);
            }
            Err(e) => self.failed(registry, &format!("{e:#}")),
        }
    }

    fn start(&mut self, registry: &Registry, began: Instant) -> Result<Attempt> {
        if std::process::id() == 1 {
            // The kernel ends every process of a PID namespace when its init exits.
            return Err(anyhow!(
                "this process is PID 1 (a container's init): the new process would end with it; run the host under an init (docker run --init, tini) to upgrade it in place"
            ));
        }
        let binary = self.binary.as_ref().map_err(|e| anyhow!("{e}"))?;
        let (mut link, theirs) = Link::pair()?;
        link.set_timeout(Some(LINK_TIMEOUT))?;
        let mut child = binary.start(theirs)?;
        let about = json!({
            "protocol": PROTOCOL,
            "from": std::process::id(),
            "upgrades": self.stats.succeeded.load(Ordering::Relaxed),
        });
        let handed = self.sockets.send(&mut link, about).and_then(|()| {
            registry.register(
                &mut SourceFd(&link.as_fd().as_raw_fd()),
                self.token,
                Interest::READABLE,
            )
        });
        if let Err(e) = handed {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow!("cannot hand the sockets to the new process: {e}"));
        }
        Ok(Attempt {
            child,
            link,
            began,
            ready: None,
            go_at: None,
            may_accept: false,
            verdicts: Vec::new(),
            handed: None,
        })
    }

    /// When the supervisor must look again even if nothing happens: the attempt's
    /// deadline.
    pub fn deadline(&self, ready_timeout: Duration) -> Option<Instant> {
        let attempt = self.attempt.as_ref()?;
        Some(match (attempt.ready, attempt.go_at) {
            (None, _) => attempt.began + ready_timeout,
            (Some(ready), None) => ready + SERVING_TIMEOUT,
            (_, Some(go)) => go + SERVING_TIMEOUT,
        })
    }

    /// Gives up on an attempt past its deadline; reaps the new processes of failed
    /// attempts that have ended.
    pub fn check_deadline(&mut self, registry: &Registry, ready_timeout: Duration) {
        self.abandoned
            .retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        let Some(deadline) = self.deadline(ready_timeout) else {
            return;
        };
        if Instant::now() < deadline {
            return;
        }
        let what = match self.attempt.as_ref() {
            Some(attempt) if attempt.ready.is_none() => {
                format!("the new process was not ready within {ready_timeout:?}")
            }
            Some(attempt) if !attempt.verdicts.is_empty() => {
                format!("the new process did not take the connections within {SERVING_TIMEOUT:?}")
            }
            _ => format!("the new process did not serve within {SERVING_TIMEOUT:?}"),
        };
        self.failed(registry, &what);
    }

    /// The link has something: the new process's word, or its end.
    pub fn on_readable(&mut self, registry: &Registry) -> Outcome {
        let Some(attempt) = self.attempt.as_mut() else {
            return Outcome::Going;
        };
        let frame = match attempt.link.recv(MAX_WORD) {
            Ok(frame) => frame,
            // The end of the link; a reset when the new process died with bytes of
            // ours unread.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
            {
                let why = match exit_status(&mut attempt.child) {
                    Some(status) => format!("the new process ended ({status}) before it served"),
                    None => "the new process closed its link before it served".to_string(),
                };
                self.failed(registry, &why);
                return Outcome::Going;
            }
            Err(e) => {
                self.failed(registry, &format!("the new process's link failed: {e}"));
                return Outcome::Going;
            }
        };
        match (attempt.ready.is_some(), frame.kind) {
            (false, Kind::Ready) => {
                self.on_ready(registry);
                Outcome::Going
            }
            (true, Kind::Serving) if attempt.verdicts.is_empty() => self.on_serving(registry),
            (true, Kind::Taken) if !attempt.verdicts.is_empty() => self.on_taken(registry),
            (_, Kind::Failed) => {
                let why = String::from_utf8_lossy(&frame.payload).into_owned();
                self.failed(registry, &format!("the new process failed: {why}"));
                Outcome::Going
            }
            (_, other) => {
                self.failed(
                    registry,
                    &format!("the new process sent {other:?} out of turn"),
                );
                Outcome::Going
            }
        }
    }

    /// The new process loaded its guest: stop accepting (connections wait in the
    /// sockets' queues, which it shares), hand over the memory store once no loop
    /// accepts any more, tell it to go.
    fn on_ready(&mut self, registry: &Registry) {
        let attempt = self.attempt.as_mut().expect("an attempt is under way");
        let now = Instant::now();
        attempt.ready = Some(now);
        let ready_ms = millis(now - attempt.began);
        for remote in &self.remotes {
            remote.pause_accepting(true);
        }
        // A loop pauses within a turn; a connection it accepts until then is its
        // to finish, and what it writes to a memory store must be in the snapshot.
        let paused_by = Instant::now() + PAUSE_WAIT;
        while !self.remotes.iter().all(Remote::accepting_paused) && Instant::now() < paused_by {
            std::thread::sleep(Duration::from_micros(200));
        }
        // Packed first: a loop frozen for the handover writes nothing more to a
        // memory store, so the snapshot after it holds every write.
        let bundles = match self.mode {
            UpgradeMode::Drain => Vec::new(),
            UpgradeMode::Handover => match self.pack() {
                Ok(bundles) => bundles,
                Err(why) => {
                    self.failed(registry, &why);
                    return;
                }
            },
        };
        let store = self.store.as_ref().and_then(|s| s.snapshot());
        if let Some(snapshot) = &store
            && snapshot.len() > MAX_FRAME
        {
            let why = format!(
                "the memory store ({} bytes) is larger than one upgrade hands over ({MAX_FRAME}); keep such state in --store PATH or Redis",
                snapshot.len()
            );
            self.failed(registry, &why);
            return;
        }
        let attempt = self.attempt.as_mut().expect("an attempt is under way");
        let connections: usize = bundles.iter().map(|b| b.fds.len()).sum();
        let kept: usize = bundles.iter().map(|b| b.kept).sum();
        // What the new process adds its own time to: from the signal to this go,
        // the pause and the snapshot included.
        let go_ms = millis(attempt.began.elapsed());
        let about = json!({
            "ready_ms": ready_ms as u64,
            "go_ms": go_ms as u64,
            "store": store.is_some(),
            "parcels": bundles.len(),
            "connections": connections,
        });
        let sent = attempt
            .link
            .send(Kind::Go, about.to_string().as_bytes(), &[])
            .and_then(|()| match &store {
                Some(snapshot) => attempt.link.send(Kind::Store, snapshot, &[]),
                None => Ok(()),
            })
            .and_then(|()| send_bundles(&mut attempt.link, bundles));
        attempt.go_at = Some(Instant::now());
        attempt.may_accept = sent.is_ok() && attempt.verdicts.is_empty();
        info!(
            pid = attempt.child.id(),
            ready_ms,
            store_bytes = store.as_ref().map_or(0, Vec::len),
            connections,
            kept,
            "upgrade: the new process is ready; this one stopped accepting{}",
            if attempt.verdicts.is_empty() {
                ""
            } else {
                " and hands over its connections"
            }
        );
        if let Err(e) = sent {
            // A write that fails is, most of the time, a new process that ended,
            // perhaps saying why first (its limit on open files, say).
            let ended = match exit_status(&mut attempt.child) {
                Some(status) => match attempt.link.recv(MAX_WORD) {
                    Ok(frame) if frame.kind == Kind::Failed => {
                        let why = String::from_utf8_lossy(&frame.payload).into_owned();
                        self.failed(registry, &format!("the new process failed: {why}"));
                        return;
                    }
                    _ => format!(" (it ended: {status})"),
                },
                None => String::new(),
            };
            self.failed(
                registry,
                &format!("cannot hand over to the new process: {e}{ended}"),
            );
        }
    }

    /// Asks every loop for its connections, and waits for them all (or a loop's
    /// refusal); the loops wait for the verdict (kept in the attempt) from then on.
    fn pack(&mut self) -> Result<Vec<Bundle>, String> {
        let attempt = self.attempt.as_mut().expect("an attempt is under way");
        let (parcels, packed) = mpsc::channel();
        for (worker, remote) in self.remotes.iter().enumerate() {
            let (verdict, waiting) = mpsc::channel();
            remote.hand_over(HandoverOrder {
                worker,
                parcels: parcels.clone(),
                verdict: waiting,
            });
            attempt.verdicts.push(verdict);
        }
        drop(parcels);
        let deadline = Instant::now() + PACK_WAIT;
        let mut bundles: Vec<Bundle> = Vec::with_capacity(self.remotes.len());
        while bundles.len() < self.remotes.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match packed.recv_timeout(left) {
                Ok(Ok(bundle)) => bundles.push(bundle),
                Ok(Err(why)) => return Err(why),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{} of {} workers packed their connections within {PACK_WAIT:?}",
                        bundles.len(),
                        self.remotes.len()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("a worker is shutting down; nothing was handed over".into());
                }
            }
        }
        bundles.sort_by_key(|b| b.worker);
        attempt.handed = Some((
            bundles.iter().map(|b| b.fds.len()).sum(),
            bundles.iter().map(|b| b.kept).sum(),
        ));
        Ok(bundles)
    }

    /// The new process has taken every connection and waits for this one to let
    /// them go: told so, it may touch them; the loops let them go. The one step of
    /// an upgrade this process cannot take back, and it takes it alone: a new
    /// process that did not hear it never touched a connection.
    fn on_taken(&mut self, registry: &Registry) -> Outcome {
        let attempt = self.attempt.as_mut().expect("an attempt is under way");
        if let Err(e) = attempt.link.send(Kind::Released, b"", &[]) {
            let why = format!("the new process took the connections and went away: {e}");
            self.failed(registry, &why);
            return Outcome::Going;
        }
        for verdict in attempt.verdicts.drain(..) {
            let _ = verdict.send(true);
        }
        self.on_serving(registry)
    }

    /// The new process serves (drain), or has the connections (handover; the
    /// loops, told, let them go): this one finishes what it keeps and exits.
    fn on_serving(&mut self, registry: &Registry) -> Outcome {
        let mut attempt = self.attempt.take().expect("an attempt is under way");
        let _ = registry.deregister(&mut SourceFd(&attempt.link.as_fd().as_raw_fd()));
        let pid = attempt.child.id();
        let (handed, kept) = attempt.handed.unwrap_or_default();
        if attempt.may_accept {
            info!(
                pid,
                serving_ms = millis(attempt.began.elapsed()),
                "upgrade: the new process serves; this one finishes its connections and exits"
            );
        } else {
            info!(
                pid,
                handed,
                kept,
                handover_ms = millis(attempt.began.elapsed()),
                "upgrade: the new process took {handed} connection(s); this one finishes {kept} (TLS) and exits"
            );
        }
        systemd::main_pid(pid);
        let limit = match self.mode {
            UpgradeMode::Drain => self.drain_limit,
            UpgradeMode::Handover => None,
        };
        for remote in &self.remotes {
            remote.stop_within(limit);
        }
        // Not waited for: it outlives this process.
        let _ = attempt.child.try_wait();
        self.handed = Some((pid, attempt.began));
        // The new process holds the sockets now.
        self.sockets = HeldSockets::default();
        Outcome::HandedOver
    }

    /// Ends an attempt that failed, and says why; this process accepts again. A new
    /// process not yet told to go is killed; one told to go may already accept
    /// connections, so it is asked to finish them (SIGTERM) instead.
    fn failed(&mut self, registry: &Registry, why: &str) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.stats.busy.store(false, Ordering::Release);
        if let Some(mut attempt) = self.attempt.take() {
            let _ = registry.deregister(&mut SourceFd(&attempt.link.as_fd().as_raw_fd()));
            let running = matches!(attempt.child.try_wait(), Ok(None));
            if attempt.ready.is_some() {
                for remote in &self.remotes {
                    remote.pause_accepting(false);
                }
            }
            if let (false, Some((handed, _))) = (attempt.verdicts.is_empty(), attempt.handed) {
                warn!(
                    "upgrade: the new process did not take the connections; this process keeps all {handed}"
                );
            }
            // The loops keep their connections (the verdicts dropped): each goes on
            // from where it froze, and accepts again at its next turn.
            attempt.verdicts.clear();
            if !attempt.may_accept {
                if running {
                    let _ = attempt.child.kill();
                }
                let _ = attempt.child.wait();
            } else {
                if running {
                    // SAFETY: kill has no memory preconditions; the pid is our child's,
                    // not yet waited for, so it cannot have been reused.
                    unsafe { libc::kill(attempt.child.id() as libc::pid_t, libc::SIGTERM) };
                }
                // Reaped when it ends, or left to init when this process exits.
                self.abandoned.push(attempt.child);
            }
        }
        self.abandoned
            .retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        warn!("upgrade failed: {why}; this process goes on serving");
    }

    /// At a shutdown: an upgrade under way is abandoned (its new process stopped),
    /// no other starts, and the duplicates of the listening sockets are closed, so
    /// that they close with the loops' own and new clients are refused rather than
    /// queued.
    pub fn abandon(&mut self, registry: &Registry) {
        if self.attempt.is_some() {
            self.failed(
                registry,
                "this process is shutting down (it stops the new one)",
            );
        }
        self.stats.busy.store(true, Ordering::Release);
        self.sockets = HeldSockets::default();
    }

    /// Whether this process has handed over to a new one.
    pub fn handed_over(&self) -> bool {
        self.handed.is_some()
    }

    /// At exit, after a handover: how long the whole upgrade took.
    pub fn finish(&self) {
        if let Some((pid, began)) = self.handed {
            info!(
                pid,
                took_ms = millis(began.elapsed()),
                "upgrade: the old process exits; the new one serves"
            );
        }
    }
}

/// How a child that closed its link ended, if it did within [`EXIT_WAIT`].
fn exit_status(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends each worker's parcel, its sockets in frames of [`MAX_FDS_PER_FRAME`].
fn send_bundles(link: &mut Link, bundles: Vec<Bundle>) -> std::io::Result<()> {
    for bundle in bundles {
        let bytes = bundle
            .parcel
            .encode()
            .map_err(|e| std::io::Error::other(format!("cannot encode the connections: {e}")))?;
        if bytes.len() > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "worker {}'s connections ({} bytes, unsent answers included) are more than one upgrade hands over ({MAX_FRAME})",
                bundle.worker,
                bytes.len()
            )));
        }
        // SAFETY: these are the loop's own descriptors, and the loop does nothing
        // until it hears the verdict, which comes after this: they stay open.
        let fds: Vec<BorrowedFd<'_>> = bundle
            .fds
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        let mut batches = fds.chunks(MAX_FDS_PER_FRAME);
        link.send(Kind::Conns, &bytes, batches.next().unwrap_or(&[]))?;
        for batch in batches {
            link.send(Kind::Fds, b"", batch)?;
        }
    }
    Ok(())
}
