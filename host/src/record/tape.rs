//! The tape format: what `--record` writes and `host replay` reads, one file per
//! guest instance.
//!
//! A tape holds what the world gave one instance, turn by turn, and what the
//! instance sent back: never the guest's own calls, so that a changed guest (which
//! makes other calls) replays on it too.
//!
//! ```text
//! file   = MAGIC version:u16le frame*
//! frame  = tag:u8 length:u32le payload crc32(tag length payload):u32le
//! ```
//!
//! The first frame is the [`Header`]; a [`Frame::Snapshot`] may follow (the state
//! the instance was restored from); then [`Turn`]s; a tape closed cleanly ends with
//! [`Frame::End`]. Integers in payloads are LEB128 varints, byte strings a varint
//! length and the bytes. A reader checks every length against what is left and
//! every frame's checksum, so a cut or damaged file is an error naming the byte
//! where it goes wrong, never a panic; what a frame may ask of memory is bounded
//! ([`MAX_FRAME`], [`MAX_ITEMS`]).

use super::codec::{Reader, put_bytes, put_header, put_str, put_turn};

pub use super::codec::{MAX_ITEMS, put_bytes_item, put_item, turn_payload};
pub use super::items::{End, Header, Item, TapeLimits, TlsFacts, Turn};

/// What every tape starts with.
pub const MAGIC: &[u8; 14] = b"sandsock tape\n";

/// The version of the format this host writes and reads.
pub const FORMAT: u16 = 1;

/// The largest frame a reader accepts (a turn's input is bounded far below).
pub const MAX_FRAME: usize = 64 << 20;

const TAG_HEADER: u8 = 1;
const TAG_SNAPSHOT: u8 = 2;
const TAG_TURN: u8 = 3;
const TAG_END: u8 = 4;

/// One frame of a tape.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Who was recorded.
    Header(Header),
    /// The state the instance was restored from (a handoff's snapshot).
    Snapshot(Vec<u8>),
    /// One turn.
    Turn(Turn),
    /// The end.
    End(End),
}

/// A whole tape, read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tape {
    /// Who was recorded.
    pub header: Header,
    /// The snapshot the instance was restored from, if it was.
    pub snapshot: Option<Vec<u8>>,
    /// Every turn.
    pub turns: Vec<Turn>,
    /// How it ended; `None` for a tape whose host had not closed it.
    pub end: Option<End>,
}

impl Tape {
    /// Whether the tape holds every turn of its instance while it was recorded.
    pub fn complete(&self) -> bool {
        self.end.as_ref().is_some_and(|end| end.complete)
    }

    /// Reads a whole tape; the error names where and why it is unreadable.
    pub fn read(bytes: &[u8]) -> Result<Self, String> {
        let mut frames = Frames::new(bytes)?;
        let header = match frames.next_frame()? {
            Some(Frame::Header(header)) => header,
            Some(_) => return Err("its first frame is not a header".into()),
            None => return Err("it ends after its magic, with no header".into()),
        };
        let mut tape = Tape {
            header,
            ..Tape::default()
        };
        while let Some(frame) = frames.next_frame()? {
            if tape.end.is_some() {
                return Err(format!("a frame follows its end, at byte {}", frames.at));
            }
            match frame {
                Frame::Header(_) => {
                    return Err(format!("a second header at byte {}", frames.at));
                }
                Frame::Snapshot(state) if tape.turns.is_empty() && tape.snapshot.is_none() => {
                    tape.snapshot = Some(state);
                }
                Frame::Snapshot(_) => {
                    return Err(format!(
                        "a snapshot after its first turn, at byte {}",
                        frames.at
                    ));
                }
                Frame::Turn(turn) => tape.turns.push(turn),
                Frame::End(end) => tape.end = Some(end),
            }
        }
        Ok(tape)
    }
}

/// The bytes a tape file starts with.
pub fn preamble() -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out
}

/// One frame, framed: tag, length, payload, checksum.
pub fn frame(frame: &Frame) -> Vec<u8> {
    let mut payload = Vec::new();
    let tag = match frame {
        Frame::Header(header) => {
            put_header(&mut payload, header);
            TAG_HEADER
        }
        Frame::Snapshot(state) => {
            put_bytes(&mut payload, state);
            TAG_SNAPSHOT
        }
        Frame::Turn(turn) => {
            put_turn(&mut payload, turn);
            TAG_TURN
        }
        Frame::End(end) => {
            payload.push(u8::from(end.complete));
            put_str(&mut payload, &end.why);
            TAG_END
        }
    };
    framed(tag, &payload)
}

/// A turn's encoded payload framed, as the writer thread does it (the loop
/// encodes, the writer checksums).
pub fn framed_turn(payload: &[u8]) -> Vec<u8> {
    framed(TAG_TURN, payload)
}

fn framed(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Frames, read one at a time from a tape's bytes.
struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Frames<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a sandsock tape (its first bytes are not the tape's magic)".into());
        }
        let version = u16::from_le_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
        if version != FORMAT {
            return Err(format!(
                "tape format {version}, and this host reads format {FORMAT}"
            ));
        }
        Ok(Self {
            bytes,
            at: MAGIC.len() + 2,
        })
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            return Ok(None);
        }
        if rest.len() < 5 {
            return Err(format!(
                "cut short at byte {}, inside a frame's head",
                self.at
            ));
        }
        let tag = rest[0];
        let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!(
                "a frame of {len} bytes at byte {}: damaged",
                self.at
            ));
        }
        if rest.len() < 5 + len + 4 {
            return Err(format!(
                "cut short at byte {}: a frame of {len} bytes, and the file holds {} more \
                 (or the frame's length is damaged)",
                self.at,
                rest.len() - 5
            ));
        }
        let body = &rest[..5 + len];
        let crc = u32::from_le_bytes(rest[5 + len..9 + len].try_into().expect("4 bytes"));
        if crc32fast::hash(body) != crc {
            return Err(format!(
                "damaged at byte {}: a frame's checksum does not match",
                self.at
            ));
        }
        let mut reader = Reader::new(&body[5..]);
        let frame = match tag {
            TAG_HEADER => reader.header().map(Frame::Header),
            TAG_SNAPSHOT => reader.bytes().map(|b| Frame::Snapshot(b.to_vec())),
            TAG_TURN => reader.turn().map(Frame::Turn),
            TAG_END => reader.end().map(Frame::End),
            other => Err(format!("unknown frame kind {other}")),
        }
        .and_then(|frame| match reader.done() {
            true => Ok(frame),
            false => Err("bytes left over in a frame".to_string()),
        })
        .map_err(|why| format!("damaged at byte {}: {why}", self.at))?;
        self.at += 9 + len;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::shared::wit::IoError;
    use crate::store::{Key, Op, Outcome, StoreError};

    fn sample() -> Vec<u8> {
        let header = Header {
            guest: "http".into(),
            digest: [7; 32],
            contract: "1.1.0".into(),
            host: "0.1.0".into(),
            worker: 1,
            owner: 3,
            shared: true,
            started_ms: 1_796_000_000_000,
            sample_percent: 100,
            limits: TapeLimits {
                event_timeout_us: 100_000,
                fuel: Some(1 << 40),
                max_memory: 64 << 20,
                max_timers: 1024,
            },
            env: vec![("MODE".into(), "http".into())],
        };
        let key = Key {
            bucket: "b".into(),
            key: "k".into(),
        };
        let turn = Turn {
            at_us: 12,
            items: vec![
                Item::Accepted {
                    conn: 5,
                    peer: Some("127.0.0.1:4000".into()),
                    tls: Some(TlsFacts {
                        version: "TLSv1.3".into(),
                        server_name: None,
                        alpn: Some("http/1.1".into()),
                    }),
                    sampled: true,
                },
                Item::Adopted {
                    conn: 6,
                    peer: None,
                    tls: None,
                },
                Item::Connected { conn: 9 },
                Item::Input {
                    conn: 5,
                    bytes: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                },
                Item::Eof { conn: 5 },
                Item::Hangup { conn: 6 },
                Item::HostClosed { conn: 6 },
                Item::Timer { id: u64::MAX },
                Item::Wall { nanos: 1 << 62 },
                Item::Monotonic { nanos: 42 },
                Item::Random {
                    bytes: vec![1, 2, 3],
                },
                Item::Seed {
                    seed: u128::MAX - 1,
                },
                Item::Connect { result: Ok(9) },
                Item::Connect {
                    result: Err(IoError::NotPermitted),
                },
                Item::StoreOp {
                    id: 1,
                    op: Op::CompareAndSwap(key.clone(), None, b"v".to_vec()),
                },
                Item::StoreOp {
                    id: 2,
                    op: Op::SetMany("b".into(), vec![("k".into(), vec![])]),
                },
                Item::StoreOp {
                    id: 3,
                    op: Op::Increment(key, -4),
                },
                Item::StoreAnswer {
                    id: 1,
                    outcome: Outcome::Values(vec![None, Some(b"x".to_vec())]),
                },
                Item::StoreAnswer {
                    id: 2,
                    outcome: Outcome::Failed(StoreError::TimedOut),
                },
                Item::StoreAnswer {
                    id: 3,
                    outcome: Outcome::Keys(vec!["a".into()], true),
                },
                Item::Published {
                    topic: "room".into(),
                    bytes: b"hi".to_vec(),
                },
                Item::Message {
                    topic: "room".into(),
                    bytes: b"hi".to_vec(),
                },
                Item::Output {
                    conn: 5,
                    bytes: b"HTTP/1.1 200 OK\r\n".to_vec(),
                },
                Item::Closed { conn: 5 },
                Item::Shutdown,
                Item::Trap {
                    message: "unreachable".into(),
                    backtrace: "guest backtrace:".into(),
                    deadline: false,
                },
            ],
        };
        let mut bytes = preamble();
        bytes.extend(frame(&Frame::Header(header)));
        bytes.extend(frame(&Frame::Snapshot(b"state".to_vec())));
        bytes.extend(frame(&Frame::Turn(turn)));
        bytes.extend(frame(&Frame::End(End {
            complete: true,
            why: "the instance ended".into(),
        })));
        bytes
    }

    #[test]
    fn every_item_reads_back_as_written() {
        let bytes = sample();
        let tape = Tape::read(&bytes).expect("reads");
        assert!(tape.complete());
        assert_eq!(tape.snapshot.as_deref(), Some(&b"state"[..]));
        assert_eq!(tape.turns.len(), 1);
        assert_eq!(tape.turns[0].items.len(), 26);
        // And writing what was read gives the same bytes.
        let mut again = preamble();
        again.extend(frame(&Frame::Header(tape.header.clone())));
        again.extend(frame(&Frame::Snapshot(tape.snapshot.clone().unwrap())));
        again.extend(frame(&Frame::Turn(tape.turns[0].clone())));
        again.extend(frame(&Frame::End(tape.end.clone().unwrap())));
        assert_eq!(again, bytes);
    }

    #[test]
    fn a_cut_tape_says_where() {
        let bytes = sample();
        let err = Tape::read(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(err.starts_with("cut short at byte"), "{err}");
        assert!(
            Tape::read(b"GET / HTTP/1.1")
                .unwrap_err()
                .starts_with("not a sandsock tape")
        );
    }

    #[test]
    fn a_damaged_byte_is_caught_by_the_checksum() {
        let mut bytes = sample();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        let err = Tape::read(&bytes).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The reader is fuzzed: any damage, cut or splice of a real tape is an
        /// error or a tape, never a panic (the checksum is recomputed, so the
        /// decoder itself sees the damage).
        #[test]
        fn the_reader_never_panics_on_damaged_frames(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = sample();
            let start = preamble().len();
            // Damage the turn frame's payload and fix its checksum, so that the
            // item decoder is what meets the damage.
            let mut frames = bytes[start..].to_vec();
            let header_len = 9 + u32::from_le_bytes(frames[1..5].try_into().unwrap()) as usize;
            let snapshot_len = 9 + u32::from_le_bytes(frames[header_len + 1..header_len + 5].try_into().unwrap()) as usize;
            let turn_at = header_len + snapshot_len;
            let turn_len = u32::from_le_bytes(frames[turn_at + 1..turn_at + 5].try_into().unwrap()) as usize;
            let mut payload = frames[turn_at + 5..turn_at + 5 + turn_len].to_vec();
            for (index, byte) in &flips {
                let i = index.index(payload.len());
                payload[i] = *byte;
            }
            let keep = cut.index(payload.len() + 1);
            payload.truncate(keep);
            let rest = frames.split_off(turn_at + 9 + turn_len);
            frames.truncate(turn_at);
            frames.extend(framed_turn(&payload));
            frames.extend(rest);
            let mut damaged = preamble();
            damaged.extend(frames);
            let _ = Tape::read(&damaged);
            // And raw damage anywhere, checksums and all.
            let mut raw = bytes.clone();
            for (index, byte) in &flips {
                let i = index.index(raw.len());
                raw[i] = *byte;
            }
            let _ = Tape::read(&raw[..cut.index(raw.len() + 1)]);
        }
    }
}
