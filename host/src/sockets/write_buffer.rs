//! A connection's bounded buffer of bytes the guest wrote but the socket did not take.

use std::io::{self, Write};

/// Unsent bytes of one connection, oldest first, never more than the bound the caller
/// passes to [`WriteBuffer::push`].
///
/// Allocates nothing until the socket first refuses bytes: most connections never
/// need it, and its memory is released when it drains.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    bytes: Vec<u8>,
    /// Bytes before `head` were sent already.
    head: usize,
}

impl WriteBuffer {
    /// Bytes waiting to be sent.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.head
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes waiting, oldest first: what an upgrade hands to the new process.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.head..]
    }

    /// A buffer holding `bytes`, as an upgrade's old process left them.
    pub fn holding(bytes: Vec<u8>) -> Self {
        Self { bytes, head: 0 }
    }

    /// Takes every byte waiting, for a send that needs them to stay put (`--io
    /// uring`): the buffer is empty after.
    pub fn take_pending(&mut self) -> Vec<u8> {
        if self.head > 0 {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
        std::mem::take(&mut self.bytes)
    }

    /// Puts `front` back before the bytes waiting: what a cancelled send did not
    /// send.
    pub fn put_front(&mut self, front: &[u8]) {
        if front.is_empty() {
            return;
        }
        let mut bytes = Vec::with_capacity(front.len() + self.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(self.pending());
        *self = Self::holding(bytes);
    }

    /// Appends as much of `data` as fits under `bound` bytes in total, and returns
    /// how much that was.
    pub fn push(&mut self, data: &[u8], bound: usize) -> usize {
        let room = bound.saturating_sub(self.len());
        let taken = room.min(data.len());
        if taken > 0 {
            // Reclaim the sent prefix before growing, so the buffer stays near `bound`.
            if self.head > 0 && self.bytes.len() + taken > self.bytes.capacity() {
                self.bytes.drain(..self.head);
                self.head = 0;
            }
            self.bytes.extend_from_slice(&data[..taken]);
        }
        taken
    }

    /// Writes buffered bytes to `sink` until it is empty or the sink would block.
    /// Returns `Ok(true)` when everything was sent.
    pub fn flush_to(&mut self, mut sink: impl Write) -> io::Result<bool> {
        while self.head < self.bytes.len() {
            match sink.write(&self.bytes[self.head..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.head += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Drained: give the memory back, a big buffer is rarely needed twice.
        self.bytes = Vec::new();
        self.head = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `room` bytes, then would block.
    struct Narrow {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Narrow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room).min(3);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn push_respects_the_bound() {
        let mut buffer = WriteBuffer::default();
        assert_eq!(buffer.push(b"hello", 8), 5);
        assert_eq!(buffer.push(b"world", 8), 3);
        assert_eq!(buffer.push(b"!", 8), 0);
        assert_eq!(buffer.len(), 8);
    }

    #[test]
    fn taken_bytes_put_back_keep_their_place() {
        let mut buffer = WriteBuffer::default();
        buffer.push(b"abcdef", 64);
        let mut sink = Narrow {
            taken: Vec::new(),
            room: 2,
        };
        assert!(!buffer.flush_to(&mut sink).unwrap());
        let taken = buffer.take_pending();
        assert_eq!(taken, b"cdef");
        assert!(buffer.is_empty());
        buffer.push(b"gh", 64);
        buffer.put_front(&taken[1..]);
        assert_eq!(buffer.pending(), b"defgh");
    }

    #[test]
    fn flush_keeps_order_across_partial_writes() {
        let mut buffer = WriteBuffer::default();
        buffer.push(b"abcdefgh", 64);
        let mut sink = Narrow {
            taken: Vec::new(),
            room: 5,
        };
        assert!(!buffer.flush_to(&mut sink).unwrap());
        assert_eq!(buffer.len(), 3);
        buffer.push(b"ij", 64);
        sink.room = 100;
        assert!(buffer.flush_to(&mut sink).unwrap());
        assert_eq!(sink.taken, b"abcdefghij");
        assert!(buffer.is_empty());
    }
}
