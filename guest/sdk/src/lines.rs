//! [`Lines`]: splitting a byte stream into bounded lines.

use std::fmt;

/// Capacity a line buffer keeps after delivering a long line, so one long line
/// does not pin its memory for the rest of the connection.
const RETAINED_CAPACITY: usize = 4 * 1024;

/// Splits the chunks of one connection into `\n`-terminated lines.
///
/// Line protocols (a key-value store, a chat room) get their input in chunks that
/// break lines anywhere. `Lines` hands out each complete line once, straight from
/// the chunk when the line lies inside it, and copies only the unfinished tail of a
/// chunk to join it with the next. A line longer than the limit is an error rather
/// than a buffer that grows with whatever a peer sends.
///
/// ```
/// use sandsock_sdk::Lines;
///
/// let mut lines = Lines::new(1024);
/// let mut seen = Vec::new();
/// lines.feed(b"GET a\nSET b", |line| seen.push(line.to_vec())).unwrap();
/// lines.feed(b" 1\n", |line| seen.push(line.to_vec())).unwrap();
/// assert_eq!(seen, [b"GET a\n".to_vec(), b"SET b 1\n".to_vec()]);
/// ```
#[derive(Debug)]
pub struct Lines {
    /// The start of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
    max_line: usize,
}

/// A line was longer than the limit given to [`Lines::new`].
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

impl Lines {
    /// A splitter for lines of at most `max_line` bytes, not counting the `\n`.
    pub fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_line,
        }
    }

    /// Feeds one chunk, calling `on_line` with each line it completes, in order,
    /// including its `\n` (use [`trim_line_end`] for the content alone).
    ///
    /// On [`LineTooLong`], the lines before the long one have been delivered and
    /// the buffered tail is dropped.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            let Some(end) = find_newline(rest) else {
                return self.keep(rest);
            };
            if self.partial.len() + end > self.max_line {
                return self.too_long();
            }
            self.partial.extend_from_slice(&rest[..=end]);
            on_line(&self.partial);
            self.partial.clear();
            self.partial.shrink_to(RETAINED_CAPACITY);
            rest = &rest[end + 1..];
        }
        while let Some(end) = find_newline(rest) {
            if end > self.max_line {
                return self.too_long();
            }
            on_line(&rest[..=end]);
            rest = &rest[end + 1..];
        }
        self.keep(rest)
    }

    /// Bytes of an unfinished line held back, waiting for its `\n`.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// The unfinished line held back, for a [`Handler::snapshot`]: a line split
    /// across a hot swap is then completed by the next generation
    /// ([`resume`](Self::resume)).
    ///
    /// [`Handler::snapshot`]: crate::Handler::snapshot
    pub fn unfinished(&self) -> &[u8] {
        &self.partial
    }

    /// A splitter that carries on from an [`unfinished`](Self::unfinished) line
    /// an earlier generation held, for lines of at most `max_line` bytes.
    ///
    /// `None` if `unfinished` could not have come from a `Lines` with this limit:
    /// longer than `max_line`, or holding a `\n`. Snapshots are input, so the
    /// caller treats that as a malformed snapshot.
    pub fn resume(max_line: usize, unfinished: &[u8]) -> Option<Self> {
        if unfinished.len() > max_line || find_newline(unfinished).is_some() {
            return None;
        }
        Some(Self {
            partial: unfinished.to_vec(),
            max_line,
        })
    }

    /// Holds back the start of a line, unless that alone breaks the limit.
    fn keep(&mut self, tail: &[u8]) -> Result<(), LineTooLong> {
        if self.partial.len() + tail.len() > self.max_line {
            return self.too_long();
        }
        self.partial.extend_from_slice(tail);
        Ok(())
    }

    fn too_long(&mut self) -> Result<(), LineTooLong> {
        self.partial = Vec::new();
        Err(LineTooLong)
    }
}

/// The content of a line from [`Lines::feed`], without its `\n` or `\r\n`.
pub fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn find_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&byte| byte == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(lines: &mut Lines, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Result<(), LineTooLong>) {
        let mut seen = Vec::new();
        for chunk in chunks {
            if let Err(error) = lines.feed(chunk, |line| seen.push(line.to_vec())) {
                return (seen, Err(error));
            }
        }
        (seen, Ok(()))
    }

    #[test]
    fn joins_lines_split_across_chunks() {
        let mut lines = Lines::new(100);
        let (seen, result) = feed_all(&mut lines, &[b"ab", b"c\nde", b"", b"f\n\n", b"g"]);
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [&b"abc\n"[..], b"def\n", b"\n"]);
        assert_eq!(lines.buffered(), 1);
    }

    #[test]
    fn line_at_the_limit_passes() {
        let mut lines = Lines::new(4);
        let (seen, result) = feed_all(&mut lines, &[b"ab", b"cd\n", b"wxyz\n"]);
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [&b"abcd\n"[..], b"wxyz\n"]);
    }

    #[test]
    fn long_complete_line_is_refused_after_earlier_lines() {
        let mut lines = Lines::new(4);
        let (seen, result) = feed_all(&mut lines, &[b"ok\ntoolong\nnext\n"]);
        assert_eq!(result, Err(LineTooLong));
        assert_eq!(seen, [&b"ok\n"[..]]);
    }

    #[test]
    fn long_unfinished_line_is_refused_without_buffering_it() {
        let mut lines = Lines::new(4);
        let (_, result) = feed_all(&mut lines, &[b"abc", b"de"]);
        assert_eq!(result, Err(LineTooLong));
        assert_eq!(lines.buffered(), 0);
        let (_, result) = feed_all(&mut Lines::new(4), &[b"abcdef"]);
        assert_eq!(result, Err(LineTooLong));
    }

    #[test]
    fn long_line_completed_by_a_later_chunk_is_refused() {
        let mut lines = Lines::new(4);
        let (seen, result) = feed_all(&mut lines, &[b"abc", b"de\n"]);
        assert_eq!(result, Err(LineTooLong));
        assert!(seen.is_empty());
    }

    #[test]
    fn resumes_an_unfinished_line() {
        let mut lines = Lines::new(10);
        let (_, result) = feed_all(&mut lines, &[b"a\nSET k"]);
        assert_eq!(result, Ok(()));
        let mut resumed = Lines::resume(10, lines.unfinished()).expect("fits the limit");
        let (seen, result) = feed_all(&mut resumed, &[b" v\n"]);
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [&b"SET k v\n"[..]]);
        assert_eq!(resumed.buffered(), 0);
    }

    #[test]
    fn resume_refuses_what_no_lines_would_hold() {
        assert!(Lines::resume(3, b"abcd").is_none(), "over the limit");
        assert!(Lines::resume(10, b"a\nb").is_none(), "a complete line");
        assert!(Lines::resume(3, b"").is_some());
    }

    #[test]
    fn trims_both_line_ends() {
        assert_eq!(trim_line_end(b"a b\r\n"), b"a b");
        assert_eq!(trim_line_end(b"a b\n"), b"a b");
        assert_eq!(trim_line_end(b"\r\n"), b"");
        assert_eq!(trim_line_end(b"x\r"), b"x");
    }
}
