//! [`WriteQueue`]: the bytes a guest wrote that the host has not taken yet.

/// Capacity a drained queue keeps, so that a connection that writes in bursts does
/// not reallocate for each burst, while an idle connection that once queued
/// megabytes does not hold on to them.
const RETAINED_CAPACITY: usize = 16 * 1024;

/// A FIFO of bytes, contiguous so that one host `write` can take all of it.
///
/// Consumed bytes are skipped with an offset and compacted away only when they make
/// up half the buffer, so taking bytes from the front costs O(1) amortised.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    buf: Vec<u8>,
    /// Bytes before `start` were taken by the host already.
    start: usize,
}

impl WriteQueue {
    /// Number of bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiting bytes, oldest first.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Appends bytes behind those already waiting.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Drops the first `n` waiting bytes (all of them if `n` is larger).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.buf.shrink_to(RETAINED_CAPACITY);
            self.start = 0;
        }
    }

    /// Drops everything and releases the memory.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_partial_consumption() {
        let mut queue = WriteQueue::default();
        queue.push(b"hello ");
        queue.consume(2);
        queue.push(b"world");
        assert_eq!(queue.pending(), b"llo world");
        queue.consume(4);
        queue.push(b"!");
        assert_eq!(queue.pending(), b"world!");
        assert_eq!(queue.len(), 6);
    }

    #[test]
    fn consuming_everything_empties_and_shrinks() {
        let mut queue = WriteQueue::default();
        queue.push(&vec![7; 10 * RETAINED_CAPACITY]);
        queue.consume(usize::MAX);
        assert!(queue.is_empty());
        assert!(queue.buf.capacity() <= RETAINED_CAPACITY);
    }

    #[test]
    fn compacts_once_half_is_consumed() {
        let mut queue = WriteQueue::default();
        queue.push(&[1; 100]);
        queue.consume(60);
        queue.push(&[2; 10]);
        assert_eq!(queue.start, 0);
        assert_eq!(queue.len(), 50);
    }
}
