//! The connections on the loop's io_uring (`--io uring`): their receives, sends and
//! closes as the ring completes them, and the guest's reads and writes answered
//! from and into host memory.
//!
//! A connection on the ring has one multishot receive armed for as long as it may
//! take input: the bytes land in `unread` before the guest asks, and a read takes
//! them from there without a system call. Past [`MAX_UNREAD`] unread bytes the
//! receive is cancelled (the kernel's socket buffer, then TCP's window, hold the
//! rest, as on epoll) and armed again once the guest has read. What the guest
//! writes is buffered and sent at the end of the turn, one send in flight per
//! connection.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::{Net, queue_send};
use crate::shared::limits::MAX_READ_CHUNK;
use crate::sockets::conn_table::slot_of;
use crate::sockets::connection::{Connection, Phase};
use crate::sockets::events::Read as ReadOutcome;
use crate::sockets::ring::{Completion, Op, Ring};

/// The most received bytes a connection holds unread before its receive pauses.
const MAX_UNREAD: usize = MAX_READ_CHUNK;

impl Net {
    /// Puts this loop's plain TCP connections on `ring` (`--io uring`): every one
    /// it takes from now on, an upgrade's included (unpacked after this). Before
    /// its first connection.
    pub fn use_ring(&mut self, ring: Ring) {
        debug_assert!(self.conns.is_empty(), "a ring comes before any connection");
        self.ring = Some(Box::new(ring));
    }

    /// Whether the loop's connections go through an io_uring.
    pub fn on_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Lets the calling thread, the loop's, submit to the ring: once, before the
    /// first turn.
    pub fn enable_ring(&mut self) -> io::Result<()> {
        match self.ring.as_deref_mut() {
            Some(ring) => ring.enable(),
            None => Ok(()),
        }
    }

    /// Puts a connection just taken into the table on the ring, if it goes there:
    /// a plain one that is established (TLS and outbound connects stay on epoll).
    pub(super) fn onto_ring(&mut self, slot: usize) -> bool {
        if self.ring.is_none() {
            return false;
        }
        let Some(conn) = self.conns.slot_mut(slot) else {
            return false;
        };
        if conn.tls.is_some() || !matches!(conn.phase, Phase::Open | Phase::Closing { .. }) {
            return false;
        }
        conn.ring.on = true;
        // On the ring, `peer_closed` means a receive returned the end; an edge
        // (an upgrade from epoll) may have come with bytes still in the socket.
        // The end is sticky: the receive finds it again after them.
        if !conn.eof_seen {
            conn.peer_closed = false;
        }
        // Its input comes in completions from now on: readable only with some (an
        // upgrade may bring bytes received before).
        conn.readable = conn.peer_closed || !conn.ring.unread.is_empty();
        conn.writable = true;
        // Its receive is armed at the end of the turn, if it still wants one: a
        // connection answered and closed in the turn that accepted it (a
        // connection per request) never costs the kernel a receive to arm and
        // cancel.
        self.arming.push(conn.id);
        if !conn.out.is_empty() {
            queue_send(conn, &mut self.sends);
        }
        true
    }

    /// One wait of the loop on the ring: the turn's sends submitted, then whatever
    /// completed taken in. True when the loop's epoll has something to report.
    pub fn ring_turn(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.submit_sends();
        let Some(ring) = self.ring.as_deref_mut() else {
            return Ok(true);
        };
        let epoll = ring.enter(timeout)?;
        let done = ring.take_done();
        for completion in &done {
            match completion.op {
                Op::Receive => self.on_received(completion),
                Op::Send => self.on_sent(completion),
                Op::Accept => self.accepts.push(*completion),
                Op::Epoll | Op::Quiet => {}
            }
        }
        if let Some(ring) = self.ring.as_deref_mut() {
            ring.put_done(done);
        }
        Ok(epoll)
    }

    /// Starts listener `index`'s multishot accept (its socket `fd`); its
    /// completions come back through [`Net::take_accepts`].
    pub fn ring_accept(&mut self, fd: RawFd, index: usize) {
        if let Some(ring) = self.ring.as_deref_mut() {
            ring.accept(fd, index);
        }
    }

    /// Cancels listener `index`'s accept: it ends with a last completion.
    pub fn ring_cancel_accept(&mut self, index: usize) {
        if let Some(ring) = self.ring.as_deref_mut() {
            ring.cancel(Op::Accept, index as u64);
        }
    }

    /// The listeners' accept completions of the last wait (to give back with
    /// [`Net::put_accepts`], keeping the list's memory).
    pub fn take_accepts(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.accepts)
    }

    /// Gives back the list [`Net::take_accepts`] lent.
    pub fn put_accepts(&mut self, mut accepts: Vec<Completion>) {
        accepts.clear();
        self.accepts = accepts;
    }

    /// Arms the receives of the connections that came this turn, and starts the
    /// sends of those that wrote.
    fn submit_sends(&mut self) {
        let Some(ring) = self.ring.as_deref_mut() else {
            return;
        };
        for id in self.arming.drain(..) {
            if let Some(conn) = self.conns.get_mut(id) {
                steer_receive(conn, ring, self.holding_input);
            }
        }
        for slot in self.sends.drain(..) {
            let Some(conn) = self.conns.slot_mut(slot) else {
                continue;
            };
            conn.ring.send_queued = false;
            if self.holding_input || !conn.ring.sending.is_empty() || conn.out.is_empty() {
                continue;
            }
            conn.ring.sending = conn.out.take_pending();
            conn.ring.sent = 0;
            // SAFETY: `sending` is not touched until the send completes, and a
            // connection that goes first leaves it to `Ring::bury` (`remove`).
            unsafe { ring.send(conn.stream.as_raw_fd(), conn.id, &conn.ring.sending) };
        }
    }

    /// A receive completed: bytes, the peer's end, or an error.
    fn on_received(&mut self, done: &Completion) {
        let max_buffer = self.limits.max_buffer;
        let holding = self.holding_input;
        let Some(ring) = self.ring.as_deref_mut() else {
            return;
        };
        let Some(conn) = self.conns.get_mut(done.id) else {
            // A connection gone since: only its buffer matters.
            if let Some(bid) = done.buffer() {
                ring.give_back(bid);
            }
            return;
        };
        if !done.more() {
            conn.ring.receiving = false;
            conn.ring.cancelling = false;
        }
        let closing = conn.is_closing();
        // Input after the FIN is discarded; before it, while the last bytes go
        // out, it is kept: the close counts it as pending (and lingers).
        let discard = closing && conn.fin_sent;
        if let Some(bid) = done.buffer() {
            match usize::try_from(done.result) {
                Ok(len) if len > 0 && !discard => {
                    ring.take_bytes(bid, len, &mut conn.ring.unread);
                }
                _ => ring.give_back(bid),
            }
        }
        match done.result {
            0 => {
                conn.peer_closed = true;
                conn.readable = true;
            }
            n if n > 0 => conn.readable = !closing,
            // Out of buffers (armed again below), or cancelled by the host.
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {}
            e => {
                let slot = slot_of(done.id);
                if closing {
                    self.remove(slot);
                } else {
                    let error = io::Error::from_raw_os_error(-e);
                    self.agenda.fail(conn, &error);
                }
                return;
            }
        }
        steer_receive(conn, ring, holding);
        if closing {
            // The peer's end (or a reset) ends the lingering close.
            let slot = slot_of(done.id);
            if self.finish_closing(slot) {
                self.remove(slot);
            }
            return;
        }
        if conn.reportable(max_buffer) {
            self.agenda.enqueue(conn);
        }
    }

    /// A send completed: bytes sent (the rest goes again), or an error.
    fn on_sent(&mut self, done: &Completion) {
        let max_buffer = self.limits.max_buffer;
        let holding = self.holding_input;
        let Some(ring) = self.ring.as_deref_mut() else {
            return;
        };
        let Some(conn) = self.conns.get_mut(done.id) else {
            // A connection gone since: its bytes can go now.
            ring.unbury(done.id);
            return;
        };
        let slot = slot_of(done.id);
        match usize::try_from(done.result) {
            Ok(n) => {
                let n = n.min(conn.ring.in_flight());
                conn.ring.sent += n;
                self.buffered -= n as u64;
            }
            Err(_) if done.result == -libc::ECANCELED => {}
            Err(_) => {
                let error = io::Error::from_raw_os_error(-done.result);
                let rest = std::mem::take(&mut conn.ring.sending);
                self.buffered -= (rest.len() - conn.ring.sent) as u64;
                conn.ring.sent = 0;
                if conn.is_closing() {
                    self.remove(slot);
                } else {
                    self.agenda.fail(conn, &error);
                }
                return;
            }
        }
        if conn.ring.in_flight() == 0 {
            conn.ring.sending = Vec::new();
            conn.ring.sent = 0;
        } else if holding || done.result < 0 {
            // Cancelled (an upgrade settling): what is left goes back in front.
            let rest = std::mem::take(&mut conn.ring.sending);
            conn.out.put_front(&rest[conn.ring.sent..]);
            conn.ring.sent = 0;
        } else {
            // The kernel took part: the rest goes now, before anything newer; the
            // guest may write again if that made room.
            let rest = &conn.ring.sending[conn.ring.sent..];
            // SAFETY: as in `submit_sends`: the bytes stay until the completion.
            unsafe { ring.send(conn.stream.as_raw_fd(), conn.id, rest) };
            if conn.reportable(max_buffer) {
                self.agenda.enqueue(conn);
            }
            return;
        }
        if !conn.out.is_empty() {
            queue_send(conn, &mut self.sends);
        }
        if conn.is_closing() {
            if self.finish_closing(slot) {
                self.remove(slot);
            }
            return;
        }
        if conn.write_shut && conn.unsent() == 0 && conn.phase == Phase::Open {
            super::closing::send_fin(conn);
        }
        if conn.reportable(max_buffer) {
            self.agenda.enqueue(conn);
        }
    }

    /// What a client sent with its connect, read at once (one `recv`, as on epoll)
    /// for a connection just accepted onto the ring: its receive goes to the kernel
    /// only at the end of the turn, and the request would wait a turn and a call.
    pub(super) fn read_before_receiving(&mut self, slot: usize) {
        let Some(conn) = self.conns.slot_mut(slot) else {
            return;
        };
        if conn.heard || conn.peer_closed || !conn.ring.unread.is_empty() {
            return;
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; MAX_READ_CHUNK];
        }
        loop {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => conn.peer_closed = true,
                Ok(n) => conn.ring.unread.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.agenda.fail(conn, &e);
                    return;
                }
            }
            break;
        }
        conn.readable = conn.peer_closed || !conn.ring.unread.is_empty();
    }

    /// A guest's read of a connection on the ring: from the bytes received already.
    /// Also a connection on epoll that came from a ring's upgrade with bytes
    /// received there: those first, then its socket.
    pub(super) fn read_received(&mut self, slot: usize, buf: &mut [u8]) -> ReadOutcome {
        let holding = self.holding_input;
        let Some(conn) = self.conns.slot_mut(slot) else {
            return ReadOutcome::WouldBlock;
        };
        let unread = &mut conn.ring.unread;
        let n = unread.len().min(buf.len());
        if n == 0 {
            conn.readable = false;
            if conn.peer_closed {
                conn.eof_seen = true;
                conn.heard = true;
                return ReadOutcome::Eof;
            }
            return ReadOutcome::WouldBlock;
        }
        buf[..n].copy_from_slice(&unread[..n]);
        if n == unread.len() {
            // Drained: the memory goes back; an idle connection holds none.
            *unread = Vec::new();
        } else {
            unread.drain(..n);
        }
        // Off the ring, the socket is read next (an edge may have passed).
        conn.readable = !conn.ring.unread.is_empty() || conn.peer_closed || !conn.ring.on;
        conn.heard = true;
        self.counters.bytes_read += n as u64;
        if let (true, Some(ring)) = (conn.ring.on, self.ring.as_deref_mut()) {
            steer_receive(conn, ring, holding);
        }
        ReadOutcome::Data(n)
    }

    /// A guest's write on a connection on the ring: buffered up to the bound, and
    /// sent at the end of the turn. Returns how many bytes were taken.
    pub(super) fn write_buffered(&mut self, slot: usize, data: &[u8]) -> usize {
        let max_buffer = self.limits.max_buffer;
        let Some(conn) = self.conns.slot_mut(slot) else {
            return 0;
        };
        let room = max_buffer.saturating_sub(conn.ring.in_flight());
        let taken = conn.out.push(data, room);
        self.buffered += taken as u64;
        if taken > 0 {
            queue_send(conn, &mut self.sends);
        }
        taken
    }

    /// A connection on the ring leaves the table: what it has in flight is
    /// cancelled, and its descriptor closed by the ring after (the kernel keeps a
    /// socket open while a request holds it), with the turn's other submissions.
    /// Its bytes in flight stay with the ring until the send's completion.
    pub(super) fn off_ring(&mut self, mut conn: Connection) {
        let Some(ring) = self.ring.as_deref_mut() else {
            return;
        };
        if conn.ring.receiving {
            ring.cancel(Op::Receive, conn.id);
        }
        if !conn.ring.sending.is_empty() {
            ring.cancel(Op::Send, conn.id);
            ring.bury(conn.id, std::mem::take(&mut conn.ring.sending));
        }
        let stream = conn.into_stream();
        ring.close(std::os::fd::IntoRawFd::into_raw_fd(stream));
    }

    /// Stops (`true`) or restarts the ring's receives and sends, for an upgrade's
    /// handover: the connections settle with nothing in flight, their input in
    /// their sockets or read by the guest, their output in their buffers.
    pub(super) fn hold_ring(&mut self, hold: bool) {
        let Some(ring) = self.ring.as_deref_mut() else {
            return;
        };
        for (_, conn) in self.conns.iter_mut() {
            if !conn.ring.on {
                continue;
            }
            steer_receive(conn, ring, hold);
            if hold && !conn.ring.sending.is_empty() {
                ring.cancel(Op::Send, conn.id);
            }
            if !hold && !conn.out.is_empty() {
                queue_send(conn, &mut self.sends);
            }
        }
    }

    /// Arms a lingering connection's receive (none was armed while its last
    /// bytes went out, or a backpressure pause stopped it): the lingering close
    /// waits for the peer's end through it.
    pub(super) fn keep_receiving(&mut self, slot: usize) {
        if let (Some(ring), Some(conn)) = (self.ring.as_deref_mut(), self.conns.slot_mut(slot))
            && conn.ring.on
        {
            steer_receive(conn, ring, self.holding_input);
        }
    }

    /// Whether no connection on the ring has a receive or a send in flight (a
    /// handover waits for it).
    pub fn ring_quiet(&self) -> bool {
        self.ring.is_none()
            || self
                .conns
                .iter()
                .all(|(_, conn)| !conn.ring.receiving && conn.ring.sending.is_empty())
    }
}

/// Arms a connection's receive when it may take input, or cancels it when it may
/// not (too much unread, the end seen, input held for a handover).
fn steer_receive(conn: &mut Connection, ring: &mut Ring, holding: bool) {
    let wanted = !holding
        && !conn.peer_closed
        && match conn.phase {
            Phase::Open => conn.ring.unread.len() < MAX_UNREAD,
            // Lingering after its FIN: waiting for the peer's end. Before, while
            // its last bytes go out, input does not matter (the close looks for
            // it in the socket when it sends the FIN).
            Phase::Closing { .. } => conn.fin_sent,
            _ => false,
        };
    if wanted && !conn.ring.receiving {
        conn.ring.receiving = true;
        ring.receive(conn.stream.as_raw_fd(), conn.id);
    } else if !wanted && conn.ring.receiving && !conn.ring.cancelling {
        conn.ring.cancelling = true;
        ring.cancel(Op::Receive, conn.id);
    }
}
