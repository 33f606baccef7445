//! [`Environment`]: the clocks and random bytes an instance sees. Serving, they
//! are the system's; with `--record`, the system's, each answer written down in
//! the instance's [`Journal`] for its tape; in a replay, a tape's answers, in the
//! order they were given ([`Script`]).
//!
//! Clocks and random bytes are the inputs of a guest that WASI answers and that
//! change from run to run (its environment variables are `--env`'s, on the tape's
//! header), so they are the ones a replay must give back exactly. Nothing here
//! runs per event: only when the guest reads a clock or asks for random bytes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng as _, RngExt as _, SeedableRng, TryRng};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use crate::shared::wit::{Conn, IoError};

/// One answer the environment gave an instance.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// The wall clock: nanoseconds since the Unix epoch.
    Wall(u64),
    /// The monotonic clock, in nanoseconds.
    Monotonic(u64),
    /// Random bytes (secure and insecure alike, in the order given).
    Random(Vec<u8>),
    /// The insecure seed, given once when the instance starts.
    Seed(u128),
    /// What a `connect` answered.
    Connect(Result<Conn, IoError>),
}

/// The answers one recorded instance was given since the recorder last took them.
/// Shared with its clocks and random generators, which live in its WASI context;
/// the lock is taken only when the guest reads one, on the loop's own thread.
#[derive(Clone, Debug, Default)]
pub struct Journal(Arc<Mutex<Vec<Reading>>>);

impl Journal {
    /// Notes one answer.
    pub fn push(&self, reading: Reading) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(reading);
    }

    /// Moves what was noted into `out`.
    pub fn take_into(&self, out: &mut Vec<Reading>) {
        out.append(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A tape's answers for a replayed instance, handed out in order; past the end of
/// the tape (a changed guest that asks more), clocks go on from their last answer
/// and random bytes come from a generator seeded alike on every replay.
#[derive(Debug)]
pub struct Script {
    wall: VecDeque<u64>,
    monotonic: VecDeque<u64>,
    random: VecDeque<u8>,
    last_wall: u64,
    last_monotonic: u64,
    seed: u128,
    beyond: StdRng,
    /// Answers a changed guest asked for that the tape did not hold.
    pub beyond_tape: u64,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            wall: VecDeque::new(),
            monotonic: VecDeque::new(),
            random: VecDeque::new(),
            last_wall: 0,
            last_monotonic: 0,
            seed: 0,
            beyond: StdRng::seed_from_u64(0x5a4d_50c4),
            beyond_tape: 0,
        }
    }
}

impl Script {
    /// A new turn: what the last turn's calls did not ask for is dropped, so that
    /// a guest that asks less (a changed one, or a turn of which the tape holds
    /// only some connections) gets each turn's own answers.
    pub fn start_turn(&mut self) {
        self.wall.clear();
        self.monotonic.clear();
        self.random.clear();
    }

    /// Adds the tape's next answer (a `connect`'s is the caller's business).
    pub fn push(&mut self, reading: &Reading) {
        match reading {
            Reading::Wall(nanos) => self.wall.push_back(*nanos),
            Reading::Monotonic(nanos) => self.monotonic.push_back(*nanos),
            Reading::Random(bytes) => self.random.extend(bytes),
            Reading::Seed(seed) => self.seed = *seed,
            Reading::Connect(_) => {}
        }
    }

    fn wall(&mut self) -> u64 {
        match self.wall.pop_front() {
            Some(nanos) => self.last_wall = nanos,
            None => {
                self.beyond_tape += 1;
                self.last_wall += 1_000;
            }
        }
        self.last_wall
    }

    fn monotonic(&mut self) -> u64 {
        match self.monotonic.pop_front() {
            Some(nanos) => self.last_monotonic = nanos,
            None => {
                self.beyond_tape += 1;
                self.last_monotonic += 1_000;
            }
        }
        self.last_monotonic
    }

    fn fill(&mut self, out: &mut [u8]) {
        for byte in out.iter_mut() {
            *byte = match self.random.pop_front() {
                Some(byte) => byte,
                None => {
                    self.beyond_tape += 1;
                    self.beyond.next_u32() as u8
                }
            };
        }
    }
}

/// Where an instance's clocks and random bytes come from.
#[derive(Clone, Debug, Default)]
pub enum Environment {
    /// The system's (serving, a canary's shadows).
    #[default]
    System,
    /// The system's, each answer noted in the journal (`--record`).
    Recorded(Journal),
    /// A tape's ([`Script`]), for a replay.
    Replayed(Arc<Mutex<Script>>),
}

impl Environment {
    /// Sets `wasi`'s clocks and random generators to this environment's.
    pub fn apply(&self, wasi: &mut WasiCtxBuilder) {
        match self {
            Self::System => {}
            Self::Recorded(journal) => {
                let seed = rand::rng().random::<u128>();
                journal.push(Reading::Seed(seed));
                let generator = || {
                    Generator(Noted {
                        inner: StdRng::from_rng(&mut rand::rng()),
                        journal: journal.clone(),
                    })
                };
                wasi.wall_clock(Noted {
                    inner: (),
                    journal: journal.clone(),
                })
                .monotonic_clock(Noted {
                    inner: std::time::Instant::now(),
                    journal: journal.clone(),
                })
                .secure_random(generator())
                .insecure_random(generator())
                .insecure_random_seed(seed);
            }
            Self::Replayed(script) => {
                let seed = lock(script).seed;
                wasi.wall_clock(Scripted(script.clone()))
                    .monotonic_clock(Scripted(script.clone()))
                    .secure_random(Generator(Scripted(script.clone())))
                    .insecure_random(Generator(Scripted(script.clone())))
                    .insecure_random_seed(seed);
            }
        }
    }

    /// The journal, when recording.
    pub fn journal(&self) -> Option<&Journal> {
        match self {
            Self::Recorded(journal) => Some(journal),
            _ => None,
        }
    }
}

fn lock(script: &Mutex<Script>) -> std::sync::MutexGuard<'_, Script> {
    script.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A system clock or generator whose every answer is noted in a journal.
struct Noted<T> {
    inner: T,
    journal: Journal,
}

impl HostWallClock for Noted<()> {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Nanoseconds since the epoch fit 64 bits until the year 2554.
        let nanos = now.as_nanos() as u64;
        self.journal.push(Reading::Wall(nanos));
        Duration::from_nanos(nanos)
    }
}

impl HostMonotonicClock for Noted<std::time::Instant> {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let nanos = self.inner.elapsed().as_nanos() as u64;
        self.journal.push(Reading::Monotonic(nanos));
        nanos
    }
}

impl ByteSource for Noted<StdRng> {
    fn fill(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst);
        self.journal.push(Reading::Random(dst.to_vec()));
    }
}

/// A tape's clock or generator, for a replay.
struct Scripted(Arc<Mutex<Script>>);

impl HostWallClock for Scripted {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(lock(&self.0).wall())
    }
}

impl HostMonotonicClock for Scripted {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        lock(&self.0).monotonic()
    }
}

impl ByteSource for Scripted {
    fn fill(&mut self, dst: &mut [u8]) {
        lock(&self.0).fill(dst);
    }
}

/// Where a generator's bytes come from: every answer of it, numbers too, is bytes
/// from here, so that a tape's random bytes replay whatever the guest asked for.
trait ByteSource: Send {
    fn fill(&mut self, dst: &mut [u8]);
}

/// A generator of a [`ByteSource`]'s bytes, as WASI takes one.
struct Generator<S>(S);

impl<S: ByteSource> TryRng for Generator<S> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.0.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.0.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_gives_the_tape_then_goes_on() {
        let mut script = Script::default();
        script.push(&Reading::Wall(10));
        script.push(&Reading::Random(vec![1, 2]));
        assert_eq!(script.wall(), 10);
        assert_eq!(script.wall(), 1_010, "past the tape, the clock goes on");
        let mut bytes = [0; 2];
        script.fill(&mut bytes);
        assert_eq!(bytes, [1, 2]);
        assert_eq!(script.beyond_tape, 1);
    }

    #[test]
    fn what_a_noted_generator_gives_is_in_the_journal() {
        let journal = Journal::default();
        let mut noted = Generator(Noted {
            inner: StdRng::seed_from_u64(1),
            journal: journal.clone(),
        });
        let n = noted.next_u64();
        let mut readings = Vec::new();
        journal.take_into(&mut readings);
        assert_eq!(readings, [Reading::Random(n.to_le_bytes().to_vec())]);
    }
}
