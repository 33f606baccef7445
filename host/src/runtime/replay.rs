//! [`replay`]: one tape's instance run again, offline, on any guest: the same
//! connections' bytes arriving at the same turns, the same clocks and random
//! bytes, the same store answers and topic messages; no socket.
//!
//! The replayed instance sees its `io` as a canary's shadow does ([`ShadowIo`]):
//! every write accepted whole and kept, closes noted with how much it had read,
//! its interest honoured (input it does not read waits). Its store is the tape's
//! ([`ShadowStore`]): an operation the recorded instance made is answered what it
//! was answered; a write it did not make is a difference; a read it did not make
//! goes to an empty in-memory store. Its timers fire at the turns the tape's fired
//! (the same ids), or, for ids the tape never fired, when due on the tape's clock.
//! Its clocks and random bytes are the tape's, in order ([`Script`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::component::Guest;
use super::engine::Runtime;
use super::environment::{Environment, Reading, Script};
use super::shadow::{Arrival, ShadowIo};
use super::shadow_store::Recording;
use super::store_session::SHADOW_OWNER;
use super::trap::{backtrace, describe};
use crate::record::tape::{Item, Tape};
use crate::shared::wit::Conn;
use crate::store::{
    Delivery, Namespace, RedisOptions, StoreConfig, StoreKind, StoreLimits, Stores,
};

/// Calls one turn may take (new input, then answers, then timers due): a guest
/// that keeps asking for more is cut short rather than spin.
const MAX_CALLS_PER_TURN: usize = 16;

/// A trap: its cause as the log words it, its guest backtrace, and whether it is
/// the wall-clock deadline (`--event-timeout`), which depends on the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Trapped {
    /// The cause.
    pub message: String,
    /// The guest's backtrace.
    pub backtrace: String,
    /// It ran past `--event-timeout`.
    pub deadline: bool,
}

/// One connection of a tape, as recorded and as replayed.
#[derive(Debug, Default)]
pub struct ConnRun {
    /// The peer's address.
    pub peer: Option<String>,
    /// Recorded from its start (a trap tape keeps skipped connections' last turn).
    pub sampled: bool,
    /// Input bytes on the tape.
    pub input: usize,
    /// What the recorded instance sent.
    pub recorded: Vec<u8>,
    /// Where it closed the connection: after this many input bytes.
    pub recorded_close: Option<usize>,
    /// What the replayed instance sent.
    pub replayed: Vec<u8>,
    /// Where it closed the connection.
    pub replayed_close: Option<usize>,
    /// What it sent past the first [`MAX_OUTPUT`] bytes, not kept.
    pub replayed_dropped: usize,
    /// It failed, or the host ended it: its close is not compared.
    pub hung_up: bool,
    /// Still open (on the replay's side) when the replayed instance trapped.
    pub open_at_trap: bool,
}

/// A tape's instance, replayed.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Every connection on the tape, by handle.
    pub conns: BTreeMap<Conn, ConnRun>,
    /// The replayed instance's trap.
    pub trap: Option<Trapped>,
    /// The recorded instance's trap.
    pub recorded_trap: Option<Trapped>,
    /// The replayed instance would not start.
    pub failed_to_start: Option<String>,
    /// Clock readings and random bytes it asked for beyond what the tape holds.
    pub beyond_tape: u64,
    /// Its first store write or publish the recorded instance did not make.
    pub store_difference: Option<String>,
}

/// Replays `tape` on a fresh instance of `guest` (on `runtime`, whose sandbox
/// holds the recorded limits).
pub fn replay(runtime: &Runtime, guest: &Guest, tape: &Tape) -> Result<Replayed> {
    let mut replayed = Replayed::default();
    let script = Arc::new(Mutex::new(Script::default()));
    // What the instance's start-up reads (its seed, its first clock) is on the
    // first turn, before its first call's.
    if let Some(first) = tape.turns.first() {
        push_readings(&script, first);
    }
    let mut instance = match runtime.instantiate_in(guest, Environment::Replayed(script.clone())) {
        Ok(instance) => instance,
        Err(err) => {
            replayed.failed_to_start = Some(describe(&err, false));
            return Ok(replayed);
        }
    };
    let stores = Stores::open(memory_store()?, 1, None)?;
    let link = stores.link(0);
    instance.attach_store(&link, SHADOW_OWNER);
    let mut io = Some(Box::<ShadowIo>::default());
    let shadow = io.as_deref_mut().expect("just made");
    shadow.store.asker = instance.store_asker();
    shadow.max_timers = tape.header.limits.max_timers as usize;
    shadow.scripted_timers = tape
        .turns
        .iter()
        .flat_map(|turn| &turn.items)
        .filter_map(|item| match item {
            Item::Timer { id } => Some(*id),
            _ => None,
        })
        .collect::<HashSet<u64>>();
    let mut mail = Vec::new();
    // What `restore` asks of the store was noted with the first turn's calls.
    let mut first_recording = Recording::default();
    if let Some(first) = tape.turns.first() {
        for item in &first.items {
            store_item(item, &mut first_recording);
        }
    }
    if let Some(state) = &tape.snapshot {
        if let Some(shadow) = io.as_deref_mut() {
            shadow.store.serving(&first_recording);
        }
        let restored = instance.restore_shadow(state.clone(), &mut io);
        link.inbox().take(&mut mail);
        if let Some(shadow) = io.as_deref_mut() {
            shadow.store.mail.extend(mail.drain(..).filter(is_answer));
        }
        match restored {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::warn!("the replayed guest refused the tape's snapshot ({why})")
            }
            Err(err) => {
                replayed.trap = Some(trapped(&err, instance.memory_refused()));
                return Ok(replayed);
            }
        }
    }
    let base = Instant::now();
    let mut events = Vec::new();
    for (index, turn) in tape.turns.iter().enumerate() {
        if index > 0 {
            push_readings(&script, turn);
        }
        let now = base + Duration::from_micros(turn.at_us);
        let shadow = io.as_deref_mut().expect("not lent");
        shadow.now = Some(now);
        let mut inputs = TurnInputs::default();
        for item in &turn.items {
            take_item(item, shadow, &mut replayed, &mut inputs);
        }
        // The first turn's store items went in before a restore.
        let fed = index == 0 && tape.snapshot.is_some();
        if !inputs.recording.is_empty() && !fed {
            shadow.store.serving(&inputs.recording);
        }
        for id in inputs.fired {
            shadow.fire(id);
        }
        for call in 0..MAX_CALLS_PER_TURN {
            let shadow = io.as_deref_mut().expect("not lent");
            // Room to write earns the turn's first call, as the host's loop gives
            // one in every turn to a connection that wants to write.
            let called_anyway = call == 0 && shadow.wants_write();
            if !called_anyway && !shadow.has_work(now) {
                break;
            }
            events.clear();
            shadow.events(now, &mut events);
            let result = instance.call_shadow(&events, &mut io);
            // Reads the tape did not hold, answered by the empty store.
            link.inbox().take(&mut mail);
            let shadow = io.as_deref_mut().expect("not lent");
            shadow.store.mail.extend(mail.drain(..).filter(is_answer));
            if let Err(err) = result {
                replayed.trap = Some(trapped(&err, instance.memory_refused()));
                break;
            }
        }
        if replayed.trap.is_some() {
            break;
        }
        let shadow = io.as_deref_mut().expect("not lent");
        for conn in inputs.later {
            hang_up(conn, shadow, &mut replayed.conns);
        }
    }
    let shadow = io.as_deref().expect("not lent");
    for (conn, run) in &mut replayed.conns {
        if let Some(replay) = shadow.conns.get(conn) {
            run.replayed = replay.output.clone();
            run.replayed_dropped = replay.output_dropped;
            run.replayed_close = replay.closed_at;
            run.open_at_trap = replayed.trap.is_some() && !replay.ended();
        }
    }
    replayed.beyond_tape = script
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .beyond_tape;
    replayed.store_difference = shadow.store.difference.clone();
    Ok(replayed)
}

/// An answer or message for the replayed instance (a `lost` has no meaning here).
fn is_answer(delivery: &Delivery) -> bool {
    !matches!(delivery, Delivery::Lost { .. })
}

/// The turn's clocks, random bytes and `connect` answers, for its calls.
fn push_readings(script: &Mutex<Script>, turn: &crate::record::tape::Turn) {
    let mut script = script.lock().unwrap_or_else(PoisonError::into_inner);
    script.start_turn();
    for item in &turn.items {
        let reading = match item {
            Item::Wall { nanos } => Reading::Wall(*nanos),
            Item::Monotonic { nanos } => Reading::Monotonic(*nanos),
            Item::Random { bytes } => Reading::Random(bytes.clone()),
            Item::Seed { seed } => Reading::Seed(*seed),
            _ => continue,
        };
        script.push(&reading);
    }
}

/// What a turn's items leave for after they are all taken in.
#[derive(Default)]
struct TurnInputs {
    /// The recorded instance's store operations, answers and messages.
    recording: Recording,
    /// Timers the tape fired in this turn.
    fired: Vec<u64>,
    /// Connections that end after the turn's calls.
    later: Vec<Conn>,
    /// Connections the turn brought input for.
    read: Vec<Conn>,
}

/// A store item of a turn, into what the recorded instance did with the store.
fn store_item(item: &Item, recording: &mut Recording) {
    match item {
        Item::StoreOp { id, op } => recording.ops.push((*id, op.clone())),
        Item::StoreAnswer { id, outcome } => recording.answers.push((*id, outcome.clone())),
        Item::Published { topic, bytes } => {
            recording.publishes.push((topic.clone(), bytes.clone()))
        }
        Item::Message { topic, bytes } => recording
            .messages
            .push((topic.clone(), Arc::from(bytes.as_slice()))),
        _ => {}
    }
}

/// One item of a turn, taken in before the turn's calls.
fn take_item(item: &Item, shadow: &mut ShadowIo, replayed: &mut Replayed, turn: &mut TurnInputs) {
    let conns = &mut replayed.conns;
    let recording = &mut turn.recording;
    match item {
        Item::Accepted {
            conn,
            peer,
            tls,
            sampled,
        } => {
            shadow.arrive(
                *conn,
                peer.clone(),
                tls.clone().map(Into::into),
                Arrival::Accepted,
            );
            conns.insert(
                *conn,
                ConnRun {
                    peer: peer.clone(),
                    sampled: *sampled,
                    ..ConnRun::default()
                },
            );
        }
        Item::Adopted { conn, peer, tls } => {
            let tls = tls.clone().map(Into::into);
            shadow.arrive(*conn, peer.clone(), tls, Arrival::Adopted);
            // Only a recorded connection's handover is on a tape.
            conns.insert(
                *conn,
                ConnRun {
                    peer: peer.clone(),
                    sampled: true,
                    ..ConnRun::default()
                },
            );
        }
        Item::Connected { conn } => shadow.connected(*conn),
        Item::Input { conn, bytes } => {
            turn.read.push(*conn);
            if let Some(replay) = shadow.conns.get_mut(conn) {
                replay.input.extend_from_slice(bytes);
            }
            if let Some(run) = conns.get_mut(conn) {
                run.input += bytes.len();
            }
        }
        Item::Eof { conn } => {
            if let Some(replay) = shadow.conns.get_mut(conn) {
                replay.eof = true;
            }
        }
        // A failure found after the turn's input was read (a write that failed):
        // the turn's calls read that input first.
        Item::Hangup { conn } if turn.read.contains(conn) => turn.later.push(*conn),
        Item::Hangup { conn } => hang_up(*conn, shadow, conns),
        // The host ended it after the turn's call (a trap's clean-up, a drain
        // timeout): the turn's calls see it open.
        Item::HostClosed { conn } => turn.later.push(*conn),
        Item::Timer { id } => turn.fired.push(*id),
        Item::Connect { result } => shadow.connects.push_back(*result),
        Item::StoreOp { .. }
        | Item::StoreAnswer { .. }
        | Item::Published { .. }
        | Item::Message { .. } => store_item(item, recording),
        Item::Output { conn, bytes } => {
            if let Some(run) = conns.get_mut(conn) {
                run.recorded.extend_from_slice(bytes);
            }
        }
        Item::Closed { conn } => {
            if let Some(run) = conns.get_mut(conn) {
                run.recorded_close = Some(run.input);
            }
        }
        Item::Trap {
            message,
            backtrace,
            deadline,
        } => {
            replayed.recorded_trap = Some(Trapped {
                message: message.clone(),
                backtrace: backtrace.clone(),
                deadline: *deadline,
            });
        }
        Item::Shutdown => shadow.shutdown = true,
        Item::Wall { .. } | Item::Monotonic { .. } | Item::Random { .. } | Item::Seed { .. } => {}
    }
}

/// `conn` failed, or the host ended it: the replayed instance hears `hangup`, and
/// its close is not compared.
fn hang_up(conn: Conn, shadow: &mut ShadowIo, conns: &mut BTreeMap<Conn, ConnRun>) {
    if let Some(replay) = shadow.conns.get_mut(&conn) {
        replay.hung_up = true;
    }
    if let Some(run) = conns.get_mut(&conn) {
        run.hung_up = true;
    }
}

fn trapped(err: &anyhow::Error, memory_refused: bool) -> Trapped {
    Trapped {
        message: describe(err, memory_refused),
        backtrace: backtrace(err),
        deadline: matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ),
    }
}

/// An empty in-memory store: where a replayed read the tape does not hold goes.
fn memory_store() -> Result<StoreConfig> {
    Ok(StoreConfig {
        kind: StoreKind::Memory,
        namespace: Namespace::new("replay").map_err(anyhow::Error::msg)?,
        limits: StoreLimits::DEFAULT,
        redis: RedisOptions::default(),
    })
}
