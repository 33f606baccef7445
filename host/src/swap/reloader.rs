//! [`Reloader`]: hot swap's triggers and loading. `--watch`, `SIGHUP` and `POST
//! /reload` lead here: the new guest is read once its file is stable, compared with
//! the one serving, compiled and checked on a thread of its own, and only then handed
//! to the loop, which never stalls for a compilation. With several workers each gets
//! the same compiled guest, through its [`SwapInbox`]. The workers say how each swap
//! ended, so that "the one serving" is what really serves. The TLS certificate and
//! key, when there are TLS listeners, are reloaded by the same triggers.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tracing::{info, warn};

use super::canary::trial::Trial;
use crate::runtime::component::{Guest, GuestSource};
use crate::runtime::digest::{self, Digest};
use crate::runtime::engine::Runtime;
use crate::shared::metrics::millis;
use crate::sockets::event_loop::Remote;
use crate::sockets::tls::Certificates;

/// A file must stay unchanged (size and modification time) this long before it is
/// read: builds write in several steps, and a half-written guest must not be loaded.
const STABLE_FOR: Duration = Duration::from_millis(200);
/// How often a changing file is looked at while waiting for it to settle.
const SETTLE_POLL: Duration = Duration::from_millis(25);
/// A file that never settles is tried anyway after this (and refused if broken).
const SETTLE_GIVE_UP: Duration = Duration::from_secs(10);

/// What started a reload.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    /// The watched file changed: `complete` when the change says the file is whole
    /// (renamed into place, or closed after writing), not while it is being written.
    Changed { at: Instant, complete: bool },
    /// `SIGHUP`.
    Signal(Instant),
    /// A worker reported how a guest it was handed ended (in `outcomes`): wakes the
    /// loader to take it in, with no reload.
    Outcome,
}

impl Trigger {
    fn at(self) -> Instant {
        match self {
            Trigger::Changed { at, .. } | Trigger::Signal(at) => at,
            Trigger::Outcome => Instant::now(),
        }
    }

    /// Whether the file can be read at once: a signal, a rename into place, a close
    /// after writing.
    fn complete(self) -> bool {
        match self {
            Trigger::Changed { complete, .. } => complete,
            Trigger::Signal(_) => true,
            Trigger::Outcome => false,
        }
    }
}

/// A new guest, compiled and checked, ready to be swapped in.
#[derive(Clone)]
pub struct Loaded {
    /// The guest.
    pub guest: Guest,
    /// It is the optimized code of the guest the last swap brought as baseline code.
    pub tier_up: bool,
    /// When the change or signal that led to it happened: the swap's latency is
    /// measured from here.
    pub triggered: Instant,
    /// With `--swap canary`: the one verdict every worker's trial of it shares.
    pub trial: Arc<Trial>,
}

/// How the loop dealt with a guest the loader handed over.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// It serves now.
    Serving(Digest),
    /// It could not start; the generation before it goes on serving.
    Refused(Digest),
}

/// Asks the loader for a reload: what `SIGHUP` and `POST /reload` do.
#[derive(Clone, Debug)]
pub struct ReloadHandle(Sender<Trigger>);

impl ReloadHandle {
    /// Asks for a reload of the guest's file.
    pub fn request(&self) {
        let _ = self.0.send(Trigger::Signal(Instant::now()));
    }
}

/// The loading side of hot swap: a watcher (with `--watch`) and a loader thread.
pub struct Reloader {
    triggers: Sender<Trigger>,
    /// Reloads refused before any worker saw them: unreadable, not a component,
    /// another world. For `/metrics`.
    refused: Arc<AtomicU64>,
    // Kept alive for as long as the reloader is: dropping it stops the watching.
    _watcher: Option<notify::RecommendedWatcher>,
}

/// One worker's side of hot swap: the new guests the loader hands it, and the way
/// back to tell the loader how each swap ended.
pub struct SwapInbox {
    loaded: Receiver<Loaded>,
    outcomes: Sender<Outcome>,
    /// Wakes the loader once an outcome is sent.
    wake: Sender<Trigger>,
}

impl SwapInbox {
    /// A guest that finished loading, if any.
    pub fn take(&self) -> Option<Loaded> {
        self.loaded.try_recv().ok()
    }

    /// Tells the loader how the guest with `digest` ended in this worker: serving,
    /// or refused (it could not start).
    pub fn report(&self, digest: Digest, serving: bool) {
        let outcome = if serving {
            Outcome::Serving(digest)
        } else {
            Outcome::Refused(digest)
        };
        let _ = self.outcomes.send(outcome);
        let _ = self.wake.send(Trigger::Outcome);
    }
}

impl Reloader {
    /// Starts the loader for the guest file `guest` (if the guest is a file), whose
    /// current contents have the digest given with it, and for `certificates` (if
    /// there are TLS listeners); with `watch`, changes of those files trigger reloads
    /// too. Every new guest goes to each of `workers`, through the inbox returned for
    /// it (in the same order), and the worker is woken.
    pub fn start(
        runtime: Arc<Runtime>,
        guest: Option<(&Path, Digest)>,
        certificates: Option<Arc<Certificates>>,
        watch: bool,
        workers: &[Remote],
    ) -> Result<(Self, Vec<SwapInbox>)> {
        // Made absolute but not resolved: a symlink the path goes through (a
        // Kubernetes ConfigMap volume's `..data`) may point elsewhere at the next
        // reload, and the directory it points to now may be gone by then.
        let absolute = |path: &Path| {
            std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
        };
        let (path, serving) = match guest {
            Some((path, digest)) => (Some(absolute(path)?), digest),
            None => (None, [0; 32]),
        };
        let mut watched = Vec::new();
        watched.extend(path.clone());
        if let Some(certificates) = &certificates {
            for file in certificates.files() {
                watched.push(absolute(file)?);
            }
        }
        let (triggers, trigger_rx) = mpsc::channel();
        let (outcomes, outcome_rx) = mpsc::channel();
        let mut inboxes = Vec::with_capacity(workers.len());
        let mut deliveries = Vec::with_capacity(workers.len());
        for remote in workers {
            let (loaded_tx, loaded) = mpsc::channel();
            inboxes.push(SwapInbox {
                loaded,
                outcomes: outcomes.clone(),
                wake: triggers.clone(),
            });
            deliveries.push((loaded_tx, remote.clone()));
        }
        let watcher = if watch {
            Some(watch_files(&watched, triggers.clone())?)
        } else {
            None
        };
        let refused = Arc::new(AtomicU64::new(0));
        let loader = Loader {
            refused: refused.clone(),
            runtime,
            path,
            watched,
            certificates,
            serving,
            in_flight: None,
            triggers: trigger_rx,
            outcomes: outcome_rx,
            workers: Arc::new(deliveries),
            tier_up: None,
            superseded: None,
        };
        thread::Builder::new()
            .name("guest-loader".into())
            .spawn(move || loader.run())
            .context("cannot start the guest loader thread")?;
        Ok((
            Self {
                triggers,
                refused,
                _watcher: watcher,
            },
            inboxes,
        ))
    }

    /// Asks for a reload of the same path (`SIGHUP`).
    pub fn request(&self) {
        self.handle().request();
    }

    /// A handle that asks for reloads, for other threads (the admin listener).
    pub fn handle(&self) -> ReloadHandle {
        ReloadHandle(self.triggers.clone())
    }

    /// The count of reloads refused before any worker saw them.
    pub fn refused(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }
}

/// Watches the files' directories (a build that writes a new file and renames it
/// over the old one replaces the inode a file watch would follow).
///
/// A rename into place, or a close after writing, means a file is whole: the reload
/// starts at once. Other changes (a writer writing in place) wait until the files
/// have stopped changing. Besides a file's own name, the first name its symlink goes
/// through counts as the file (see [`watched_names`]).
fn watch_files(files: &[PathBuf], triggers: Sender<Trigger>) -> Result<notify::RecommendedWatcher> {
    let watched = files.to_vec();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = |p: &PathBuf| {
            watched.iter().any(|file| {
                p.parent() == file.parent()
                    && p.file_name()
                        .is_some_and(|name| watched_names(file).iter().any(|w| w == name))
            })
        };
        let complete = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => true,
            // A rename reported as one event: the destination is the second path.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if !event.paths.get(1).is_some_and(ours) {
                    return;
                }
                true
            }
            EventKind::Access(_) => return,
            _ => false,
        };
        if event.paths.iter().any(ours) {
            let _ = triggers.send(Trigger::Changed {
                at: Instant::now(),
                complete,
            });
        }
    })
    .context("cannot start watching files")?;
    let mut dirs: Vec<&Path> = files
        .iter()
        .map(|file| file.parent().unwrap_or(Path::new("/")))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
    }
    for file in files {
        info!(path = %file.display(), "watching for changes");
    }
    Ok(watcher)
}

/// The names in the file's directory whose change is a change of the file: its own,
/// and, when it is a symlink within the directory, the first name the link goes
/// through. A Kubernetes ConfigMap volume holds `guest.wasm -> ..data/guest.wasm`
/// and updates by re-pointing `..data` to a new directory with one rename: the file's
/// own entry never changes. A link to another directory is not followed there.
fn watched_names(file: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = file.file_name().map(OsStr::to_owned).into_iter().collect();
    if let Ok(target) = fs::read_link(file)
        && target.is_relative()
        && let Some(Component::Normal(first)) = target.components().next()
    {
        names.push(first.to_owned());
    }
    names
}

/// A tier-up compiling on a thread of its own: the next reload does not wait behind
/// it, and a newer guest supersedes it.
struct TierUp {
    /// The guest whose optimized code it is compiling.
    digest: Digest,
    /// Its bytes: a tier-up superseded by a guest that then did not serve starts
    /// again from them.
    source: Arc<GuestSource>,
    state: Arc<Mutex<TierUpState>>,
}

/// Where a tier-up stands; the loader and the tier-up's thread change it under its
/// lock, so that a superseded tier-up is never handed over after the newer guest.
enum TierUpState {
    /// Compiling; its thread hands the code over when done.
    Compiling,
    /// A newer guest is being loaded: the code (once compiled) is kept back until
    /// that guest has loaded, and is then dropped, or was refused, and then goes over.
    Held(Option<Result<Guest>>),
    /// Handed over, or refused by the compiler (and said so).
    Done,
    /// Dropped for a newer guest.
    Superseded,
}

struct Loader {
    refused: Arc<AtomicU64>,
    runtime: Arc<Runtime>,
    /// The guest file, if the guest is one (not a built-in).
    path: Option<PathBuf>,
    /// Every file whose change triggers a reload: the guest's, the certificate's and
    /// the key's.
    watched: Vec<PathBuf>,
    /// The TLS certificate and key, with TLS listeners.
    certificates: Option<Arc<Certificates>>,
    /// The digest of the guest serving, as the loop last reported.
    serving: Digest,
    /// The digest of a guest handed to the workers whose outcome is not known yet.
    in_flight: Option<Digest>,
    triggers: Receiver<Trigger>,
    outcomes: Receiver<Outcome>,
    /// Where each worker takes new guests, and how to wake it.
    workers: Arc<Vec<(Sender<Loaded>, Remote)>>,
    /// The tier-up compiling, if one is.
    tier_up: Option<TierUp>,
    /// The tier-up of the serving guest, dropped for the guest in flight: started
    /// again if that guest does not serve (refused at start, or by a canary).
    superseded: Option<TierUp>,
}

impl Loader {
    /// Takes triggers until the reloader and every worker's inbox (which wakes it
    /// with outcomes) are gone.
    fn run(mut self) {
        while let Ok(trigger) = self.triggers.recv() {
            if let Trigger::Outcome = trigger {
                self.note_outcomes();
                continue;
            }
            let trigger = if trigger.complete() {
                self.coalesce(trigger)
            } else {
                self.settle(trigger)
            };
            let Some(trigger) = trigger else { return };
            self.reload(trigger);
        }
    }

    /// Folds triggers already queued into this one: one reload serves them all.
    fn coalesce(&self, first: Trigger) -> Option<Trigger> {
        while self.triggers.try_recv().is_ok() {}
        Some(first)
    }

    /// Waits until the file has stopped changing, or a rename or a close says it is
    /// whole, folding the events its writing causes into one trigger. `None` when
    /// the reloader is gone.
    fn settle(&self, first: Trigger) -> Option<Trigger> {
        let started = Instant::now();
        let mut seen = self.stamps();
        let mut stable_since = Instant::now();
        loop {
            match self.triggers.recv_timeout(SETTLE_POLL) {
                // The writer closed the file, or a whole one was renamed into place.
                Ok(trigger) if trigger.complete() => return self.coalesce(first),
                // Taken in by the reload this settles into.
                Ok(Trigger::Outcome) => {}
                Ok(_) => stable_since = Instant::now(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
            let now_seen = self.stamps();
            if now_seen != seen {
                seen = now_seen;
                stable_since = Instant::now();
            }
            if stable_since.elapsed() >= STABLE_FOR || started.elapsed() >= SETTLE_GIVE_UP {
                return Some(first);
            }
        }
    }

    /// Takes in what the workers reported about guests handed over so far: a guest
    /// serves once any worker serves it. When the guest in flight did not serve, the
    /// serving guest's tier-up it superseded starts again.
    fn note_outcomes(&mut self) {
        while let Ok(outcome) = self.outcomes.try_recv() {
            let (digest, served) = match outcome {
                Outcome::Serving(digest) => {
                    self.serving = digest;
                    (digest, true)
                }
                Outcome::Refused(digest) => (digest, false),
            };
            if self.in_flight != Some(digest) {
                continue;
            }
            self.in_flight = None;
            if !served {
                self.drop_tier_up_of(&digest);
            }
            let Some(superseded) = self.superseded.take() else {
                continue;
            };
            if !served && superseded.digest == self.serving {
                info!(
                    digest = digest::short(&superseded.digest),
                    "tier-up started again: the newer guest ({}) did not take over, and {} still runs its baseline code",
                    digest::short(&digest),
                    digest::short(&superseded.digest)
                );
                self.start_tier_up(superseded.source, superseded.digest);
            }
        }
    }

    /// What tells the watched files' versions apart, all together.
    fn stamps(&self) -> Vec<Option<(u64, SystemTime)>> {
        self.watched.iter().map(|file| stamp(file)).collect()
    }

    /// Reloads the TLS certificate and key if they changed; a pair that does not
    /// load is refused and the one serving goes on.
    fn reload_certificates(&self) {
        let Some(certificates) = &self.certificates else {
            return;
        };
        match certificates.reload() {
            Ok(true) => info!("TLS certificate reloaded: new handshakes present it"),
            Ok(false) => {}
            Err(err) => warn!(
                "TLS certificate reload refused: {}; the certificate serving goes on",
                format!("{err:#}").replace('\n', " ")
            ),
        }
    }

    fn reload(&mut self, trigger: Trigger) {
        self.reload_certificates();
        let Some(guest_path) = self.path.clone() else {
            return;
        };
        self.note_outcomes();
        let path = guest_path.display();
        let source = match GuestSource::read(&guest_path) {
            Ok(source) => source,
            Err(err) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                warn!("reload refused: {err:#}; the serving generation keeps serving");
                return;
            }
        };
        let digest = source.digest();
        // Compare with what serves once the swap under way (if any) has landed: a
        // file changed back to the old guest while a swap away from it is in flight
        // must be swapped back.
        match self.in_flight {
            Some(in_flight) if in_flight == digest => {
                info!(%path, digest = digest::short(&digest), "reload skipped: the file is being swapped in already");
                return;
            }
            None if self.serving == digest => {
                info!(%path, digest = digest::short(&digest), "reload skipped: the file is the one serving");
                return;
            }
            _ => {}
        }
        // The tier-up of another guest still compiling waits for the verdict on this
        // one: decided now, at the trigger, not by which compile ends first.
        self.hold_tier_up(&digest);
        let guest = match self.runtime.load_quickly(&source) {
            Ok(guest) => guest,
            Err(err) => {
                self.release_tier_up(&path.to_string());
                self.refused.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "reload refused: {}; the serving generation keeps serving",
                    format!("{err:#}").replace('\n', " ")
                );
                return;
            }
        };
        info!(%path, took_ms = millis(guest.load_time), "new guest {}", guest.how_loaded());
        self.supersede_tier_up(&digest);
        self.in_flight = Some(digest);
        let optimized = guest.optimized;
        self.hand_over(Loaded {
            guest,
            tier_up: false,
            triggered: trigger.at(),
            trial: Arc::default(),
        });
        if optimized {
            return;
        }
        // The same guest again (reloaded before the verdict on its baseline came)
        // while its tier-up still compiles: that one delivers.
        if let Some(running) = &self.tier_up
            && running.digest == digest
            && matches!(*lock(&running.state), TierUpState::Compiling)
        {
            return;
        }
        // The baseline code serves; now the optimized code, on a thread of its own.
        self.start_tier_up(Arc::new(source), digest);
    }

    /// A guest that did not serve (refused at start, or by a canary) gets no
    /// optimized code: its tier-up, if still compiling, is dropped, so that it can
    /// never be handed over later (after another guest came, say).
    fn drop_tier_up_of(&mut self, digest: &Digest) {
        if let Some(tier_up) = self.tier_up.take_if(|t| t.digest == *digest) {
            let mut state = lock(&tier_up.state);
            if !matches!(*state, TierUpState::Done) {
                *state = TierUpState::Superseded;
            }
        }
    }

    /// Compiles the optimized code of `source` on a thread of its own.
    fn start_tier_up(&mut self, source: Arc<GuestSource>, digest: Digest) {
        let state = Arc::new(Mutex::new(TierUpState::Compiling));
        self.tier_up = Some(TierUp {
            digest,
            source: source.clone(),
            state: state.clone(),
        });
        let runtime = self.runtime.clone();
        let workers = self.workers.clone();
        let path = source.origin.clone();
        let spawned = thread::Builder::new()
            .name("sandsock-tier-up".into())
            .spawn(move || tier_up(&runtime, &source, &path, &state, &workers));
        if let Err(err) = spawned {
            warn!("tier-up not started: {err}; the baseline code keeps serving");
        }
    }

    /// A newer guest (`digest`) is about to be loaded: a tier-up of another one still
    /// compiling keeps its code back until that guest has loaded or was refused.
    fn hold_tier_up(&mut self, digest: &Digest) {
        if let Some(tier_up) = &self.tier_up
            && tier_up.digest != *digest
        {
            let mut state = lock(&tier_up.state);
            if matches!(*state, TierUpState::Compiling) {
                *state = TierUpState::Held(None);
            }
        }
    }

    /// The newer guest was refused: the held tier-up goes on (or, done meanwhile, over).
    fn release_tier_up(&mut self, path: &str) {
        let Some(tier_up) = &self.tier_up else {
            return;
        };
        let mut state = lock(&tier_up.state);
        match std::mem::replace(&mut *state, TierUpState::Compiling) {
            TierUpState::Held(Some(compiled)) => {
                *state = TierUpState::Done;
                deliver(compiled, path, &self.workers);
            }
            TierUpState::Held(None) | TierUpState::Compiling => {}
            other => *state = other,
        }
    }

    /// The newer guest (`digest`) has loaded: a held tier-up of another one is
    /// dropped, so that its code never replaces the newer guest.
    fn supersede_tier_up(&mut self, digest: &Digest) {
        let Some(tier_up) = self.tier_up.take() else {
            return;
        };
        if tier_up.digest == *digest {
            self.tier_up = Some(tier_up);
            return;
        }
        let mut state = lock(&tier_up.state);
        if matches!(*state, TierUpState::Held(_)) {
            *state = TierUpState::Superseded;
            info!(
                superseded = digest::short(&tier_up.digest),
                "tier-up dropped: the optimized code of {} is not wanted, a newer guest ({}) arrived",
                digest::short(&tier_up.digest),
                digest::short(digest)
            );
            drop(state);
            // Keep the serving guest's: a guest on trial superseded in turn must not
            // take its place.
            if self.superseded.is_none() || tier_up.digest == self.serving {
                self.superseded = Some(tier_up);
            }
        }
    }

    /// Gives every worker the new guest, and wakes it.
    fn hand_over(&self, loaded: Loaded) {
        hand_over(&self.workers, loaded);
    }
}

/// Compiles the optimized code of `source` and hands it to the workers, unless a
/// newer guest holds it back (then the loader decides) or superseded it.
fn tier_up(
    runtime: &Runtime,
    source: &GuestSource,
    path: &str,
    state: &Mutex<TierUpState>,
    workers: &[(Sender<Loaded>, Remote)],
) {
    let compiled = runtime.load(source);
    let mut state = lock(state);
    match &*state {
        TierUpState::Compiling => {
            *state = TierUpState::Done;
            deliver(compiled, path, workers);
        }
        TierUpState::Held(None) => *state = TierUpState::Held(Some(compiled)),
        TierUpState::Held(Some(_)) | TierUpState::Done | TierUpState::Superseded => {}
    }
}

/// A tier-up's lock, whoever panicked holding it.
fn lock(state: &Mutex<TierUpState>) -> std::sync::MutexGuard<'_, TierUpState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands a tier-up's optimized code to the workers, or says why there is none.
fn deliver(compiled: Result<Guest>, path: &str, workers: &[(Sender<Loaded>, Remote)]) {
    match compiled {
        Ok(guest) => {
            info!(
                %path,
                took_ms = millis(guest.load_time),
                "optimized code of the new guest compiled"
            );
            hand_over(
                workers,
                Loaded {
                    guest,
                    tier_up: true,
                    triggered: Instant::now(),
                    trial: Arc::default(),
                },
            );
        }
        Err(err) => warn!(
            "tier-up refused: {}; the baseline code keeps serving",
            format!("{err:#}").replace('\n', " ")
        ),
    }
}

/// Gives every worker `loaded`, and wakes it.
fn hand_over(workers: &[(Sender<Loaded>, Remote)], loaded: Loaded) {
    for (inbox, remote) in workers {
        if inbox.send(loaded.clone()).is_ok() {
            remote.wake();
        }
    }
}

/// What tells one version of a file from the next without reading it.
fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}
