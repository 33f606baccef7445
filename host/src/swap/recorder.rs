//! [`Recorder`]: `--record`'s worker side. One tape per guest instance: each
//! turn the instance was called in, what the world gave it (new connections,
//! bytes, end-of-streams, failures, timers, clocks, random bytes, store answers,
//! topic messages, `connect` answers), and what it sent (bytes, closes), with its
//! trap if it trapped.
//!
//! The unit is the instance, not the connection: a shared instance's answer on
//! one connection can depend on every connection before it, so its tape holds
//! every sampled connection it served since it started (or since the snapshot it
//! was restored from, which the tape holds too), and a replay runs them in order
//! through one instance. With an instance per connection, a tape is a connection.
//!
//! Sampling is by connection. A skipped connection's bytes are still kept for
//! the turn at hand (a copy per read): if the instance traps in that turn, a trap
//! tape holds that turn's input of the connections it was serving, the sampled
//! ones' whole history, and the trap. What came before that turn on a skipped
//! connection is not kept.
//!
//! The loop thread only encodes; files are the writer's ([`WriterLink`]). When
//! the writer falls behind, or the tape reaches a quarter of
//! `--record-max-bytes`, the instance's tape is cut (marked incomplete) and its
//! connections stop being recorded; the loop never waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::record::tape::{
    End, Frame, Header, Item, TapeLimits, TlsFacts, frame, preamble, put_bytes_item, put_item,
    turn_payload,
};
use crate::record::writer::{RecordConfig, RecordStats, TapeId, WriterLink};
use crate::runtime::component::Guest;
use crate::runtime::environment::Reading;
use crate::runtime::sandbox::{Isolation, Sandbox};
use crate::runtime::shadow_store::Recording;
use crate::shared::wit::Conn;
use crate::sockets::batch::Batch;
use crate::sockets::events::Event;
use crate::sockets::net::Net;
use crate::sockets::owners::Owner;
use crate::sockets::tape::Tape;

/// What one call of a recorded instance gave and did beyond its connections'
/// bytes, noted by the tenants as it happens (some calls come outside a batch: a
/// handover's, the shutdown's).
pub enum Note {
    /// A call: its environment's answers, its store operations and answers, and
    /// its trap (cause, backtrace, whether it was the wall-clock deadline).
    Call {
        /// The instance's owner.
        owner: Owner,
        /// Its guest (the owner may be gone by the time the recorder looks).
        guest: Option<Arc<Guest>>,
        /// Clocks, random bytes, `connect` answers, in order.
        readings: Vec<Reading>,
        /// What it did with the store.
        store: Option<Recording>,
        /// Its trap.
        trap: Option<(String, String, bool)>,
    },
    /// A connection handed over to `owner` (a swap's handoff, a recycle).
    Adopted {
        /// The new owner.
        owner: Owner,
        /// The connection.
        conn: Conn,
    },
    /// `owner` heard the host's shutdown.
    Shutdown {
        /// The owner.
        owner: Owner,
    },
    /// A fresh instance of `owner` was given a snapshot.
    Restored {
        /// The owner.
        owner: Owner,
        /// The snapshot.
        state: Vec<u8>,
    },
    /// `owner`'s instance ended.
    Ended {
        /// The owner.
        owner: Owner,
    },
}

/// A recorded connection.
struct Watched {
    owner: Owner,
    /// Recorded from its start (else kept a turn at a time, for a trap).
    sampled: bool,
    peer: Option<String>,
    tls: Option<TlsFacts>,
}

/// One instance's tape.
struct InstanceTape {
    id: TapeId,
    started: Instant,
    /// Bytes sent to the writer for it.
    bytes: u64,
    /// Why nothing more is written, once something stopped it.
    cut: Option<&'static str>,
}

/// One owner's turn, as it is built.
#[derive(Default)]
struct TurnBuilder {
    payload: Vec<u8>,
    items: u64,
    sampled: bool,
    skipped: bool,
    /// Arrivals of skipped connections, written only if a trap keeps them.
    skipped_items: Vec<Item>,
    /// It holds the instance's insecure seed (its first call does).
    seeded: bool,
    guest: Option<Arc<Guest>>,
    trap: Option<Item>,
    snapshot: Option<Vec<u8>>,
    ended: bool,
}

impl TurnBuilder {
    fn push(&mut self, item: &Item) {
        put_item(&mut self.payload, item);
        self.items += 1;
    }

    /// Puts `items` before what the turn holds.
    fn prepend(&mut self, items: &[Item]) {
        if items.is_empty() {
            return;
        }
        let mut payload = Vec::with_capacity(self.payload.len() + 64);
        for item in items {
            put_item(&mut payload, item);
        }
        payload.extend_from_slice(&self.payload);
        self.payload = payload;
        self.items += items.len() as u64;
    }
}

/// A worker's recorder.
pub struct Recorder {
    link: WriterLink,
    sample_percent: u32,
    /// The most one tape may take: a quarter of `--record-max-bytes`.
    max_tape_bytes: u64,
    worker: u32,
    limits: TapeLimits,
    env: Vec<(String, String)>,
    shared: bool,
    /// New connections seen, for sampling.
    seen: u64,
    conns: HashMap<Conn, Watched>,
    tapes: HashMap<Owner, InstanceTape>,
    /// Each instance's insecure seed, from its first call, for a tape that opens
    /// later.
    seeds: HashMap<Owner, u128>,
    /// Restore snapshots waiting for their owner's first turn.
    snapshots: HashMap<Owner, Vec<u8>>,
    turns: HashMap<Owner, TurnBuilder>,
    next_tape: TapeId,
}

impl Recorder {
    /// A recorder for `worker` as `config` asks, writing through `link`.
    pub fn new(link: WriterLink, config: &RecordConfig, worker: usize, sandbox: &Sandbox) -> Self {
        let limits = &sandbox.limits;
        Self {
            link,
            sample_percent: config.sample_percent,
            max_tape_bytes: config.max_bytes / 4,
            worker: worker as u32,
            limits: TapeLimits {
                event_timeout_us: limits.event_timeout.as_micros() as u64,
                fuel: limits.fuel,
                max_memory: limits.max_memory as u64,
                max_timers: limits.max_timers as u32,
            },
            env: sandbox.env.clone(),
            shared: sandbox.isolation == Isolation::Shared,
            seen: 0,
            conns: HashMap::new(),
            tapes: HashMap::new(),
            seeds: HashMap::new(),
            snapshots: HashMap::new(),
            turns: HashMap::new(),
            next_tape: (worker as u64) << 48,
        }
    }

    fn stats(&self) -> &Arc<RecordStats> {
        self.link.stats()
    }

    /// Before the batch runs: new connections are sampled and watched; their
    /// arrivals, outbound connections completing and timers are noted.
    pub fn before_batch(&mut self, batch: &Batch, net: &mut Net) {
        for (owner, events) in batch.groups() {
            for event in events {
                match *event {
                    Event::Accepted(conn) => self.accepted(owner, conn, net),
                    Event::Connected(conn) => {
                        if let Some(watched) = self.conns.get(&conn) {
                            let sampled = watched.sampled;
                            self.note(owner, sampled, Item::Connected { conn });
                        }
                    }
                    Event::Timer(id) => {
                        let turn = self.turns.entry(owner).or_default();
                        turn.push(&Item::Timer { id });
                    }
                    _ => {}
                }
            }
        }
    }

    fn accepted(&mut self, owner: Owner, conn: Conn, net: &mut Net) {
        self.seen += 1;
        let percent = u64::from(self.sample_percent);
        // Every connection at 100 %, evenly spread below it.
        let chosen = self.seen * percent / 100 != (self.seen - 1) * percent / 100;
        // An instance whose tape was cut records nothing more.
        let cut = self.tapes.get(&owner).is_some_and(|t| t.cut.is_some());
        let sampled = chosen && !cut;
        let counter = match (chosen, cut) {
            (true, false) => &self.stats().recorded,
            (true, true) => &self.stats().cut,
            (false, _) => &self.stats().skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        net.watch().start_record(conn);
        let peer = net.peer_of(conn);
        let tls = net.tls_of(conn).map(TlsFacts::from);
        let item = Item::Accepted {
            conn,
            peer: peer.clone(),
            tls: tls.clone(),
            sampled,
        };
        self.conns.insert(
            conn,
            Watched {
                owner,
                sampled,
                peer,
                tls,
            },
        );
        self.note(owner, sampled, item);
    }

    /// An arrival: on the tape if sampled, else kept for this turn in case of a trap.
    fn note(&mut self, owner: Owner, sampled: bool, item: Item) {
        let turn = self.turns.entry(owner).or_default();
        if sampled {
            turn.sampled = true;
            turn.push(&item);
        } else {
            turn.skipped = true;
            turn.skipped_items.push(item);
        }
    }

    /// After the batch (and before the canary reads the same tapes): each called
    /// instance's turn, from the tenants' `notes` and its connections' tapes, goes
    /// to the writer. `guest_of` names an owner's guest, for a tape that opens.
    pub fn after_batch<'a>(
        &mut self,
        net: &mut Net,
        notes: &mut Vec<Note>,
        guest_of: impl Fn(Owner) -> Option<&'a Arc<Guest>>,
    ) {
        for note in notes.drain(..) {
            self.take_note(note, net);
        }
        self.take_tapes(net);
        let turns: Vec<(Owner, TurnBuilder)> = self.turns.drain().collect();
        for (owner, mut turn) in turns {
            if turn.guest.is_none() {
                turn.guest = guest_of(owner).cloned();
            }
            self.finish_turn(owner, turn, net);
        }
    }

    fn take_note(&mut self, note: Note, net: &mut Net) {
        match note {
            Note::Call {
                owner,
                guest,
                readings,
                store,
                trap,
            } => {
                let open_or_sampled = self.tapes.contains_key(&owner)
                    || self.turns.get(&owner).is_some_and(|t| t.sampled);
                for reading in &readings {
                    match *reading {
                        Reading::Seed(seed) => {
                            self.seeds.insert(owner, seed);
                        }
                        // Its own connection out: recorded as the instance is.
                        Reading::Connect(Ok(conn)) => {
                            net.watch().start_record(conn);
                            self.conns.insert(
                                conn,
                                Watched {
                                    owner,
                                    sampled: open_or_sampled,
                                    peer: None,
                                    tls: None,
                                },
                            );
                        }
                        _ => {}
                    }
                }
                let turn = self.turns.entry(owner).or_default();
                turn.guest = guest.or(turn.guest.take());
                for reading in readings {
                    turn.seeded |= matches!(reading, Reading::Seed(_));
                    turn.push(&reading_item(reading));
                }
                if let Some(store) = store {
                    push_store(turn, store);
                }
                if let Some((message, backtrace, deadline)) = trap {
                    turn.trap = Some(Item::Trap {
                        message,
                        backtrace,
                        deadline,
                    });
                }
            }
            Note::Adopted { owner, conn } => {
                let Some(watched) = self.conns.get_mut(&conn) else {
                    return;
                };
                watched.owner = owner;
                let item = Item::Adopted {
                    conn,
                    peer: watched.peer.clone(),
                    tls: watched.tls.clone(),
                };
                let sampled = watched.sampled;
                self.note(owner, sampled, item);
            }
            Note::Shutdown { owner } => self.turns.entry(owner).or_default().push(&Item::Shutdown),
            Note::Restored { owner, state } => {
                self.turns.entry(owner).or_default().snapshot = Some(state);
            }
            Note::Ended { owner } => self.turns.entry(owner).or_default().ended = true,
        }
    }

    /// The connections' bytes and ends of this turn, into their owners' turns: a
    /// sampled connection's always, a skipped one's only when its instance trapped.
    fn take_tapes(&mut self, net: &mut Net) {
        let Some(tapes) = net.tapes() else { return };
        let (conns, turns) = (&mut self.conns, &mut self.turns);
        tapes.recorded(|conn, tape| {
            let Some(watched) = conns.get(&conn) else {
                return;
            };
            let (owner, sampled) = (watched.owner, watched.sampled);
            let turn = turns.entry(owner).or_default();
            if !sampled {
                turn.skipped = true;
            }
            if sampled || turn.trap.is_some() {
                if !sampled && !turn.skipped_items.iter().any(|i| arrival_of(i, conn)) {
                    // It arrived in an earlier turn: the trap tape still needs it.
                    turn.skipped_items.push(Item::Accepted {
                        conn,
                        peer: watched.peer.clone(),
                        tls: watched.tls.clone(),
                        sampled: false,
                    });
                }
                put_tape(turn, conn, tape);
                turn.sampled |= sampled;
            }
            if tape.ended() {
                conns.remove(&conn);
            }
        });
    }

    fn finish_turn(&mut self, owner: Owner, mut turn: TurnBuilder, net: &mut Net) {
        if let Some(state) = turn.snapshot.take() {
            self.snapshots.insert(owner, state);
        }
        let trap = turn.trap.take();
        if trap.is_some() && self.tapes.get(&owner).is_some_and(|t| t.cut.is_some()) {
            // The cut tape ends as it was; the trap gets a tape of its own, with the
            // trapping turn's input (its connections are watched as skipped ones).
            self.close(owner, "the instance trapped", false, net);
        }
        let open = self.tapes.contains_key(&owner);
        // Every turn of an open tape is written (its store answers, messages and
        // timers may be a sampled connection's), less the skipped connections'
        // bytes; a turn of skipped connections alone opens none, unless it trapped.
        let wanted = turn.sampled || open || trap.is_some();
        let guest = turn.guest.take();
        if wanted
            && !open
            && (turn.sampled || trap.is_some())
            && let Some(guest) = &guest
        {
            self.open_tape(owner, guest);
            if !turn.seeded
                && let Some(&seed) = self.seeds.get(&owner)
            {
                turn.prepend(&[Item::Seed { seed }]);
            }
        }
        if wanted && self.tapes.contains_key(&owner) {
            if let Some(trap) = &trap {
                let arrivals = std::mem::take(&mut turn.skipped_items);
                turn.prepend(&arrivals);
                turn.push(trap);
                self.stats().traps.fetch_add(1, Ordering::Relaxed);
            }
            self.write_turn(owner, &turn);
        }
        if trap.is_some() {
            self.close(owner, "the instance trapped", true, net);
        } else if turn.ended {
            self.close(owner, "the instance ended", false, net);
        }
        if trap.is_some() || turn.ended {
            // What its instance had is gone with it: a fresh one brings its own.
            self.snapshots.remove(&owner);
            self.seeds.remove(&owner);
        }
    }

    fn open_tape(&mut self, owner: Owner, guest: &Guest) {
        self.next_tape += 1;
        let id = self.next_tape;
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let header = Header {
            guest: guest.name.to_string(),
            digest: guest.digest,
            contract: guest.contract.version().to_string(),
            host: env!("CARGO_PKG_VERSION").to_string(),
            worker: self.worker,
            owner: u64::from(owner),
            shared: self.shared,
            started_ms,
            sample_percent: self.sample_percent,
            limits: self.limits,
            env: self.env.clone(),
        };
        let mut bytes = preamble();
        bytes.extend(frame(&Frame::Header(header)));
        if let Some(state) = self.snapshots.remove(&owner) {
            bytes.extend(frame(&Frame::Snapshot(state)));
        }
        let name = format!(
            "{started_ms:013}-{}-w{}-{id:016x}.tape",
            std::process::id(),
            self.worker
        );
        let len = bytes.len() as u64;
        let cut = (!self.link.open(id, name, bytes)).then_some(BEHIND);
        self.tapes.insert(
            owner,
            InstanceTape {
                id,
                started: Instant::now(),
                bytes: len,
                cut,
            },
        );
    }

    fn write_turn(&mut self, owner: Owner, turn: &TurnBuilder) {
        let Some(tape) = self.tapes.get_mut(&owner) else {
            return;
        };
        if tape.cut.is_some() {
            return;
        }
        let at_us = tape.started.elapsed().as_micros() as u64;
        let payload = turn_payload(at_us, turn.items, &turn.payload);
        // As the file will hold it: framed, with room left for the tape's end.
        let len = (payload.len() + FRAME_OVERHEAD) as u64;
        if tape.bytes + len + END_ROOM > self.max_tape_bytes {
            tape.cut = Some(FULL);
        } else if self.link.turn(tape.id, payload) {
            tape.bytes += len;
            return;
        } else {
            tape.cut = Some(BEHIND);
        }
        self.unsample(owner);
    }

    /// `owner`'s tape was cut: its connections are counted as cut and from now on
    /// kept a turn at a time, as skipped ones are, for a trap.
    fn unsample(&mut self, owner: Owner) {
        let mut cut = 0;
        for watched in self.conns.values_mut().filter(|w| w.owner == owner) {
            cut += u64::from(watched.sampled);
            watched.sampled = false;
        }
        self.stats().cut.fetch_add(cut, Ordering::Relaxed);
    }

    /// `owner` trapped: its connections (closed by the host) stop being watched.
    fn stop_recording(&mut self, owner: Owner, net: &mut Net) {
        let gone: Vec<Conn> = self
            .conns
            .iter()
            .filter(|(_, w)| w.owner == owner)
            .map(|(&conn, _)| conn)
            .collect();
        for conn in gone {
            self.conns.remove(&conn);
            if let Some(tapes) = net.tapes() {
                tapes.forget(conn);
            }
        }
    }

    fn close(&mut self, owner: Owner, why: &str, trap: bool, net: &mut Net) {
        let Some(tape) = self.tapes.remove(&owner) else {
            return;
        };
        self.link.close(tape.id, end_of(tape.cut, why), trap);
        if trap {
            // A trapped instance's connections are closed by the host; a fresh
            // instance starts a tape of its own.
            self.stop_recording(owner, net);
        }
    }

    /// The loop has ended: every tape ends.
    pub fn finish(&mut self) {
        for (_, tape) in self.tapes.drain() {
            self.link
                .close(tape.id, end_of(tape.cut, "the host stopped"), false);
        }
    }
}

/// What framing adds to a turn's payload on the tape: tag, length, checksum.
const FRAME_OVERHEAD: usize = 9;

/// Room kept in a tape's share of the cap for its end frame, so that the
/// recorder cuts a tape before the writer has to.
const END_ROOM: u64 = 256;

/// Why a tape was cut: the writer fell behind.
const BEHIND: &str = "the writer fell behind";

/// Why a tape was cut: it reached a quarter of `--record-max-bytes`.
const FULL: &str = "it reached a quarter of --record-max-bytes";

/// How a tape ends: complete, or cut short (and why).
fn end_of(cut: Option<&str>, why: &str) -> End {
    match cut {
        Some(cut) => End {
            complete: false,
            why: format!("cut short: {cut}; then {why}"),
        },
        None => End {
            complete: true,
            why: why.to_string(),
        },
    }
}

/// Whether `item` is `conn`'s arrival.
fn arrival_of(item: &Item, conn: Conn) -> bool {
    matches!(item, Item::Accepted { conn: c, .. } if *c == conn)
}

/// What one connection's tape holds for this turn, onto the owner's turn.
fn put_tape(turn: &mut TurnBuilder, conn: Conn, tape: &Tape) {
    if !tape.input.is_empty() {
        put_bytes_item(&mut turn.payload, false, conn, &tape.input);
        turn.items += 1;
    }
    if tape.eof {
        turn.push(&Item::Eof { conn });
    }
    if !tape.output.is_empty() {
        put_bytes_item(&mut turn.payload, true, conn, &tape.output);
        turn.items += 1;
    }
    if tape.closed {
        turn.push(&Item::Closed { conn });
    } else if tape.host_closed {
        turn.push(&Item::HostClosed { conn });
    } else if tape.hung_up {
        turn.push(&Item::Hangup { conn });
    }
}

fn reading_item(reading: Reading) -> Item {
    match reading {
        Reading::Wall(nanos) => Item::Wall { nanos },
        Reading::Monotonic(nanos) => Item::Monotonic { nanos },
        Reading::Random(bytes) => Item::Random { bytes },
        Reading::Seed(seed) => Item::Seed { seed },
        Reading::Connect(result) => Item::Connect { result },
    }
}

fn push_store(turn: &mut TurnBuilder, store: Recording) {
    for (id, op) in store.ops {
        turn.push(&Item::StoreOp { id, op });
    }
    for (id, outcome) in store.answers {
        turn.push(&Item::StoreAnswer { id, outcome });
    }
    for (topic, bytes) in store.publishes {
        turn.push(&Item::Published { topic, bytes });
    }
    for (topic, bytes) in store.messages {
        turn.push(&Item::Message {
            topic,
            bytes: bytes.to_vec(),
        });
    }
}
