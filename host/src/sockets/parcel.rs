//! [`Parcel`]: one worker's connections as a binary upgrade carries them to the new
//! process, and the guests' snapshots that go with them.
//!
//! The descriptors travel beside it (`SCM_RIGHTS`, in the order of
//! [`Parcel::conns`]); the parcel says what the host knew of each: its handle (the
//! guest's snapshot refers to it), its phase and flags, the bytes the guest wrote that
//! the socket has not taken, the deadline of a connect or a close. Plain TCP only: a
//! TLS session cannot leave its process. On epoll the kernel keeps what the peer sent
//! and the host has not read (each call's reads happen inside that call); on the
//! ring (`--io uring`) the bytes received and not yet read by the guest are out of the
//! socket, and travel in the parcel (protocol 3).
//!
//! Encoding: a `u32` length, a postcard record, then the snapshots and the unsent
//! bytes back to back (in a byte string of their own, so that megabytes are not
//! encoded byte by byte); then, if any connection has unread bytes, a `u32` length,
//! a postcard list of each connection's unread length, and those bytes. A parcel of
//! protocol 2 ends before that section: it decodes with nothing unread.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shared::wit::{Conn, IO_ERRORS, IoError};

/// One worker's connections, handed over.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Parcel {
    /// Each slot's last generation: the new table hands out none of the old
    /// handles again.
    pub generations: Vec<u64>,
    /// The old guest instances whose connections (or state) move, the one that
    /// served last at the end: each becomes a `restore` and `adopted` events.
    pub groups: Vec<Group>,
    /// The connections, in the order of the descriptors.
    pub conns: Vec<CarriedConn>,
}

/// One old guest instance's part.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Group {
    /// Its snapshot's length; the bytes are in the parcel's tail.
    snapshot_len: Option<u64>,
    /// Its snapshot (`None`: it keeps no state, or it did not give one).
    #[serde(skip)]
    pub snapshot: Option<Vec<u8>>,
    /// Its armed timers: its own id, and how long until each fires.
    pub timers: Vec<(u64, Duration)>,
}

impl Group {
    /// A group with this snapshot and these timers.
    pub fn new(snapshot: Option<Vec<u8>>, timers: Vec<(u64, Duration)>) -> Self {
        Self {
            snapshot_len: None,
            snapshot,
            timers,
        }
    }
}

/// What the host knew of one connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct CarriedConn {
    /// Its handle.
    pub id: Conn,
    /// Its peer.
    pub peer: SocketAddr,
    /// Its [`Group`]'s index; `None` for one the guest closed, which the host is
    /// finishing.
    pub group: Option<u32>,
    /// Where it is in its life.
    pub phase: CarriedPhase,
    /// Its readiness and the guest's interest, as [`Connection`](super::connection::Connection) holds them.
    pub flags: Flags,
    /// Its unsent bytes' length; the bytes are in the parcel's tail.
    out_len: u64,
    /// Its unsent bytes.
    #[serde(skip)]
    pub out: Vec<u8>,
    /// Bytes the host received and the guest has not read (on the ring); after the
    /// tail, in a section of their own.
    #[serde(skip)]
    pub unread: Vec<u8>,
}

impl CarriedConn {
    /// A connection's record, its unsent bytes `out`.
    pub fn new(
        id: Conn,
        peer: SocketAddr,
        group: Option<u32>,
        phase: CarriedPhase,
        flags: Flags,
        out: Vec<u8>,
    ) -> Self {
        Self {
            id,
            peer,
            group,
            phase,
            flags,
            out_len: 0,
            out,
            unread: Vec::new(),
        }
    }
}

/// A connection's phase, its deadline as time left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CarriedPhase {
    /// The guest owns it.
    Open,
    /// An outbound connect under way.
    Connecting(Duration),
    /// Failed; the guest has still to hear why (an [`IoError`] as [`error_code`] numbers it).
    Failed(u8),
    /// Closed by the guest; the host sends what is left.
    Closing(Duration),
}

/// A connection's flags (see `Connection`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs, clippy::struct_excessive_bools)]
pub struct Flags {
    pub readable: bool,
    pub peer_closed: bool,
    pub eof_seen: bool,
    pub writable: bool,
    pub want_read: bool,
    pub want_write: bool,
    pub notify_writable: bool,
    pub write_shut: bool,
    pub fin_sent: bool,
    pub announce_connected: bool,
    pub heard: bool,
}

impl Parcel {
    /// The parcel as bytes: the bytes it holds are copied once, into them.
    pub fn encode(mut self) -> Result<Vec<u8>, String> {
        let mut tail = 0;
        for group in &mut self.groups {
            group.snapshot_len = group.snapshot.as_ref().map(|s| s.len() as u64);
            tail += group.snapshot.as_ref().map_or(0, Vec::len);
        }
        for conn in &mut self.conns {
            conn.out_len = conn.out.len() as u64;
            tail += conn.out.len();
        }
        let record = postcard::to_allocvec(&self).map_err(|e| e.to_string())?;
        let len = u32::try_from(record.len()).map_err(|_| "a parcel past 4 GiB".to_string())?;
        let mut bytes = Vec::with_capacity(4 + record.len() + tail);
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&record);
        for snapshot in self.groups.iter().filter_map(|g| g.snapshot.as_deref()) {
            bytes.extend_from_slice(snapshot);
        }
        for conn in &self.conns {
            bytes.extend_from_slice(&conn.out);
        }
        if self.conns.iter().any(|conn| !conn.unread.is_empty()) {
            let lens: Vec<u64> = self.conns.iter().map(|c| c.unread.len() as u64).collect();
            let record = postcard::to_allocvec(&lens).map_err(|e| e.to_string())?;
            let len = u32::try_from(record.len()).map_err(|_| "a parcel past 4 GiB".to_string())?;
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&record);
            for conn in &self.conns {
                bytes.extend_from_slice(&conn.unread);
            }
        }
        Ok(bytes)
    }

    /// A parcel from [`Parcel::encode`]'s bytes; an error names what does not fit.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (record, mut tail) = split_record(bytes)?;
        let mut parcel: Self = postcard::from_bytes(record).map_err(|e| e.to_string())?;
        let mut take = |len: u64| -> Result<Vec<u8>, String> {
            let len = usize::try_from(len).map_err(|_| "a length past memory")?;
            if tail.len() < len {
                return Err(format!("{len} bytes announced, {} left", tail.len()));
            }
            let (bytes, rest) = tail.split_at(len);
            tail = rest;
            Ok(bytes.to_vec())
        };
        for group in &mut parcel.groups {
            group.snapshot = group.snapshot_len.map(&mut take).transpose()?;
        }
        for conn in &mut parcel.conns {
            conn.out = take(conn.out_len)?;
            if conn
                .group
                .is_some_and(|g| g as usize >= parcel.groups.len())
            {
                return Err(format!("connection {} in a group not sent", conn.id));
            }
        }
        if !tail.is_empty() {
            let (record, rest) = split_record(tail)?;
            let lens: Vec<u64> = postcard::from_bytes(record).map_err(|e| e.to_string())?;
            if lens.len() != parcel.conns.len() {
                return Err(format!(
                    "unread bytes for {} connections of {}",
                    lens.len(),
                    parcel.conns.len()
                ));
            }
            tail = rest;
            for (conn, len) in parcel.conns.iter_mut().zip(lens) {
                let len = usize::try_from(len).map_err(|_| "a length past memory")?;
                if tail.len() < len {
                    return Err(format!("{len} bytes announced, {} left", tail.len()));
                }
                let (bytes, rest) = tail.split_at(len);
                conn.unread = bytes.to_vec();
                tail = rest;
            }
            if !tail.is_empty() {
                return Err(format!("{} bytes past the end", tail.len()));
            }
        }
        Ok(parcel)
    }
}

/// A `u32` length and that many bytes (a postcard record), and what follows them.
fn split_record(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or("a parcel cut short")?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err("a parcel cut short".into());
    }
    Ok(rest.split_at(len))
}

/// An [`IoError`]'s number in a parcel.
pub fn error_code(error: IoError) -> u8 {
    IO_ERRORS.iter().position(|&e| e == error).unwrap_or(1) as u8
}

/// The [`IoError`] numbered `code` (a reset for a number not known).
pub fn error_of(code: u8) -> IoError {
    IO_ERRORS
        .get(code as usize)
        .copied()
        .unwrap_or(IoError::Reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Parcel {
        Parcel {
            generations: vec![3, 0, 5],
            groups: vec![
                Group::new(None, vec![]),
                Group::new(
                    Some(b"state".to_vec()),
                    vec![(7, Duration::from_millis(250))],
                ),
            ],
            conns: vec![
                CarriedConn::new(
                    3 << 20,
                    "127.0.0.1:9".parse().unwrap(),
                    Some(1),
                    CarriedPhase::Open,
                    Flags {
                        readable: true,
                        ..Flags::default()
                    },
                    vec![1; 100_000],
                ),
                CarriedConn::new(
                    5 << 20 | 2,
                    "[::1]:80".parse().unwrap(),
                    None,
                    CarriedPhase::Closing(Duration::from_secs(2)),
                    Flags::default(),
                    Vec::new(),
                ),
            ],
        }
    }

    #[test]
    fn a_parcel_comes_back_as_it_went() {
        let bytes = sample().encode().unwrap();
        let back = Parcel::decode(&bytes).unwrap();
        assert_eq!(back.generations, [3, 0, 5]);
        assert_eq!(back.groups[1].snapshot.as_deref(), Some(&b"state"[..]));
        assert_eq!(back.groups[0].snapshot, None);
        assert_eq!(back.groups[1].timers, [(7, Duration::from_millis(250))]);
        assert_eq!(back.conns[0].out, vec![1; 100_000]);
        assert!(back.conns[0].flags.readable);
        assert_eq!(
            back.conns[1].phase,
            CarriedPhase::Closing(Duration::from_secs(2))
        );
        assert_eq!(back.conns[1].peer, "[::1]:80".parse().unwrap());
    }

    #[test]
    fn bytes_received_and_unread_come_back_with_their_connection() {
        let mut parcel = sample();
        parcel.conns[1].unread = b"GET / HTTP/1.1\r\n".to_vec();
        let back = Parcel::decode(&parcel.encode().unwrap()).unwrap();
        assert!(back.conns[0].unread.is_empty());
        assert_eq!(back.conns[1].unread, b"GET / HTTP/1.1\r\n");
        assert_eq!(
            back.conns[0].out,
            vec![1; 100_000],
            "the tail before it intact"
        );
    }

    #[test]
    fn a_damaged_parcel_is_an_error_not_a_panic() {
        let mut parcel = sample();
        parcel.conns[0].unread = b"unread".to_vec();
        let bytes = parcel.encode().unwrap();
        for cut in [0, 3, 4, 20, bytes.len() - 1] {
            assert!(Parcel::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Parcel::decode(&longer).is_err(), "a byte too many");
        for (i, flip) in (0..bytes.len())
            .step_by(7)
            .zip([0xff, 0x80, 0x01].into_iter().cycle())
        {
            let mut damaged = bytes.clone();
            damaged[i] ^= flip;
            let _ = Parcel::decode(&damaged);
        }
    }

    #[test]
    fn every_error_has_its_number() {
        for error in IO_ERRORS {
            assert_eq!(error_of(error_code(error)), error);
        }
    }
}
