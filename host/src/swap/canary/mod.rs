//! [`Canary`]: a new generation tried on live traffic before it serves (`--swap
//! canary`).
//!
//! The candidate runs as a *shadow* beside the serving generation: for each new
//! connection it samples, the shadow hears the same events and reads the same bytes
//! the serving generation read, in the same order (`ShadowIo`); its writes are kept,
//! never sent. Once a connection has ended on the serving side, the two outputs are
//! compared as byte streams, and so is where each closed it (`diff`). A second
//! shadow of the *serving* code, on the same input, learns the noise: bytes where the
//! serving code differs from itself are not compared. Both shadows start from the
//! serving instance's snapshot, when it keeps state. After enough connections
//! agree the candidate is promoted with a normal swap; the first divergence, trap,
//! or a timeout rejects it, and no client notices either way. With several
//! workers, each tries the candidate on its own connections, the count is theirs
//! together, and the first worker to decide decides for all ([`Trial`]).
//!
//! [`Pilot`] drives a trial from the loop; `record::diff` compares two outputs (a
//! replay compares the same way).
//!
//! A connection that proves nothing is *inconclusive*, neither agreeing nor
//! diverging: one that failed or that the host ended, one with no input and no
//! output (a health check's connect), one whose output is mostly noise (state the
//! shadows never saw, such as what other connections stored), or one too long to
//! hold.

mod pilot;
pub mod trial;

pub use pilot::{Pilot, report};
pub use trial::Trial;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SwapMode;
use super::reloader::Loaded;
use crate::record::diff::{first_difference, mostly_noise, snippet};
use crate::runtime::component::Guest;
use crate::runtime::digest::Digest;
use crate::runtime::engine::Runtime;
use crate::runtime::environment::Environment;
use crate::runtime::instance::Instance;
use crate::runtime::shadow::{MAX_OUTPUT, ShadowIo};
use crate::runtime::shadow_store::Recording;
use crate::runtime::store_session::SHADOW_OWNER;
use crate::runtime::trap::describe;
use crate::shared::metrics::CanaryCounters;
use crate::shared::wit::Conn;
use crate::sockets::events::Event;
use crate::sockets::net::Net;
use crate::store::{Delivery, StoreLink};

/// How long a shadow may keep a connection open after the serving generation
/// ended it (a close behind its own timer, say) before that counts as a
/// divergence.
const GRACE: Duration = Duration::from_secs(2);

/// How often a worker's trial looks whether another worker's decided.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// What `--swap canary` is told on the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CanaryConfig {
    /// The share of new connections compared, in percent (1 to 100).
    pub sample_percent: u32,
    /// Connections compared with no divergence before the candidate is promoted.
    pub connections: u32,
    /// How a promoted candidate takes over (drain or handoff).
    pub then: SwapMode,
    /// How long to wait for enough connections; then the candidate is rejected.
    pub timeout: Duration,
    /// Learn the serving code's own noise with a second shadow.
    pub noise: bool,
}

/// Where a canary stands after a batch.
pub enum Verdict {
    /// Still comparing.
    Running,
    /// Enough connections agreed: promote the candidate.
    Promote,
    /// Rejected, for the reason given (one line).
    Reject(String),
}

/// A shadow instance and the `io` it sees.
struct Shadow {
    instance: Instance,
    io: Option<Box<ShadowIo>>,
}

impl Shadow {
    /// A fresh instance of `guest`, given `seed` (the serving instance's snapshot)
    /// if there is one and it takes it, then attached to the worker's store as a
    /// shadow: its reads go through to it, nothing else (what `restore` asked of
    /// the store before that went nowhere).
    fn start(
        runtime: &Runtime,
        guest: &Guest,
        seed: Option<&[u8]>,
        store: Option<&StoreLink>,
    ) -> anyhow::Result<Self> {
        // A shadow's clocks are the system's: it is compared, never recorded.
        let mut instance = runtime.instantiate_in(guest, Environment::System)?;
        if let Some(seed) = seed
            && let Ok(Err(why)) = instance.restore(seed.to_vec())
        {
            tracing::info!(
                "canary: a shadow refused the serving instance's state ({why}); it starts fresh"
            );
        }
        let mut io = Box::<ShadowIo>::default();
        if let Some(link) = store {
            instance.attach_store(link, SHADOW_OWNER);
            io.store.asker = instance.store_asker();
        }
        Ok(Self {
            instance,
            io: Some(io),
        })
    }

    /// Whether `delivery` (an answer read through to the store) is this shadow's.
    fn owns(&self, delivery: &Delivery) -> bool {
        self.view().store.asker == Some(delivery.to())
    }

    fn io(&mut self) -> &mut ShadowIo {
        self.io.as_deref_mut().expect("lent only during a call")
    }

    fn view(&self) -> &ShadowIo {
        self.io.as_deref().expect("lent only during a call")
    }

    /// Calls the shadow with what it has to hear now.
    fn call(&mut self, now: Instant, events: &mut Vec<Event>) -> Result<(), String> {
        events.clear();
        self.io().events(now, events);
        if events.is_empty() {
            return Ok(());
        }
        self.instance
            .call_shadow(events, &mut self.io)
            .map_err(|err| describe(&err, self.instance.memory_refused()))
    }
}

/// What the serving generation did on one sampled connection.
#[derive(Default)]
struct Record {
    output: Vec<u8>,
    /// Input bytes the serving generation read so far.
    input: usize,
    /// The input offset at which the serving generation closed it.
    closed_at: Option<usize>,
    /// When it ended on the serving side (closed, or failed).
    ended: Option<Instant>,
    /// It failed, or the host ended it: nothing to compare.
    uncomparable: bool,
}

/// A candidate under trial.
pub struct Canary {
    config: CanaryConfig,
    loaded: Loaded,
    serving: Arc<Guest>,
    runtime: Arc<Runtime>,
    /// The worker's store, which the shadows read through to.
    store: Option<StoreLink>,
    /// The serving instance's snapshot when the trial started.
    seed: Option<Vec<u8>>,
    candidate: Shadow,
    noise: Option<Shadow>,
    records: HashMap<Conn, Record>,
    started: Instant,
    /// New connections seen, for sampling.
    seen: u64,
    inconclusive: u32,
    /// Shadow time, in this canary.
    spent: Duration,
    events: Vec<Event>,
    /// A shadow was called in this turn of the loop: at most one is.
    called: bool,
    /// The serving code's shadow goes first next time both have work.
    noise_next: bool,
}

impl Canary {
    /// Starts `loaded` as a shadow (and, with noise learning, one of `serving`),
    /// both from `seed` (the serving instance's snapshot), and starts recording
    /// into `net`. An error if an instance cannot start.
    pub fn start(
        config: CanaryConfig,
        loaded: Loaded,
        serving: Arc<Guest>,
        seed: Option<Vec<u8>>,
        runtime: Arc<Runtime>,
        store: Option<StoreLink>,
        net: &mut Net,
    ) -> Result<Self, String> {
        let candidate = Shadow::start(&runtime, &loaded.guest, seed.as_deref(), store.as_ref())
            .map_err(|err| format!("it failed to start: {}", describe(&err, false)))?;
        let noise = if config.noise {
            Some(
                Shadow::start(&runtime, &serving, seed.as_deref(), store.as_ref())
                    .map_err(|err| format!("the serving code's shadow failed to start: {err:#}"))?,
            )
        } else {
            None
        };
        net.watch();
        Ok(Self {
            config,
            loaded,
            serving,
            runtime,
            store,
            seed,
            candidate,
            noise,
            records: HashMap::new(),
            started: Instant::now(),
            seen: 0,
            inconclusive: 0,
            spent: Duration::ZERO,
            events: Vec::new(),
            called: false,
            noise_next: false,
        })
    }

    /// The candidate's digest.
    pub fn candidate(&self) -> Digest {
        self.loaded.guest.digest
    }

    /// The candidate's digest, short.
    pub fn digest(&self) -> String {
        self.loaded.guest.short_digest()
    }

    /// The candidate, to promote (or, for a tier-up that arrives during the trial,
    /// to replace with its optimized code).
    pub fn loaded_mut(&mut self) -> &mut Loaded {
        &mut self.loaded
    }

    /// Ends the trial; records nothing more, and gives the candidate back.
    pub fn finish(self, net: &mut Net) -> Loaded {
        if let Some(tapes) = net.tapes() {
            tapes.end_canary();
        }
        net.unwatch_if_idle();
        self.loaded
    }

    /// Connections compared so far (by every worker's trial), connections
    /// inconclusive here, and the shadow time spent here.
    pub fn progress(&self) -> (u32, u32, Duration) {
        (self.loaded.trial.total(), self.inconclusive, self.spent)
    }

    /// A connection the serving generation accepted: sampled or not.
    pub fn accepted(&mut self, conn: Conn, net: &mut Net) {
        self.seen += 1;
        let percent = u64::from(self.config.sample_percent);
        // Every connection at 100 %, evenly spread below it.
        if self.seen * percent / 100 == (self.seen - 1) * percent / 100 {
            return;
        }
        let Some(tapes) = net.tapes() else { return };
        tapes.start_canary(conn);
        let peer = net.peer_of(conn);
        self.candidate.io().accept(conn, peer.clone());
        if let Some(noise) = &mut self.noise {
            noise.io().accept(conn, peer);
        }
        self.records.insert(conn, Record::default());
    }

    /// An answer the real store gave a shadow (a read it made through).
    pub fn deliver(&mut self, delivery: Delivery) {
        for shadow in [Some(&mut self.candidate), self.noise.as_mut()]
            .into_iter()
            .flatten()
        {
            if shadow.owns(&delivery) {
                shadow.io().store.mail.push(delivery);
                return;
            }
        }
    }

    /// After the serving generation's batch: hands the shadows what it read and
    /// what it did with the store (`recording`), runs them, compares the
    /// connections that ended, and says where the trial stands.
    pub fn after_batch(
        &mut self,
        net: &mut Net,
        recording: Option<&Recording>,
        counters: &mut CanaryCounters,
    ) -> Verdict {
        let now = Instant::now();
        if let Some(recording) = recording {
            for shadow in [Some(&mut self.candidate), self.noise.as_mut()]
                .into_iter()
                .flatten()
            {
                shadow.io().store.serving(recording);
            }
        }
        let mut too_long = Vec::new();
        if let Some(tapes) = net.tapes() {
            let records = &mut self.records;
            let candidate = self.candidate.io.as_deref_mut().expect("not lent");
            let mut noise = self.noise.as_mut().and_then(|n| n.io.as_deref_mut());
            tapes.take(|conn, tape| {
                let Some(record) = records.get_mut(&conn) else {
                    return;
                };
                record.input += tape.input.len();
                record.output.extend_from_slice(&tape.output);
                for io in [Some(&mut *candidate), noise.as_deref_mut()]
                    .into_iter()
                    .flatten()
                {
                    if let Some(shadow) = io.conns.get_mut(&conn) {
                        shadow.input.extend_from_slice(&tape.input);
                        shadow.eof |= tape.eof;
                        shadow.hung_up |= tape.hung_up;
                    }
                }
                if record.ended.is_none() && (tape.closed || tape.hung_up) {
                    record.ended = Some(now);
                    record.uncomparable = tape.hung_up;
                    if tape.closed && !tape.hung_up {
                        record.closed_at = Some(record.input);
                    }
                }
                if record.output.len() > MAX_OUTPUT {
                    too_long.push(conn);
                }
            });
            for &conn in &too_long {
                tapes.stop_canary(conn);
            }
        }
        for conn in too_long {
            self.forget(conn);
        }
        if !self.called
            && let Err(verdict) = self.call_one(now, counters)
        {
            return verdict;
        }
        self.judge_and_decide(now, counters)
    }

    /// At the start of each turn of the loop: a shadow call if one has work (timers
    /// due, input left unread), grace periods over, the timeout.
    pub fn tick(&mut self, counters: &mut CanaryCounters) -> Verdict {
        let now = Instant::now();
        self.called = false;
        if let Err(verdict) = self.call_one(now, counters) {
            return verdict;
        }
        self.judge_and_decide(now, counters)
    }

    /// When the trial next needs the loop: at once while a shadow has work, else a
    /// shadow timer, a grace period's end, the timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let shadows = || {
            [Some(&self.candidate), self.noise.as_ref()]
                .into_iter()
                .flatten()
        };
        if shadows().any(|s| s.view().has_work(now)) {
            return Some(now);
        }
        let timers = shadows().filter_map(|s| s.view().next_timer());
        let graces = self
            .records
            .values()
            .filter_map(|r| r.ended.map(|at| at + GRACE));
        // Another worker's trial may decide: look again soon.
        timers
            .chain(graces)
            .chain([self.started + self.config.timeout, now + FOLLOW_EVERY])
            .min()
    }

    /// Calls one shadow that has work, taking turns, so that the serving
    /// generation's events wait for at most one shadow call per turn of the loop.
    /// A trap of the candidate is a rejection, unless the serving code's shadow
    /// traps on the same input too (then both start afresh); a trap of the latter
    /// alone restarts it.
    fn call_one(&mut self, now: Instant, counters: &mut CanaryCounters) -> Result<(), Verdict> {
        let candidate_has = self.candidate.view().has_work(now);
        let noise_has = self.noise.as_ref().is_some_and(|n| n.view().has_work(now));
        let noise_turn = noise_has && (self.noise_next || !candidate_has);
        if !candidate_has && !noise_has {
            return Ok(());
        }
        self.called = true;
        self.noise_next = !noise_turn;
        let started = Instant::now();
        let result = if noise_turn {
            self.noise
                .as_mut()
                .expect("has work")
                .call(now, &mut self.events)
        } else {
            self.candidate.call(now, &mut self.events)
        };
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(why) if noise_turn => {
                tracing::warn!(
                    "canary: the serving code's shadow trapped ({why}); it starts afresh"
                );
                self.restart(false).map_err(Verdict::Reject)
            }
            Err(why) => {
                // The same input to the serving code: does it trap too?
                let serving_traps = match &mut self.noise {
                    Some(noise) => noise.call(now, &mut self.events).is_err(),
                    None => false,
                };
                if serving_traps {
                    tracing::warn!(
                        "canary: the candidate and the serving code's shadow both trapped ({why}); both start afresh"
                    );
                    self.restart(true).map_err(Verdict::Reject)
                } else {
                    Err(self.settle(false, format!("the candidate trapped: {why}")))
                }
            }
        };
        let spent = started.elapsed();
        self.spent += spent;
        counters.seconds += spent.as_secs_f64();
        outcome
    }

    /// Compares what ended, then: promote, reject, or go on.
    fn judge_and_decide(&mut self, now: Instant, counters: &mut CanaryCounters) -> Verdict {
        match self.loaded.trial.decided() {
            Some(true) => return Verdict::Promote,
            Some(false) => return Verdict::Reject("another worker's trial rejected it".into()),
            None => {}
        }
        if let Some(why) = self.store_difference() {
            counters.divergences += 1;
            return self.settle(false, why);
        }
        if let Some(why) = self.judge(now, counters) {
            return self.settle(false, why);
        }
        if self.loaded.trial.total() >= self.config.connections {
            return self.settle(true, String::new());
        }
        if now >= self.started + self.config.timeout {
            return self.settle(false, format!(
                "only {} of {} connections compared in {:?} (--canary-timeout; {} inconclusive)",
                self.loaded.trial.total(), self.config.connections, self.config.timeout, self.inconclusive
            ));
        }
        Verdict::Running
    }

    /// The candidate's first store write or publish the serving generation did not
    /// make, unless the serving code's own shadow also made one (the serving code
    /// is not repeatable there: its store operations are noise, not compared).
    fn store_difference(&self) -> Option<String> {
        let candidate = self.candidate.view().store.difference.as_ref()?;
        let noisy = self
            .noise
            .as_ref()
            .is_some_and(|n| n.view().store.difference.is_some());
        (!noisy).then(|| format!("the candidate's store operations differ: {candidate}"))
    }

    /// Starts the noise shadow afresh (and the candidate's too, with `both`);
    /// every connection under way becomes inconclusive.
    fn restart(&mut self, both: bool) -> Result<(), String> {
        let conns: Vec<Conn> = self.records.keys().copied().collect();
        for conn in conns {
            self.forget(conn);
        }
        let (seed, store) = (self.seed.as_deref(), self.store.as_ref());
        if both {
            self.candidate = Shadow::start(&self.runtime, &self.loaded.guest, seed, store)
                .map_err(|err| format!("it failed to start again: {}", describe(&err, false)))?;
        }
        self.noise = Some(
            Shadow::start(&self.runtime, &self.serving, seed, store).map_err(|err| {
                format!("the serving code's shadow failed to start again: {err:#}")
            })?,
        );
        Ok(())
    }

    /// Drops a connection from the trial, inconclusive. (Its tape is stopped by
    /// the caller, or ends by itself.)
    fn forget(&mut self, conn: Conn) {
        self.records.remove(&conn);
        self.candidate.io().conns.remove(&conn);
        if let Some(noise) = &mut self.noise {
            noise.io().conns.remove(&conn);
        }
        self.inconclusive += 1;
    }

    /// Compares every connection that has ended on every side (or whose grace is
    /// over); the first divergence, in words.
    fn judge(&mut self, now: Instant, counters: &mut CanaryCounters) -> Option<String> {
        let candidate = self.candidate.view();
        let noise = self.noise.as_ref().map(Shadow::view);
        let done = |conn: &Conn, at: Instant| {
            let ended = |io: &ShadowIo| io.conns.get(conn).is_none_or(|c| c.ended());
            now >= at + GRACE || (ended(candidate) && noise.is_none_or(ended))
        };
        let ended: Vec<Conn> = self
            .records
            .iter()
            .filter(|(conn, record)| {
                record
                    .ended
                    .is_some_and(|at| record.uncomparable || done(conn, at))
            })
            .map(|(&conn, _)| conn)
            .collect();
        for conn in ended {
            let record = self.records.remove(&conn).expect("listed");
            let candidate = self.candidate.io().conns.remove(&conn).expect("sampled");
            let noise = self.noise.as_mut().and_then(|n| n.io().conns.remove(&conn));
            let noise_output = noise.as_ref().map(|n| n.output.as_slice());
            let idle = record.input == 0 && record.output.is_empty();
            let noisy = noise_output.is_some_and(|n| mostly_noise(&record.output, n));
            if record.uncomparable || idle || noisy {
                self.inconclusive += 1;
                continue;
            }
            // The serving generation's output is within MAX_OUTPUT (or the
            // connection was dropped as too long): a candidate past it wrote more.
            let noise_overflowed = noise.as_ref().is_some_and(|n| n.output_dropped > 0);
            if candidate.output_dropped > 0 && !noise_overflowed {
                counters.divergences += 1;
                return Some(format!(
                    "connection {conn} ({}) diverged in length: the candidate wrote more than {MAX_OUTPUT} bytes, the serving generation {}",
                    candidate.peer.as_deref().unwrap_or("?"),
                    record.output.len(),
                ));
            }
            if let Some(at) = first_difference(&record.output, &candidate.output, noise_output) {
                counters.divergences += 1;
                return Some(format!(
                    "connection {conn} ({}) diverged at byte {at} of its output ({} bytes from the serving generation, {} from the candidate): serving {} candidate {}",
                    candidate.peer.as_deref().unwrap_or("?"),
                    record.output.len(),
                    candidate.output.len(),
                    snippet(&record.output, at),
                    snippet(&candidate.output, at),
                ));
            }
            let noisy_close = noise
                .as_ref()
                .is_some_and(|n| n.closed_at != record.closed_at);
            if candidate.closed_at != record.closed_at && !noisy_close {
                counters.divergences += 1;
                let when = |at: Option<usize>| {
                    at.map_or("kept it open".to_string(), |n| {
                        format!("closed it after reading {n} bytes")
                    })
                };
                return Some(format!(
                    "connection {conn} ({}) diverged in its close: the serving generation {}, the candidate {}",
                    candidate.peer.as_deref().unwrap_or("?"),
                    when(record.closed_at),
                    when(candidate.closed_at),
                ));
            }
            counters.compared += 1;
            self.loaded.trial.compared();
        }
        None
    }

    /// The verdict this worker reached, unless another worker's trial of the same
    /// guest decided first: then that one, so that every worker serves the same code.
    fn settle(&self, promote: bool, why: String) -> Verdict {
        match (promote, self.loaded.trial.decide(promote)) {
            (true, true) => Verdict::Promote,
            (false, true) => {
                tracing::warn!(
                    "canary: {why}; another worker's trial promoted the new guest first, and this worker follows"
                );
                Verdict::Promote
            }
            (true, false) => Verdict::Reject("another worker's trial rejected it first".into()),
            (false, false) => Verdict::Reject(why),
        }
    }
}
