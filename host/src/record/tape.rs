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

use crate::shared::wit::{Conn, IoError, TlsInfo};
use crate::store::{Key, Op, Outcome, StoreError};

/// What every tape starts with.
pub const MAGIC: &[u8; 14] = b"sandsock tape\n";

/// The version of the format this host writes and reads.
pub const FORMAT: u16 = 1;

/// The largest frame a reader accepts (a turn's input is bounded far below).
pub const MAX_FRAME: usize = 64 << 20;

/// The most items a reader takes in one turn: each costs about a hundred bytes of
/// memory however few it takes on the tape, so a crafted count is refused here.
pub const MAX_ITEMS: usize = 1 << 20;

const TAG_HEADER: u8 = 1;
const TAG_SNAPSHOT: u8 = 2;
const TAG_TURN: u8 = 3;
const TAG_END: u8 = 4;

/// Who was recorded, running what, under which limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    /// The guest's name, as the log names it.
    pub guest: String,
    /// The guest's SHA-256.
    pub digest: [u8; 32],
    /// The contract version it was built for (`1.1.0`).
    pub contract: String,
    /// The host's version that recorded it.
    pub host: String,
    /// The worker that ran the instance.
    pub worker: u32,
    /// The instance's owner number in its worker.
    pub owner: u64,
    /// Whether the instance served every connection (`shared`) or one.
    pub shared: bool,
    /// When the tape started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// `--record-sample`: the share of connections recorded, in percent.
    pub sample_percent: u32,
    /// The limits the instance ran under.
    pub limits: TapeLimits,
    /// The environment variables the guest saw (`--env`).
    pub env: Vec<(String, String)>,
}

/// The limits a replay holds the guest to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TapeLimits {
    /// `--event-timeout`, in microseconds: a wall-clock deadline.
    pub event_timeout_us: u64,
    /// `--fuel` per call, if set: deterministic.
    pub fuel: Option<u64>,
    /// `--max-memory`, in bytes.
    pub max_memory: u64,
    /// `--max-timers`.
    pub max_timers: u32,
}

/// One call's worth of what the world gave the instance, and what it sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Turn {
    /// When, in microseconds since the tape started.
    pub at_us: u64,
    /// What the turn brought and what the instance sent; a replay takes in every
    /// input before the turn's calls (a hang-up the host caused after them, and
    /// one that followed input read in the same turn, after), so their order within
    /// a turn is the recorder's: arrivals and timers, the environment's answers and
    /// the store's, each connection's input, end, output and close, the trap last.
    pub items: Vec<Item>,
}

/// The facts of a TLS connection the guest can ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The protocol agreed by ALPN.
    pub alpn: Option<String>,
}

impl From<TlsInfo> for TlsFacts {
    fn from(info: TlsInfo) -> Self {
        Self {
            version: info.version,
            server_name: info.server_name,
            alpn: info.alpn,
        }
    }
}

impl From<TlsFacts> for TlsInfo {
    fn from(facts: TlsFacts) -> Self {
        Self {
            version: facts.version,
            server_name: facts.server_name,
            alpn: facts.alpn,
        }
    }
}

/// One thing on a tape.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A new connection, with its peer and TLS facts. `sampled` is false for one
    /// kept only because the instance trapped while it was open.
    Accepted {
        /// Its handle (the same in a replay).
        conn: Conn,
        /// The peer's address.
        peer: Option<String>,
        /// TLS facts, from a TLS listener.
        tls: Option<TlsFacts>,
        /// Recorded from its start.
        sampled: bool,
    },
    /// A connection an earlier generation held, handed to this instance.
    Adopted {
        /// Its handle.
        conn: Conn,
        /// The peer's address.
        peer: Option<String>,
        /// TLS facts, from a TLS listener.
        tls: Option<TlsFacts>,
    },
    /// An outbound connection completed.
    Connected {
        /// Its handle.
        conn: Conn,
    },
    /// Bytes read from the peer and given to the instance.
    Input {
        /// The connection.
        conn: Conn,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The peer's end-of-stream, given to the instance.
    Eof {
        /// The connection.
        conn: Conn,
    },
    /// The connection failed (reset): the instance heard `hangup`.
    Hangup {
        /// The connection.
        conn: Conn,
    },
    /// The host ended the connection (a drain timeout, a trap's clean-up, the
    /// shutdown): what it holds after this is not comparable.
    HostClosed {
        /// The connection.
        conn: Conn,
    },
    /// The instance's timer fired.
    Timer {
        /// The timer's id.
        id: u64,
    },
    /// The wall clock, read: nanoseconds since the Unix epoch.
    Wall {
        /// The reading.
        nanos: u64,
    },
    /// The monotonic clock, read: nanoseconds.
    Monotonic {
        /// The reading.
        nanos: u64,
    },
    /// Random bytes the instance was given (secure and insecure alike, in order).
    Random {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The seed `wasi:random/insecure-seed` answers (once, at the start).
    Seed {
        /// The seed.
        seed: u128,
    },
    /// What a `connect` answered.
    Connect {
        /// The new handle, or the error.
        result: Result<Conn, IoError>,
    },
    /// A store operation the instance made, with its id.
    StoreOp {
        /// The operation's id.
        id: u64,
        /// The operation.
        op: Op,
    },
    /// A store answer the instance was given.
    StoreAnswer {
        /// The operation's id.
        id: u64,
        /// The answer.
        outcome: Outcome,
    },
    /// A message the instance published.
    Published {
        /// The topic.
        topic: String,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A message the instance heard.
    Message {
        /// The topic.
        topic: String,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Bytes the instance wrote that the host accepted.
    Output {
        /// The connection.
        conn: Conn,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The instance closed the connection.
    Closed {
        /// The connection.
        conn: Conn,
    },
    /// The host is shutting down: the instance heard `shutdown`.
    Shutdown,
    /// The call trapped: the instance ends here.
    Trap {
        /// The cause, as the log words it.
        message: String,
        /// The guest's backtrace, as the log prints it.
        backtrace: String,
        /// It ran past `--event-timeout`: a wall-clock deadline.
        deadline: bool,
    },
}

/// How a tape ended.
#[derive(Clone, Debug, PartialEq)]
pub struct End {
    /// Every turn of the instance while it was recorded is on the tape.
    pub complete: bool,
    /// Why it ended (the instance ended, trapped, the writer fell behind...).
    pub why: String,
}

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
        let mut reader = Reader {
            bytes: &body[5..],
            at: 0,
        };
        let frame = match tag {
            TAG_HEADER => reader.header().map(Frame::Header),
            TAG_SNAPSHOT => reader.bytes().map(|b| Frame::Snapshot(b.to_vec())),
            TAG_TURN => reader.turn().map(Frame::Turn),
            TAG_END => reader.end().map(Frame::End),
            other => Err(format!("unknown frame kind {other}")),
        }
        .and_then(|frame| match reader.at == reader.bytes.len() {
            true => Ok(frame),
            false => Err("bytes left over in a frame".to_string()),
        })
        .map_err(|why| format!("damaged at byte {}: {why}", self.at))?;
        self.at += 9 + len;
        Ok(Some(frame))
    }
}

// Encoding.

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
    }
}

fn put_opt_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
    }
}

fn put_header(out: &mut Vec<u8>, header: &Header) {
    put_str(out, &header.guest);
    out.extend_from_slice(&header.digest);
    put_str(out, &header.contract);
    put_str(out, &header.host);
    put_varint(out, u64::from(header.worker));
    put_varint(out, header.owner);
    out.push(u8::from(header.shared));
    put_varint(out, header.started_ms);
    put_varint(out, u64::from(header.sample_percent));
    let limits = &header.limits;
    put_varint(out, limits.event_timeout_us);
    match limits.fuel {
        None => out.push(0),
        Some(fuel) => {
            out.push(1);
            put_varint(out, fuel);
        }
    }
    put_varint(out, limits.max_memory);
    put_varint(out, u64::from(limits.max_timers));
    put_varint(out, header.env.len() as u64);
    for (key, value) in &header.env {
        put_str(out, key);
        put_str(out, value);
    }
}

fn put_turn(out: &mut Vec<u8>, turn: &Turn) {
    put_varint(out, turn.at_us);
    put_varint(out, turn.items.len() as u64);
    for item in &turn.items {
        put_item(out, item);
    }
}

/// A turn's payload: when, how many items, and the items as [`put_item`] and
/// [`put_bytes_item`] encoded them.
pub fn turn_payload(at_us: u64, items: u64, encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.len() + 20);
    put_varint(&mut out, at_us);
    put_varint(&mut out, items);
    out.extend_from_slice(encoded);
    out
}

/// Appends an [`Item::Input`] (`output` false) or [`Item::Output`] straight from
/// the bytes, with no copy into an `Item` first.
pub fn put_bytes_item(out: &mut Vec<u8>, output: bool, conn: Conn, bytes: &[u8]) {
    put_conn(out, if output { 17 } else { 3 }, conn);
    put_bytes(out, bytes);
}

/// Appends one item's encoding to a turn's payload (the recorder builds turns this
/// way, with no `Item` in between).
pub fn put_item(out: &mut Vec<u8>, item: &Item) {
    match item {
        Item::Accepted {
            conn,
            peer,
            tls,
            sampled,
        } => {
            out.push(0);
            put_varint(out, *conn);
            put_opt_str(out, peer.as_deref());
            put_tls(out, tls.as_ref());
            out.push(u8::from(*sampled));
        }
        Item::Adopted { conn, peer, tls } => {
            out.push(1);
            put_varint(out, *conn);
            put_opt_str(out, peer.as_deref());
            put_tls(out, tls.as_ref());
        }
        Item::Connected { conn } => put_conn(out, 2, *conn),
        Item::Input { conn, bytes } => {
            put_conn(out, 3, *conn);
            put_bytes(out, bytes);
        }
        Item::Eof { conn } => put_conn(out, 4, *conn),
        Item::Hangup { conn } => put_conn(out, 5, *conn),
        Item::HostClosed { conn } => put_conn(out, 6, *conn),
        Item::Timer { id } => put_conn(out, 7, *id),
        Item::Wall { nanos } => put_conn(out, 8, *nanos),
        Item::Monotonic { nanos } => put_conn(out, 9, *nanos),
        Item::Random { bytes } => {
            out.push(10);
            put_bytes(out, bytes);
        }
        Item::Seed { seed } => {
            out.push(11);
            out.extend_from_slice(&seed.to_le_bytes());
        }
        Item::Connect { result } => {
            out.push(12);
            match result {
                Ok(conn) => {
                    out.push(0);
                    put_varint(out, *conn);
                }
                Err(error) => {
                    out.push(1);
                    out.push(io_error_code(*error));
                }
            }
        }
        Item::StoreOp { id, op } => {
            put_conn(out, 13, *id);
            put_op(out, op);
        }
        Item::StoreAnswer { id, outcome } => {
            put_conn(out, 14, *id);
            put_outcome(out, outcome);
        }
        Item::Published { topic, bytes } => {
            out.push(15);
            put_str(out, topic);
            put_bytes(out, bytes);
        }
        Item::Message { topic, bytes } => {
            out.push(16);
            put_str(out, topic);
            put_bytes(out, bytes);
        }
        Item::Output { conn, bytes } => {
            put_conn(out, 17, *conn);
            put_bytes(out, bytes);
        }
        Item::Closed { conn } => put_conn(out, 18, *conn),
        Item::Trap {
            message,
            backtrace,
            deadline,
        } => {
            out.push(19);
            put_str(out, message);
            put_str(out, backtrace);
            out.push(u8::from(*deadline));
        }
        Item::Shutdown => out.push(20),
    }
}

fn put_tls(out: &mut Vec<u8>, tls: Option<&TlsFacts>) {
    match tls {
        None => out.push(0),
        Some(tls) => {
            out.push(1);
            put_str(out, &tls.version);
            put_opt_str(out, tls.server_name.as_deref());
            put_opt_str(out, tls.alpn.as_deref());
        }
    }
}

fn put_conn(out: &mut Vec<u8>, tag: u8, n: u64) {
    out.push(tag);
    put_varint(out, n);
}

fn put_key(out: &mut Vec<u8>, key: &Key) {
    put_str(out, &key.bucket);
    put_str(out, &key.key);
}

fn put_op(out: &mut Vec<u8>, op: &Op) {
    out.push(op.index());
    match op {
        Op::Get(key) | Op::Delete(key) | Op::Exists(key) => put_key(out, key),
        Op::Set(key, value) => {
            put_key(out, key);
            put_bytes(out, value);
        }
        Op::Increment(key, delta) => {
            put_key(out, key);
            out.extend_from_slice(&delta.to_le_bytes());
        }
        Op::CompareAndSwap(key, old, new) => {
            put_key(out, key);
            put_opt_bytes(out, old.as_deref());
            put_bytes(out, new);
        }
        Op::ListKeys(bucket, cursor) => {
            put_str(out, bucket);
            put_opt_str(out, cursor.as_deref());
        }
        Op::GetMany(bucket, keys) | Op::DeleteMany(bucket, keys) => {
            put_str(out, bucket);
            put_varint(out, keys.len() as u64);
            for key in keys {
                put_str(out, key);
            }
        }
        Op::SetMany(bucket, pairs) => {
            put_str(out, bucket);
            put_varint(out, pairs.len() as u64);
            for (key, value) in pairs {
                put_str(out, key);
                put_bytes(out, value);
            }
        }
    }
}

fn put_outcome(out: &mut Vec<u8>, outcome: &Outcome) {
    match outcome {
        Outcome::Value(value) => {
            out.push(0);
            put_bytes(out, value);
        }
        Outcome::NotFound => out.push(1),
        Outcome::Done => out.push(2),
        Outcome::Exists(yes) => {
            out.push(3);
            out.push(u8::from(*yes));
        }
        Outcome::Counter(n) => {
            out.push(4);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Outcome::Swapped(yes) => {
            out.push(5);
            out.push(u8::from(*yes));
        }
        Outcome::Keys(keys, more) => {
            out.push(6);
            put_varint(out, keys.len() as u64);
            for key in keys {
                put_str(out, key);
            }
            out.push(u8::from(*more));
        }
        Outcome::Values(values) => {
            out.push(7);
            put_varint(out, values.len() as u64);
            for value in values {
                put_opt_bytes(out, value.as_deref());
            }
        }
        Outcome::Failed(error) => {
            out.push(8);
            out.push(error.index() as u8);
        }
    }
}

fn io_error_code(error: IoError) -> u8 {
    IO_ERRORS.iter().position(|e| *e == error).unwrap_or(0) as u8
}

const IO_ERRORS: [IoError; 8] = [
    IoError::Closed,
    IoError::Reset,
    IoError::UnknownConn,
    IoError::NotPermitted,
    IoError::LimitExceeded,
    IoError::Refused,
    IoError::Unreachable,
    IoError::InvalidAddress,
];

// Decoding.

type Parsed<T> = Result<T, String>;

/// A frame's payload, read field by field; every length is checked against what is
/// left before anything is allocated.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Parsed<u8> {
        let byte = *self.bytes.get(self.at).ok_or("a field cut short")?;
        self.at += 1;
        Ok(byte)
    }

    fn flag(&mut self) -> Parsed<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("a flag of {other}")),
        }
    }

    fn fixed<const N: usize>(&mut self) -> Parsed<[u8; N]> {
        let end = self.at.checked_add(N).ok_or("a field cut short")?;
        let bytes = self.bytes.get(self.at..end).ok_or("a field cut short")?;
        self.at = end;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn varint(&mut self) -> Parsed<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("a number longer than 64 bits".into())
    }

    fn count(&mut self) -> Parsed<usize> {
        let n = self.varint()?;
        // Every counted thing takes at least a byte.
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(format!("a count of {n}, more than the frame holds"));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Parsed<&'a [u8]> {
        let len = self.count()?;
        let bytes = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(bytes)
    }

    fn string(&mut self) -> Parsed<String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "text that is not UTF-8".into())
    }

    fn opt_string(&mut self) -> Parsed<Option<String>> {
        match self.flag()? {
            false => Ok(None),
            true => self.string().map(Some),
        }
    }

    fn opt_bytes(&mut self) -> Parsed<Option<Vec<u8>>> {
        match self.flag()? {
            false => Ok(None),
            true => self.bytes().map(|b| Some(b.to_vec())),
        }
    }

    fn u32(&mut self) -> Parsed<u32> {
        u32::try_from(self.varint()?).map_err(|_| "a number past 32 bits".into())
    }

    fn header(&mut self) -> Parsed<Header> {
        Ok(Header {
            guest: self.string()?,
            digest: self.fixed()?,
            contract: self.string()?,
            host: self.string()?,
            worker: self.u32()?,
            owner: self.varint()?,
            shared: self.flag()?,
            started_ms: self.varint()?,
            sample_percent: self.u32()?,
            limits: TapeLimits {
                event_timeout_us: self.varint()?,
                fuel: match self.flag()? {
                    false => None,
                    true => Some(self.varint()?),
                },
                max_memory: self.varint()?,
                max_timers: self.u32()?,
            },
            env: {
                let count = self.count()?;
                (0..count)
                    .map(|_| Ok((self.string()?, self.string()?)))
                    .collect::<Parsed<_>>()?
            },
        })
    }

    fn end(&mut self) -> Parsed<End> {
        Ok(End {
            complete: self.flag()?,
            why: self.string()?,
        })
    }

    fn turn(&mut self) -> Parsed<Turn> {
        let at_us = self.varint()?;
        let count = self.count()?;
        if count > MAX_ITEMS {
            return Err(format!("a turn of {count} items, more than {MAX_ITEMS}"));
        }
        // Not `count` at once: an item takes a few bytes of the frame and far more
        // in memory.
        let mut items = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            items.push(self.item()?);
        }
        Ok(Turn { at_us, items })
    }

    fn tls(&mut self) -> Parsed<Option<TlsFacts>> {
        Ok(match self.flag()? {
            false => None,
            true => Some(TlsFacts {
                version: self.string()?,
                server_name: self.opt_string()?,
                alpn: self.opt_string()?,
            }),
        })
    }

    fn item(&mut self) -> Parsed<Item> {
        Ok(match self.u8()? {
            0 => Item::Accepted {
                conn: self.varint()?,
                peer: self.opt_string()?,
                tls: self.tls()?,
                sampled: self.flag()?,
            },
            1 => Item::Adopted {
                conn: self.varint()?,
                peer: self.opt_string()?,
                tls: self.tls()?,
            },
            2 => Item::Connected {
                conn: self.varint()?,
            },
            3 => Item::Input {
                conn: self.varint()?,
                bytes: self.bytes()?.to_vec(),
            },
            4 => Item::Eof {
                conn: self.varint()?,
            },
            5 => Item::Hangup {
                conn: self.varint()?,
            },
            6 => Item::HostClosed {
                conn: self.varint()?,
            },
            7 => Item::Timer { id: self.varint()? },
            8 => Item::Wall {
                nanos: self.varint()?,
            },
            9 => Item::Monotonic {
                nanos: self.varint()?,
            },
            10 => Item::Random {
                bytes: self.bytes()?.to_vec(),
            },
            11 => Item::Seed {
                seed: u128::from_le_bytes(self.fixed()?),
            },
            12 => Item::Connect {
                result: match self.flag()? {
                    false => Ok(self.varint()?),
                    true => {
                        let code = self.u8()?;
                        Err(*IO_ERRORS
                            .get(usize::from(code))
                            .ok_or(format!("an io error of {code}"))?)
                    }
                },
            },
            13 => Item::StoreOp {
                id: self.varint()?,
                op: self.op()?,
            },
            14 => Item::StoreAnswer {
                id: self.varint()?,
                outcome: self.outcome()?,
            },
            15 => Item::Published {
                topic: self.string()?,
                bytes: self.bytes()?.to_vec(),
            },
            16 => Item::Message {
                topic: self.string()?,
                bytes: self.bytes()?.to_vec(),
            },
            17 => Item::Output {
                conn: self.varint()?,
                bytes: self.bytes()?.to_vec(),
            },
            18 => Item::Closed {
                conn: self.varint()?,
            },
            19 => Item::Trap {
                message: self.string()?,
                backtrace: self.string()?,
                deadline: self.flag()?,
            },
            20 => Item::Shutdown,
            other => return Err(format!("an item of unknown kind {other}")),
        })
    }

    fn key(&mut self) -> Parsed<Key> {
        Ok(Key {
            bucket: self.string()?,
            key: self.string()?,
        })
    }

    fn strings(&mut self) -> Parsed<Vec<String>> {
        let count = self.count()?;
        (0..count).map(|_| self.string()).collect()
    }

    fn op(&mut self) -> Parsed<Op> {
        Ok(match self.u8()? {
            0 => Op::Get(self.key()?),
            1 => Op::Set(self.key()?, self.bytes()?.to_vec()),
            2 => Op::Delete(self.key()?),
            3 => Op::Exists(self.key()?),
            4 => Op::Increment(self.key()?, i64::from_le_bytes(self.fixed()?)),
            5 => Op::CompareAndSwap(self.key()?, self.opt_bytes()?, self.bytes()?.to_vec()),
            6 => Op::ListKeys(self.string()?, self.opt_string()?),
            7 => Op::GetMany(self.string()?, self.strings()?),
            8 => {
                let bucket = self.string()?;
                let count = self.count()?;
                let pairs = (0..count)
                    .map(|_| Ok((self.string()?, self.bytes()?.to_vec())))
                    .collect::<Parsed<_>>()?;
                Op::SetMany(bucket, pairs)
            }
            9 => Op::DeleteMany(self.string()?, self.strings()?),
            other => return Err(format!("a store operation of unknown kind {other}")),
        })
    }

    fn outcome(&mut self) -> Parsed<Outcome> {
        Ok(match self.u8()? {
            0 => Outcome::Value(self.bytes()?.to_vec()),
            1 => Outcome::NotFound,
            2 => Outcome::Done,
            3 => Outcome::Exists(self.flag()?),
            4 => Outcome::Counter(i64::from_le_bytes(self.fixed()?)),
            5 => Outcome::Swapped(self.flag()?),
            6 => Outcome::Keys(self.strings()?, self.flag()?),
            7 => {
                let count = self.count()?;
                let values = (0..count)
                    .map(|_| self.opt_bytes())
                    .collect::<Parsed<_>>()?;
                Outcome::Values(values)
            }
            8 => {
                let code = self.u8()?;
                Outcome::Failed(
                    *StoreError::ALL
                        .get(usize::from(code))
                        .ok_or(format!("a store error of {code}"))?,
                )
            }
            other => return Err(format!("a store outcome of unknown kind {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
