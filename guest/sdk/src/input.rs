//! Input that has arrived but is not complete yet, per connection: [`LineBuffers`]
//! for line protocols, [`InputBuffers`] for anything a parser consumes.
//!
//! Chunks break messages anywhere. Both types hand a parser the bytes straight from
//! the chunk when nothing is held back for the connection, and copy only an
//! unfinished tail to join it with the next chunk. Both write what they hold into a
//! hot swap's snapshot and read it back, so a message split across a `--swap
//! handoff` is completed by the next generation.

use std::fmt;

use crate::{BadSnapshot, Conn, ConnMap, SnapshotReader, SnapshotWriter};

/// A line was longer than the limit given to [`LineBuffers::new`].
///
/// The stream cannot be resynchronised (where would the next line start?), so the
/// caller answers with an error and closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("line too long")
    }
}

impl std::error::Error for LineTooLong {}

/// Splits each connection's chunks into `\n`-terminated lines, at most `max_line`
/// bytes each (not counting the `\n`).
///
/// A line longer than the limit is an error rather than a buffer that grows with
/// whatever a peer sends.
///
/// ```
/// use sandsock_sdk::{Conn, LineBuffers};
///
/// let mut lines = LineBuffers::new(1024);
/// let conn = Conn::from_raw(1);
/// let mut seen = Vec::new();
/// lines.feed(conn, b"GET a\nSET b", |line| seen.push(line.to_vec())).unwrap();
/// lines.feed(conn, b" 1\n", |line| seen.push(line.to_vec())).unwrap();
/// assert_eq!(seen, [b"GET a\n".to_vec(), b"SET b 1\n".to_vec()]);
/// ```
#[derive(Debug)]
pub struct LineBuffers {
    /// The start of each connection's line whose `\n` has not arrived; never empty.
    held: ConnMap<Vec<u8>>,
    max_line: usize,
}

impl LineBuffers {
    /// Buffers for lines of at most `max_line` bytes, not counting the `\n`.
    pub fn new(max_line: usize) -> Self {
        Self {
            held: ConnMap::default(),
            max_line,
        }
    }

    /// Feeds one chunk of `conn`'s input, calling `on_line` with each line it
    /// completes, in order, including its `\n` (use [`trim_line_end`] for the content
    /// alone).
    ///
    /// On [`LineTooLong`], the lines before the long one have been delivered and
    /// what was held for `conn` is dropped.
    pub fn feed(
        &mut self,
        conn: Conn,
        chunk: &[u8],
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        let mut rest = chunk;
        if let Some(partial) = self.held.get_mut(&conn) {
            let Some(end) = find_newline(rest) else {
                return self.hold(conn, rest);
            };
            if partial.len() + end > self.max_line {
                return self.too_long(conn);
            }
            partial.extend_from_slice(&rest[..=end]);
            on_line(partial);
            self.held.remove(&conn);
            rest = &rest[end + 1..];
        }
        while let Some(end) = find_newline(rest) {
            if end > self.max_line {
                return self.too_long(conn);
            }
            on_line(&rest[..=end]);
            rest = &rest[end + 1..];
        }
        self.hold(conn, rest)
    }

    /// The unfinished line held for `conn` (empty if none).
    pub fn held(&self, conn: Conn) -> &[u8] {
        self.held.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// Drops what is held for `conn`: call it when the connection closes.
    pub fn forget(&mut self, conn: Conn) {
        self.held.remove(&conn);
    }

    /// Writes every unfinished line into a snapshot (see [`InputBuffers::encode`]
    /// for the layout, which both share).
    pub fn encode(&self, w: &mut SnapshotWriter) {
        encode(&self.held, w);
    }

    /// Reads what [`encode`](Self::encode) wrote, for lines of at most `max_line`
    /// bytes, without applying it (see [`merge`](Self::merge)). A held line longer
    /// than `max_line`, or holding a `\n`, could not come from a `LineBuffers` and
    /// makes the snapshot bad.
    pub fn decode(r: &mut SnapshotReader<'_>, max_line: usize) -> Result<Self, BadSnapshot> {
        let held = decode(r, |bytes| {
            if bytes.len() > max_line || find_newline(bytes).is_some() {
                return Err(BadSnapshot::new("an unfinished line is not one"));
            }
            Ok(())
        })?;
        Ok(Self { held, max_line })
    }

    /// Takes over what `other` holds (a decoded snapshot); for a connection both
    /// hold something for, `other` wins.
    pub fn merge(&mut self, other: Self) {
        self.held.extend(other.held);
    }

    fn hold(&mut self, conn: Conn, tail: &[u8]) -> Result<(), LineTooLong> {
        if tail.is_empty() {
            return Ok(());
        }
        let partial = self.held.entry(conn).or_default();
        if partial.len() + tail.len() > self.max_line {
            return self.too_long(conn);
        }
        partial.extend_from_slice(tail);
        Ok(())
    }

    fn too_long(&mut self, conn: Conn) -> Result<(), LineTooLong> {
        self.held.remove(&conn);
        Err(LineTooLong)
    }
}

/// Holds each connection's unconsumed input for a parser that takes what it can.
///
/// The parser sees the connection's input as one slice (what was held back, then
/// the new chunk) and says how much of it it used up; the rest is held for the next
/// chunk. Bounding what it leaves unconsumed is the parser's job: one that never
/// consumes must refuse the input instead (an HTTP server answers `431`).
///
/// ```
/// use sandsock_sdk::{Conn, InputBuffers};
///
/// // A parser of 4-byte records: it consumes whole ones and counts them.
/// let records = |input: &[u8]| (input.len() / 4 * 4, input.len() / 4);
/// let mut input = InputBuffers::default();
/// let conn = Conn::from_raw(1);
/// assert_eq!(input.feed(conn, b"abcdef", records), 1);
/// assert_eq!(input.held(conn), b"ef");
/// assert_eq!(input.feed(conn, b"gh", records), 1);
/// assert!(input.held(conn).is_empty());
/// ```
#[derive(Debug, Default)]
pub struct InputBuffers {
    /// Each connection's unconsumed input; never empty.
    held: ConnMap<Vec<u8>>,
}

impl InputBuffers {
    /// Feeds one chunk of `conn`'s input to `parse`, which returns how many bytes
    /// it consumed and what it made of them; the rest is held for the next chunk.
    pub fn feed<T>(
        &mut self,
        conn: Conn,
        chunk: &[u8],
        parse: impl FnOnce(&[u8]) -> (usize, T),
    ) -> T {
        match self.held.remove(&conn) {
            // The common case: nothing held, parse straight from the chunk.
            None => {
                let (used, parsed) = parse(chunk);
                let rest = &chunk[used.min(chunk.len())..];
                if !rest.is_empty() {
                    self.held.insert(conn, rest.to_vec());
                }
                parsed
            }
            Some(mut input) => {
                input.extend_from_slice(chunk);
                let (used, parsed) = parse(&input);
                input.drain(..used.min(input.len()));
                if !input.is_empty() {
                    self.held.insert(conn, input);
                }
                parsed
            }
        }
    }

    /// The input held for `conn` (empty if none).
    pub fn held(&self, conn: Conn) -> &[u8] {
        self.held.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// Whether anything is held for `conn`: a message of it has begun to arrive.
    pub fn is_holding(&self, conn: Conn) -> bool {
        self.held.contains_key(&conn)
    }

    /// Drops what is held for `conn`: call it when the connection closes.
    pub fn forget(&mut self, conn: Conn) {
        self.held.remove(&conn);
    }

    /// Writes what is held into a snapshot. The layout, shared with
    /// [`LineBuffers`] (the SDK's `bytes` is a `u64` length, then the bytes):
    ///
    /// ```text
    /// count   u64     connections that follow
    /// per connection:
    ///   conn  u64     its handle
    ///   held  bytes   its unfinished input
    /// ```
    pub fn encode(&self, w: &mut SnapshotWriter) {
        encode(&self.held, w);
    }

    /// Reads what [`encode`](Self::encode) wrote, without applying it (see
    /// [`merge`](Self::merge)).
    pub fn decode(r: &mut SnapshotReader<'_>) -> Result<Self, BadSnapshot> {
        let held = decode(r, |_| Ok(()))?;
        Ok(Self { held })
    }

    /// Takes over what `other` holds (a decoded snapshot); for a connection both
    /// hold something for, `other` wins.
    pub fn merge(&mut self, other: Self) {
        self.held.extend(other.held);
    }
}

/// The content of a line from [`LineBuffers::feed`], without its `\n` or `\r\n`.
pub fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn find_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&byte| byte == b'\n')
}

fn encode(held: &ConnMap<Vec<u8>>, w: &mut SnapshotWriter) {
    w.u64(held.len() as u64);
    for (&conn, bytes) in held {
        w.conn(conn);
        w.bytes(bytes);
    }
}

fn decode(
    r: &mut SnapshotReader<'_>,
    check: impl Fn(&[u8]) -> Result<(), BadSnapshot>,
) -> Result<ConnMap<Vec<u8>>, BadSnapshot> {
    let mut held = ConnMap::default();
    for _ in 0..r.count()? {
        let conn = r.conn()?;
        let bytes = r.bytes()?;
        check(bytes)?;
        if bytes.is_empty() {
            continue;
        }
        if held.insert(conn, bytes.to_vec()).is_some() {
            return Err(BadSnapshot::new("a connection appears twice"));
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Conn = Conn::from_raw(1);
    const B: Conn = Conn::from_raw(2);

    /// The lines seen, each with its connection.
    type Seen = Vec<(Conn, Vec<u8>)>;

    fn feed_all(
        lines: &mut LineBuffers,
        chunks: &[(Conn, &[u8])],
    ) -> (Seen, Result<(), LineTooLong>) {
        let mut seen = Vec::new();
        for &(conn, chunk) in chunks {
            if let Err(error) = lines.feed(conn, chunk, |line| seen.push((conn, line.to_vec()))) {
                return (seen, Err(error));
            }
        }
        (seen, Ok(()))
    }

    #[test]
    fn joins_lines_split_across_chunks_per_connection() {
        let mut lines = LineBuffers::new(100);
        let (seen, result) = feed_all(
            &mut lines,
            &[
                (A, b"ab"),
                (B, b"x"),
                (A, b"c\nde"),
                (B, b"y\n"),
                (A, b""),
                (A, b"f\n\n"),
                (A, b"g"),
            ],
        );
        assert_eq!(result, Ok(()));
        let expected: [(Conn, &[u8]); 4] = [(A, b"abc\n"), (B, b"xy\n"), (A, b"def\n"), (A, b"\n")];
        let expected: Vec<(Conn, Vec<u8>)> =
            expected.iter().map(|&(c, l)| (c, l.to_vec())).collect();
        assert_eq!(seen, expected, "as they complete");
        assert_eq!(lines.held(A), b"g");
        assert_eq!(lines.held(B), b"");
    }

    #[test]
    fn a_line_at_the_limit_passes() {
        let mut lines = LineBuffers::new(4);
        let (seen, result) = feed_all(&mut lines, &[(A, b"ab"), (A, b"cd\n"), (A, b"wxyz\n")]);
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [(A, b"abcd\n".to_vec()), (A, b"wxyz\n".to_vec())]);
    }

    #[test]
    fn a_long_line_is_refused_after_the_earlier_lines() {
        let mut lines = LineBuffers::new(4);
        let (seen, result) = feed_all(&mut lines, &[(A, b"ok\ntoolong\nnext\n")]);
        assert_eq!(result, Err(LineTooLong));
        assert_eq!(seen, [(A, b"ok\n".to_vec())]);
    }

    #[test]
    fn a_long_unfinished_line_is_refused_without_holding_it() {
        let mut lines = LineBuffers::new(4);
        let (_, result) = feed_all(&mut lines, &[(A, b"abc"), (A, b"de")]);
        assert_eq!(result, Err(LineTooLong));
        assert_eq!(lines.held(A), b"");
        let (_, result) = feed_all(&mut LineBuffers::new(4), &[(A, b"abcdef")]);
        assert_eq!(result, Err(LineTooLong));
        let (seen, result) = feed_all(&mut LineBuffers::new(4), &[(A, b"abc"), (A, b"de\n")]);
        assert_eq!(result, Err(LineTooLong));
        assert!(seen.is_empty());
    }

    #[test]
    fn unfinished_lines_cross_a_snapshot() {
        let mut old = LineBuffers::new(10);
        let (_, result) = feed_all(&mut old, &[(A, b"a\nSET k"), (B, b"done\n")]);
        assert_eq!(result, Ok(()));
        let mut w = SnapshotWriter::new();
        old.encode(&mut w);
        let bytes = w.into_bytes();
        let mut r = SnapshotReader::new(&bytes);
        let decoded = LineBuffers::decode(&mut r, 10).expect("its own snapshot");
        assert!(r.finish().is_ok());
        let mut new = LineBuffers::new(10);
        new.merge(decoded);
        let (seen, result) = feed_all(&mut new, &[(A, b" v\n")]);
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [(A, b"SET k v\n".to_vec())]);
    }

    #[test]
    fn a_snapshot_no_line_buffer_could_hold_is_refused() {
        for (held, max_line) in [(&b"abcd"[..], 3), (b"a\nb", 10)] {
            let mut w = SnapshotWriter::new();
            w.u64(1);
            w.conn(A);
            w.bytes(held);
            let bytes = w.into_bytes();
            let decoded = LineBuffers::decode(&mut SnapshotReader::new(&bytes), max_line);
            assert!(decoded.is_err(), "{held:?} for lines of {max_line}");
        }
        let mut good = SnapshotWriter::new();
        LineBuffers::new(3).encode(&mut good);
        let bytes = good.into_bytes();
        for end in 0..bytes.len() {
            let truncated = LineBuffers::decode(&mut SnapshotReader::new(&bytes[..end]), 3);
            assert!(truncated.is_err(), "truncated at {end}");
        }
    }

    #[test]
    fn input_is_parsed_from_the_chunk_and_the_rest_held() {
        // Whole 3-byte records only.
        let records = |input: &[u8]| (input.len() / 3 * 3, input.len() / 3);
        let mut input = InputBuffers::default();
        assert_eq!(input.feed(A, b"abcdefgh", records), 2);
        assert!(input.is_holding(A));
        assert_eq!(input.feed(B, b"xyz", records), 1);
        assert!(!input.is_holding(B), "nothing left over");
        assert_eq!(input.feed(A, b"i", records), 1);
        assert_eq!(input.held(A), b"");
        input.feed(A, b"jk", records);
        let mut w = SnapshotWriter::new();
        input.encode(&mut w);
        let bytes = w.into_bytes();
        let mut next = InputBuffers::default();
        next.merge(InputBuffers::decode(&mut SnapshotReader::new(&bytes)).unwrap());
        assert_eq!(
            next.feed(A, b"l", records),
            1,
            "the record split across the snapshot"
        );
    }

    #[test]
    fn trims_both_line_ends() {
        assert_eq!(trim_line_end(b"a b\r\n"), b"a b");
        assert_eq!(trim_line_end(b"a b\n"), b"a b");
        assert_eq!(trim_line_end(b"\r\n"), b"");
        assert_eq!(trim_line_end(b"x\r"), b"x");
    }
}
