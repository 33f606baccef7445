//! `chat`: every line a client sends goes to every other connected client, on
//! every worker: the room is a topic of the host (contract 1.1). Each instance
//! subscribes to it and publishes its clients' lines there, tagged with the
//! instance's origin (a random number: with a shared store, instances of other
//! hosts hear the room too, and handles are unique in one host only) and the
//! sender's handle, and relays every message it hears to its own clients but the
//! sender.
//!
//! A line is relayed exactly as sent, `\n` included, once it is complete; the
//! sender does not get its own lines back. Lines are capped at [`MAX_LINE`] bytes.
//! A client that does not read what the room sends it is disconnected once
//! [`MAX_BACKLOG`] bytes wait for it, so one stalled reader costs the guest a
//! bounded amount of memory and never slows the others down.
//!
//! The room survives a hot swap with `--swap handoff`: every connection handed
//! over joins again as it is adopted, and a line a client was in the middle of
//! sending is completed from the snapshot; what was relayed but not yet sent goes
//! out first (the SDK keeps that).

use sandsock_sdk::{
    BadSnapshot, Conn, Handler, Io, LineBuffers, SnapshotReader, SnapshotWriter, Subscription,
};

/// The topic every instance's clients talk on.
const ROOM: &str = "room";

/// Longest line, without its `\n`. A longer one gets `ERROR line too long` and
/// the sender is disconnected.
const MAX_LINE: usize = 64 * 1024;

/// Most bytes waiting for one receiver before it is disconnected.
const MAX_BACKLOG: usize = 1024 * 1024;

/// The layout of [`Chat::encode`], version 2:
///
/// ```text
/// version  u8    2
/// origin   u64   the instance's origin, so that its successor knows its lines
///                when they come back from the room
/// lines          each member's unfinished line, as `LineBuffers::encode` writes
///                them (a u64 count, then per member its handle and the bytes)
/// ```
///
/// Version 1 had no origin (the successor keeps its own). Membership itself needs
/// no more: each connection handed over is adopted, and joins again then.
const SNAPSHOT_VERSION: u8 = 2;

/// What a message starts with: the publishing instance's origin and the sender's
/// handle, 8 bytes each, little-endian.
const TAG: usize = 16;

struct Chat {
    /// Every open connection, in the order they joined (the order lines go out).
    members: Vec<Conn>,
    /// Each member's unfinished line.
    lines: LineBuffers,
    /// The tag, then the complete lines of one chunk: one message.
    outgoing: Vec<u8>,
    /// The room, once joined (with the first member).
    subscription: Option<Subscription>,
    /// This instance's mark on its messages.
    origin: u64,
}

impl Default for Chat {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            lines: LineBuffers::new(MAX_LINE),
            outgoing: Vec::new(),
            subscription: None,
            origin: random_origin(),
        }
    }
}

/// A random number: std seeds its hash maps' keys from the host's random source
/// (WASI's `random`), and hashing nothing with them gives one.
fn random_origin() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(())
}

impl Handler for Chat {
    fn on_accept(&mut self, io: &mut Io, conn: Conn) {
        self.join(io);
        self.members.push(conn);
    }

    /// Joins the room again; the unfinished line `restore` brought back is kept.
    fn on_adopted(&mut self, io: &mut Io, conn: Conn) {
        self.join(io);
        if !self.members.contains(&conn) {
            self.members.push(conn);
        }
    }

    /// Lines from any client of any instance (this one's included): to every
    /// member here but the sender.
    fn on_message(&mut self, io: &mut Io, _subscription: Subscription, message: &[u8]) {
        let Some((origin, rest)) = message.split_first_chunk::<8>() else {
            return;
        };
        let Some((sender, lines)) = rest.split_first_chunk::<8>() else {
            return;
        };
        let ours = u64::from_le_bytes(*origin) == self.origin;
        let sender = ours.then(|| Conn::from_raw(u64::from_le_bytes(*sender)));
        self.relay(io, sender, lines);
    }

    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        self.encode()
    }

    /// A snapshot that cannot be read loses the unfinished lines (the host logs
    /// why), not the connections.
    fn restore(&mut self, _io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        let (origin, lines) = decode(state)?;
        self.lines.merge(lines);
        if let Some(origin) = origin {
            self.origin = origin;
        }
        Ok(())
    }

    fn on_data(&mut self, io: &mut Io, sender: Conn, data: &[u8]) {
        self.outgoing.clear();
        self.outgoing.extend_from_slice(&self.origin.to_le_bytes());
        self.outgoing.extend_from_slice(&sender.raw().to_le_bytes());
        let outgoing = &mut self.outgoing;
        let fed = self
            .lines
            .feed(sender, data, |line| outgoing.extend_from_slice(line));
        if self.outgoing.len() > TAG && io.publish(ROOM, &self.outgoing).is_err() {
            // A host without topics for it: the room is this instance's.
            let lines = std::mem::take(&mut self.outgoing);
            self.relay(io, Some(sender), &lines[TAG..]);
            self.outgoing = lines;
        }
        if fed.is_err() {
            io.write(sender, b"ERROR line too long\n");
            io.close(sender);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.members.retain(|&member| member != conn);
        self.lines.forget(conn);
    }

    /// Relayed lines are queued already, and a graceful close sends them.
    fn on_shutdown(&mut self, io: &mut Io) {
        io.close_all();
    }
}

impl Chat {
    /// Subscribes to the room, once.
    fn join(&mut self, io: &mut Io) {
        if self.subscription.is_none() {
            self.subscription = io.subscribe(ROOM).ok();
        }
    }

    /// Sends `lines` to every member but the sender (if it is one of this
    /// instance's), dropping receivers that fell too far behind.
    fn relay(&self, io: &mut Io, sender: Option<Conn>, lines: &[u8]) {
        for &receiver in self
            .members
            .iter()
            .filter(|&&member| Some(member) != sender)
        {
            io.write(receiver, lines);
            if io.queued(receiver) > MAX_BACKLOG {
                // A graceful close would wait for the backlog to drain, which a
                // receiver that does not read never lets happen.
                io.abort(receiver);
            }
        }
    }
}

impl Chat {
    /// The snapshot: the origin and each member's unfinished line.
    fn encode(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        w.u64(self.origin);
        self.lines.encode(&mut w);
        w.into_bytes()
    }
}

/// Reads what [`Chat::encode`] wrote (or its version 1, without an origin),
/// checking all of it before any of it is used.
fn decode(state: &[u8]) -> Result<(Option<u64>, LineBuffers), BadSnapshot> {
    let mut r = SnapshotReader::new(state);
    let origin = match r.u8()? {
        1 => None,
        SNAPSHOT_VERSION => Some(r.u64()?),
        _ => return Err(BadSnapshot::new("unknown chat snapshot version")),
    };
    let lines = LineBuffers::decode(&mut r, MAX_LINE)?;
    r.finish()?;
    Ok((origin, lines))
}

sandsock_sdk::serve!(Chat);

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_with(sent: &[(u64, &[u8])]) -> Chat {
        let mut chat = Chat::default();
        for &(raw, bytes) in sent {
            let conn = Conn::from_raw(raw);
            chat.members.push(conn);
            chat.lines.feed(conn, bytes, |_| {}).expect("short lines");
        }
        chat
    }

    #[test]
    fn unfinished_lines_survive_a_snapshot() {
        let chat = chat_with(&[(1, b"hel"), (2, b""), (3, b"done\nnext")]);
        let (origin, restored) = decode(&chat.encode()).expect("its own snapshot");
        assert_eq!(origin, Some(chat.origin));
        let held = |raw| restored.held(Conn::from_raw(raw)).to_vec();
        assert_eq!(
            (held(1), held(2), held(3)),
            (b"hel".to_vec(), Vec::new(), b"next".to_vec())
        );
    }

    #[test]
    fn a_bad_snapshot_is_refused_without_panicking() {
        let good = chat_with(&[(1, b"abc")]).encode();
        for end in 0..good.len() {
            assert!(decode(&good[..end]).is_err(), "truncated at {end}");
        }
        let mut version = good.clone();
        version[0] = 0;
        assert!(decode(&version).is_err(), "another layout");
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        w.u64(7);
        w.u64(1);
        w.conn(Conn::from_raw(1));
        w.bytes(b"a\nb");
        assert!(decode(&w.into_bytes()).is_err(), "a complete line");
    }

    #[test]
    fn a_version_1_snapshot_still_restores() {
        let mut w = SnapshotWriter::new();
        w.u8(1);
        w.u64(1);
        w.conn(Conn::from_raw(4));
        w.bytes(b"half");
        let (origin, lines) = decode(&w.into_bytes()).expect("version 1");
        assert_eq!(origin, None);
        assert_eq!(lines.held(Conn::from_raw(4)), b"half");
    }

    #[test]
    fn instances_have_different_origins() {
        assert_ne!(Chat::default().origin, Chat::default().origin);
    }
}
