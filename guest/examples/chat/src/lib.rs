//! `chat`: every line a client sends goes to every other connected client.
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

use std::collections::HashMap;

use sandsock_sdk::{BadSnapshot, Conn, Handler, Io, Lines, SnapshotReader, SnapshotWriter};

/// Longest line, without its `\n`. A longer one gets `ERROR line too long` and
/// the sender is disconnected.
const MAX_LINE: usize = 64 * 1024;

/// Most bytes waiting for one receiver before it is disconnected.
const MAX_BACKLOG: usize = 1024 * 1024;

/// The layout of [`Chat::encode`], version 1 (the SDK's `bytes` is a `u64`
/// length, then the bytes):
///
/// ```text
/// version  u8    1
/// members  u64   then per member: handle u64, unfinished line bytes
/// ```
///
/// Membership itself needs no more: each connection handed over is adopted,
/// and joins again then.
const SNAPSHOT_VERSION: u8 = 1;

#[derive(Default)]
struct Chat {
    /// Every open connection, in the order they joined (the order lines go out).
    members: Vec<Conn>,
    /// Each member's unfinished line.
    lines: HashMap<Conn, Lines>,
    /// The complete lines of one chunk, sent to each receiver in one write.
    outgoing: Vec<u8>,
}

impl Handler for Chat {
    fn on_accept(&mut self, _io: &mut Io, conn: Conn) {
        self.members.push(conn);
        self.lines.insert(conn, Lines::new(MAX_LINE));
    }

    /// Joins the room again, keeping the unfinished line `restore` brought back.
    fn on_adopted(&mut self, _io: &mut Io, conn: Conn) {
        if !self.members.contains(&conn) {
            self.members.push(conn);
        }
        self.lines
            .entry(conn)
            .or_insert_with(|| Lines::new(MAX_LINE));
    }

    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        self.encode()
    }

    fn restore(&mut self, _io: &mut Io, state: &[u8]) {
        match decode(state) {
            Ok(lines) => self.lines.extend(lines),
            Err(error) => eprintln!("chat: unfinished lines are lost: {error}"),
        }
    }

    fn on_data(&mut self, io: &mut Io, sender: Conn, data: &[u8]) {
        let Some(lines) = self.lines.get_mut(&sender) else {
            return;
        };
        self.outgoing.clear();
        let fed = lines.feed(data, |line| self.outgoing.extend_from_slice(line));
        if !self.outgoing.is_empty() {
            self.relay(io, sender);
        }
        if fed.is_err() {
            io.write(sender, b"ERROR line too long\n");
            io.close(sender);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.members.retain(|&member| member != conn);
        self.lines.remove(&conn);
    }

    /// Relayed lines are queued already, and a graceful close sends them.
    fn on_shutdown(&mut self, io: &mut Io) {
        io.close_all();
    }
}

impl Chat {
    /// Sends `outgoing` to every member but the sender, dropping receivers that
    /// fell too far behind.
    fn relay(&self, io: &mut Io, sender: Conn) {
        for &receiver in self.members.iter().filter(|&&member| member != sender) {
            io.write(receiver, &self.outgoing);
            if io.queued(receiver) > MAX_BACKLOG {
                // A graceful close would wait for the backlog to drain, which a
                // receiver that does not read never lets happen.
                io.abort(receiver);
            }
        }
    }
}

impl Chat {
    /// The snapshot: each member's unfinished line, in join order.
    fn encode(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        let members = self.members.iter().filter_map(|&conn| {
            let lines = self.lines.get(&conn)?;
            Some((conn, lines))
        });
        w.u64(members.clone().count() as u64);
        for (conn, lines) in members {
            w.u64(conn.raw());
            w.bytes(lines.unfinished());
        }
        w.into_bytes()
    }
}

/// Reads what [`Chat::encode`] wrote, checking all of it before any of it is
/// used.
fn decode(state: &[u8]) -> Result<HashMap<Conn, Lines>, BadSnapshot> {
    let mut r = SnapshotReader::new(state);
    if r.u8()? != SNAPSHOT_VERSION {
        return Err(BadSnapshot::new("unknown chat snapshot version"));
    }
    let mut lines = HashMap::new();
    for _ in 0..r.count()? {
        let conn = Conn::from_raw(r.u64()?);
        let unfinished = Lines::resume(MAX_LINE, r.bytes()?)
            .ok_or(BadSnapshot::new("an unfinished line is not one"))?;
        if lines.insert(conn, unfinished).is_some() {
            return Err(BadSnapshot::new("a member appears twice"));
        }
    }
    r.finish()?;
    Ok(lines)
}

sandsock_sdk::serve!(Chat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_lines_survive_a_snapshot() {
        let mut chat = Chat::default();
        for (raw, sent) in [(1, &b"hel"[..]), (2, b""), (3, b"done\nnext")] {
            let conn = Conn::from_raw(raw);
            let mut lines = Lines::new(MAX_LINE);
            lines.feed(sent, |_| {}).expect("short lines");
            chat.members.push(conn);
            chat.lines.insert(conn, lines);
        }
        let restored = decode(&chat.encode()).expect("its own snapshot");
        let unfinished = |raw| restored[&Conn::from_raw(raw)].unfinished().to_vec();
        assert_eq!(
            (unfinished(1), unfinished(2), unfinished(3)),
            (b"hel".to_vec(), Vec::new(), b"next".to_vec())
        );
    }

    #[test]
    fn a_bad_snapshot_is_refused_without_panicking() {
        let mut chat = Chat::default();
        let mut lines = Lines::new(MAX_LINE);
        lines.feed(b"abc", |_| {}).expect("a short line");
        chat.members.push(Conn::from_raw(1));
        chat.lines.insert(Conn::from_raw(1), lines);
        let good = chat.encode();
        for end in 0..good.len() {
            assert!(decode(&good[..end]).is_err(), "truncated at {end}");
        }
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        w.u64(1);
        w.u64(1);
        w.bytes(b"a\nb");
        assert!(decode(&w.into_bytes()).is_err(), "a complete line");
    }
}
