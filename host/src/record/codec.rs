//! The tape format's fields as bytes: LEB128 varints, length-prefixed byte strings,
//! and each record ([`Header`], [`Turn`], [`Item`], a store [`Op`] and [`Outcome`])
//! written and read field by field. `tape.rs` frames them; a [`Reader`] checks every
//! length against what its frame holds before it allocates anything.

use super::items::{End, Header, Item, TapeLimits, TlsFacts, Turn};
use crate::shared::wit::{Conn, IO_ERRORS, IoError};
use crate::store::{Key, Op, Outcome, StoreError};

/// The most items a reader takes in one turn: each costs about a hundred bytes of
/// memory however few it takes on the tape, so a crafted count is refused here.
pub const MAX_ITEMS: usize = 1 << 20;

pub(super) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(super) fn put_str(out: &mut Vec<u8>, text: &str) {
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

pub(super) fn put_header(out: &mut Vec<u8>, header: &Header) {
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

pub(super) fn put_turn(out: &mut Vec<u8>, turn: &Turn) {
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

// Decoding.

type Parsed<T> = Result<T, String>;

/// A frame's payload, read field by field; every length is checked against what is
/// left before anything is allocated.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader of one frame's payload.
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Whether every byte of the payload was read.
    pub(super) fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

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

    pub(super) fn bytes(&mut self) -> Parsed<&'a [u8]> {
        let len = self.count()?;
        let bytes = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(bytes)
    }

    pub(super) fn string(&mut self) -> Parsed<String> {
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

    pub(super) fn header(&mut self) -> Parsed<Header> {
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

    pub(super) fn end(&mut self) -> Parsed<End> {
        Ok(End {
            complete: self.flag()?,
            why: self.string()?,
        })
    }

    pub(super) fn turn(&mut self) -> Parsed<Turn> {
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
