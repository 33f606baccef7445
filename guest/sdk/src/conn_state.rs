//! [`ConnState`]: what the SDK keeps for one connection (its queue, the reasons
//! reading is paused, a close waiting for the queue, input held while paused), and
//! how it is carried across a hot swap; [`Io`](crate::Io) acts on it.

use crate::host::Host;
use crate::write_queue::WriteQueue;
use crate::{BadSnapshot, Conn, SnapshotReader, SnapshotWriter};

/// Queued bytes past which the SDK stops reading a connection.
///
/// This is the backpressure that keeps a guest's memory bounded when a peer sends
/// faster than it reads: an echo server whose client never reads would otherwise
/// queue everything the client sends. Reading resumes below [`LOW_WATER`].
pub const HIGH_WATER: usize = 256 * 1024;

/// Queued bytes below which a connection paused by [`HIGH_WATER`] is read again.
///
/// Well below the high-water mark, so that a connection hovering around it does not
/// flip its read interest on every event.
pub const LOW_WATER: usize = 64 * 1024;

/// Input the host gave while reading was paused, handed to the handler once it
/// resumes.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// The bytes, in order.
    pub(crate) bytes: Vec<u8>,
    /// The peer's end-of-stream came after them.
    pub(crate) eof: bool,
}

/// The SDK's state for one connection.
///
/// All of it but `told` crosses a hot swap (see `handoff`): a queue or a pending
/// close lost there would cut a response short.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Bytes written by the guest that the host has not accepted yet.
    pub(crate) queue: WriteQueue,
    /// The interest the host was last told, so `set-interest` is called only on change.
    pub(crate) told: Interest,
    /// The peer's end-of-stream was read; there is nothing more to read.
    pub(crate) eof: bool,
    /// Reading is paused because the queue passed [`HIGH_WATER`].
    pub(crate) backpressure: bool,
    /// Whether the queue's own size pauses reading ([`Io::set_auto_pause`](crate::Io::set_auto_pause)).
    pub(crate) auto_pause: bool,
    /// Reading is paused because the guest asked ([`Io::pause_reading`](crate::Io::pause_reading)).
    pub(crate) paused: bool,
    /// The guest wants `on_writable` whenever the connection can take more, even
    /// with nothing queued ([`Io::set_interest`](crate::Io::set_interest)).
    pub(crate) want_writable: bool,
    /// An outbound connection that has not completed yet: everything written is
    /// held in the queue until the host reports `connected`.
    pub(crate) connecting: bool,
    /// What to do once the queue is empty.
    pub(crate) after_drain: AfterDrain,
    /// The write side is shut down; further writes are dropped.
    pub(crate) write_shut: bool,
    /// The host reported a reset; its `hangup` follows, and until then nothing is done.
    pub(crate) failed: bool,
    /// Input the host read before it heard that reading was paused.
    pub(crate) held: Held,
}

/// Which readiness events the guest wants for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interest {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
}

impl Interest {
    /// What the host starts every connection with.
    pub(crate) const INITIAL: Self = Self {
        readable: true,
        writable: false,
    };
}

/// What the guest asked to happen once its queue for a connection is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterDrain {
    /// Nothing: tell the handler `on_writable`.
    Notify,
    /// Send end-of-stream ([`Io::shutdown_write`](crate::Io::shutdown_write)).
    ShutdownWrite,
    /// Close the connection ([`Io::close`](crate::Io::close)).
    Close,
}

impl ConnState {
    /// Whether input waits here for reading to resume: new input goes behind it.
    pub(crate) fn holds(&self) -> bool {
        !self.held.bytes.is_empty() || self.held.eof
    }

    pub(crate) fn new(connecting: bool) -> Self {
        Self {
            queue: WriteQueue::default(),
            told: Interest::INITIAL,
            eof: false,
            backpressure: false,
            auto_pause: true,
            paused: false,
            want_writable: false,
            connecting,
            after_drain: AfterDrain::Notify,
            write_shut: false,
            failed: false,
            held: Held::default(),
        }
    }

    /// Reading goes on only while nothing wants it paused: end-of-stream, the
    /// SDK's high-water mark, the guest, a failure, a pending close.
    pub(crate) fn wants_read(&self) -> bool {
        !self.eof
            && !self.backpressure
            && !self.paused
            && !self.failed
            && self.after_drain != AfterDrain::Close
    }

    /// Whether the queue can be handed to the host now.
    pub(crate) fn can_flush(&self) -> bool {
        !self.connecting && !self.failed
    }

    /// Writes are refused once the write side is shut, or a shutdown or close is
    /// pending: bytes written after asking for either would be lost or reordered.
    pub(crate) fn accepts_writes(&self) -> bool {
        !self.write_shut && !self.failed && self.after_drain == AfterDrain::Notify
    }

    pub(crate) fn wanted_interest(&self) -> Interest {
        let asked = self.want_writable && self.accepts_writes();
        Interest {
            readable: self.wants_read(),
            writable: self.can_flush() && (!self.queue.is_empty() || asked),
        }
    }

    /// Writes this state for a handoff in layout `version`: one byte of flags, one
    /// of `after_drain`, the queue, then (from 3) the held input and whether its
    /// end-of-stream came (see `handoff` for the whole layout).
    pub(crate) fn encode(&self, w: &mut SnapshotWriter, version: u8) {
        let flags = [
            self.eof,
            self.backpressure,
            self.auto_pause,
            self.paused,
            self.connecting,
            self.write_shut,
            self.failed,
            self.want_writable,
        ];
        w.u8(flags
            .iter()
            .enumerate()
            .fold(0, |bits, (i, &on)| bits | (u8::from(on) << i)));
        w.u8(match self.after_drain {
            AfterDrain::Notify => 0,
            AfterDrain::ShutdownWrite => 1,
            AfterDrain::Close => 2,
        });
        w.bytes(self.queue.pending());
        if version >= 3 {
            w.bytes(&self.held.bytes);
            w.u8(u8::from(self.held.eof));
        }
    }

    /// Reads what [`encode`](Self::encode) wrote, in the handoff layout `version`
    /// (1 had no write interest: its bit 7 is always 0; before 3 nothing was held).
    /// `told` is not in it: the interest is set afresh on adoption.
    pub(crate) fn decode(r: &mut SnapshotReader<'_>, version: u8) -> Result<Self, BadSnapshot> {
        let bits = r.u8()?;
        if version < 2 && bits >> 7 != 0 {
            return Err(BadSnapshot::new("unknown connection flags"));
        }
        let flag = |i: u8| bits & (1 << i) != 0;
        let after_drain = match r.u8()? {
            0 => AfterDrain::Notify,
            1 => AfterDrain::ShutdownWrite,
            2 => AfterDrain::Close,
            _ => return Err(BadSnapshot::new("unknown pending action")),
        };
        let mut queue = WriteQueue::default();
        queue.push(r.bytes()?);
        let held = if version >= 3 {
            let bytes = r.bytes()?.to_vec();
            let eof = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(BadSnapshot::new("unknown held end-of-stream flag")),
            };
            Held { bytes, eof }
        } else {
            Held::default()
        };
        Ok(Self {
            queue,
            // Not known (the host kept the old generation's); set on adoption.
            told: Interest::INITIAL,
            eof: flag(0),
            backpressure: flag(1),
            auto_pause: flag(2),
            paused: flag(3),
            want_writable: flag(7),
            connecting: flag(4),
            after_drain,
            write_shut: flag(5),
            failed: flag(6),
            held,
        })
    }

    /// Updates the backpressure flag after the queue grew or shrank.
    pub(crate) fn update_backpressure(&mut self) {
        let queued = self.queue.len();
        if !self.auto_pause {
            self.backpressure = false;
        } else if queued >= HIGH_WATER {
            self.backpressure = true;
        } else if queued <= LOW_WATER {
            self.backpressure = false;
        }
    }
}

/// Tells the host the interest `state` calls for, if it changed.
pub(crate) fn sync_interest(host: &mut Host, conn: Conn, state: &mut ConnState) {
    let wanted = state.wanted_interest();
    if wanted != state.told {
        host.set_interest(conn.raw(), wanted.readable, wanted.writable);
        state.told = wanted;
    }
}
