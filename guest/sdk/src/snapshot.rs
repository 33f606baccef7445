//! [`SnapshotWriter`] and [`SnapshotReader`]: a small, checked encoding for the
//! state a guest hands to its next generation at a hot swap.

use std::fmt;

use crate::Conn;

/// Builds the bytes a [`Handler::snapshot`](crate::Handler::snapshot) returns.
///
/// Fields are written in order with no tags: integers little-endian, byte
/// strings with a `u64` length in front. A snapshot should start with a version
/// byte of its own, so that a later generation can tell which layout it got and
/// refuse one it does not know.
///
/// ```
/// use sandsock_sdk::{SnapshotReader, SnapshotWriter};
///
/// let mut w = SnapshotWriter::new();
/// w.u8(1); // the layout's version
/// w.u64(2); // how many entries follow
/// for (key, value) in [(&b"a"[..], &b"1"[..]), (b"b", b"2")] {
///     w.bytes(key);
///     w.bytes(value);
/// }
/// let snapshot = w.into_bytes();
///
/// let mut r = SnapshotReader::new(&snapshot);
/// assert_eq!(r.u8(), Ok(1));
/// let mut entries = Vec::new();
/// for _ in 0..r.count().unwrap() {
///     entries.push((r.bytes().unwrap(), r.bytes().unwrap()));
/// }
/// assert!(r.finish().is_ok());
/// assert_eq!(entries, [(&b"a"[..], &b"1"[..]), (b"b", b"2")]);
/// ```
#[derive(Debug, Default)]
pub struct SnapshotWriter {
    buf: Vec<u8>,
}

impl SnapshotWriter {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one byte.
    pub fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    /// Appends a `u64`, little-endian.
    pub fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// Appends a connection's handle (a `u64`), to be read back with
    /// [`SnapshotReader::conn`]. The host keeps handles across a handoff, so a
    /// connection's state can be keyed by its handle in a snapshot.
    pub fn conn(&mut self, conn: Conn) {
        self.u64(conn.raw());
    }

    /// Appends a byte string: its length as a `u64`, then the bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        // A slice is never longer than `isize::MAX`, so the length fits a `u64`.
        self.u64(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The snapshot.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads a snapshot written with [`SnapshotWriter`], checking every field.
///
/// A snapshot comes from another instance, possibly of another build of the
/// guest, so it is input like any other: each read answers [`BadSnapshot`]
/// instead of panicking when the bytes run out or a length does not fit, and no
/// read allocates. A [`restore`](crate::Handler::restore) that meets an error
/// should log it and keep its fresh state rather than half of the old one: decode
/// everything first, then apply it.
#[derive(Clone, Debug)]
pub struct SnapshotReader<'a> {
    rest: &'a [u8],
}

impl<'a> SnapshotReader<'a> {
    /// A reader over `bytes`, from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, BadSnapshot> {
        let [byte] = self.take_array()?;
        Ok(byte)
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, BadSnapshot> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// Reads a connection's handle written with [`SnapshotWriter::conn`].
    pub fn conn(&mut self) -> Result<Conn, BadSnapshot> {
        self.u64().map(Conn::from_raw)
    }

    /// Reads a byte string written with [`SnapshotWriter::bytes`], without copying.
    pub fn bytes(&mut self) -> Result<&'a [u8], BadSnapshot> {
        let len = self.u64()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.rest.len())
            .ok_or(BadSnapshot::new("a length runs past the end"))?;
        Ok(self.take(len))
    }

    /// Reads a `u64` count of entries that follow, each at least one byte long.
    ///
    /// The count is checked against the bytes left, so a loop over it is bounded
    /// by the snapshot's size whatever the count says.
    pub fn count(&mut self) -> Result<usize, BadSnapshot> {
        let count = self.u64()?;
        usize::try_from(count)
            .ok()
            .filter(|&count| count <= self.rest.len())
            .ok_or(BadSnapshot::new("a count is larger than what follows"))
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Checks that everything was read: trailing bytes mean the snapshot has a
    /// layout this reader does not know.
    pub fn finish(self) -> Result<(), BadSnapshot> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(BadSnapshot::new("bytes left over at the end"))
        }
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], BadSnapshot> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(BadSnapshot::new("it ends in the middle of a field"))?;
        self.rest = rest;
        Ok(*head)
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        head
    }
}

/// A snapshot could not be read: truncated, inconsistent, or of a layout (or
/// version) this build does not know.
///
/// Not worth a trap: the new generation logs it and starts without the old
/// state, and the connections handed over still work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadSnapshot(&'static str);

impl BadSnapshot {
    /// An error saying what is wrong, for the log line.
    pub const fn new(reason: &'static str) -> Self {
        Self(reason)
    }

    /// What is wrong.
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for BadSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed snapshot: {}", self.0)
    }
}

impl std::error::Error for BadSnapshot {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let mut w = SnapshotWriter::new();
        w.u8(7);
        w.u64(u64::MAX - 1);
        w.bytes(b"");
        w.bytes(b"hello");
        w.conn(Conn::from_raw(42));
        let bytes = w.into_bytes();
        let mut r = SnapshotReader::new(&bytes);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u64(), Ok(u64::MAX - 1));
        assert_eq!(r.bytes(), Ok(&b""[..]));
        assert_eq!(r.bytes(), Ok(&b"hello"[..]));
        assert_eq!(r.conn(), Ok(Conn::from_raw(42)));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut w = SnapshotWriter::new();
        w.u64(3);
        w.bytes(b"abc");
        let bytes = w.into_bytes();
        for end in 0..bytes.len() {
            let mut r = SnapshotReader::new(&bytes[..end]);
            let read = r.u64().and_then(|_| r.bytes());
            assert!(read.is_err(), "truncated at {end}");
        }
    }

    #[test]
    fn lengths_and_counts_past_the_end_are_refused() {
        let mut w = SnapshotWriter::new();
        w.u64(u64::MAX);
        w.u8(0);
        let bytes = w.into_bytes();
        assert!(SnapshotReader::new(&bytes).bytes().is_err());
        assert!(SnapshotReader::new(&bytes).count().is_err());

        let mut w = SnapshotWriter::new();
        w.u64(2);
        w.u8(0);
        w.u8(0);
        let bytes = w.into_bytes();
        assert_eq!(SnapshotReader::new(&bytes).count(), Ok(2));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut r = SnapshotReader::new(&[1, 2]);
        assert_eq!(r.u8(), Ok(1));
        assert!(r.clone().finish().is_err());
        assert_eq!(r.remaining(), 1);
    }
}
