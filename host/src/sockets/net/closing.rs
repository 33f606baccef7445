//! The end of a connection as the host finishes it (its last bytes out, the FIN, a
//! lingering wait for the peer's end), and the deadlines the loop enforces on
//! connects, TLS handshakes and closes.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use tracing::{debug, info};

use super::Net;
use super::handshake::tls_close_notify;
use crate::shared::limits::{CLOSE_LINGER, DEADLINE_CHECK, LINGER_AFTER_FIN, MAX_READ_CHUNK};
use crate::shared::wit::IoError;
use crate::sockets::connection::{Connection, Phase};

/// How the host ends a connection the guest closed, once its last bytes are out.
///
/// Once a socket is closed, the kernel answers any byte the peer sends with a reset,
/// which discards whatever of the answer the kernel has not sent yet. A lingering
/// close sends the FIN and keeps reading (and discarding) until the peer's own end,
/// at the cost of an extra turn and three syscalls per connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lingering {
    /// Linger when input is pending at the close (bytes the guest left unread, or
    /// that arrived while the last bytes went out) or the kernel has not sent all of
    /// the answer yet; otherwise every byte is on the wire, and the host closes at
    /// once. A peer that starts sending only then may be reset, but loses nothing
    /// already sent (on a network that loses a segment, a retransmission of it).
    #[default]
    Auto,
    /// Linger after every close, up to 5 s: no byte the peer sends late can destroy
    /// an answer.
    Always,
}

impl Net {
    /// How long the loop may sleep: until the next timer, or the next check of
    /// connection deadlines.
    pub fn next_wake(&mut self, now: Instant) -> Option<Duration> {
        let timer = self
            .timers
            .next_deadline()
            .map(|at| at.saturating_duration_since(now));
        let check = (self.agenda.with_deadline > 0).then(|| {
            self.next_check
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
        });
        match (timer, check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Enforces connection deadlines, at most once per [`DEADLINE_CHECK`]: drops
    /// closing connections whose peer did not take their last bytes in time, and
    /// fails connects that did not complete.
    pub fn sweep_deadlines(&mut self, now: Instant) {
        if self.agenda.with_deadline == 0 || self.next_check.is_some_and(|at| now < at) {
            return;
        }
        self.next_check = Some(now + DEADLINE_CHECK);
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| match c.phase {
                Phase::Closing { deadline }
                | Phase::Connecting { deadline }
                | Phase::Handshaking { deadline } => deadline <= now,
                _ => false,
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in expired {
            let Some(conn) = self.conns.slot_mut(slot) else {
                continue;
            };
            if conn.is_closing() {
                debug!(
                    slot,
                    "dropping a closed connection whose peer did not read its last bytes"
                );
                self.remove(slot);
            } else if let Phase::Handshaking { .. } = conn.phase {
                self.counters.tls_handshakes_timed_out += 1;
                if self.tls_log.allow() {
                    info!(peer = %conn.peer, "TLS handshake not done in time; closing the connection");
                }
                self.remove(slot);
            } else {
                self.agenda
                    .set_phase(conn, Phase::Failed(IoError::Unreachable));
                self.agenda.enqueue(conn);
            }
        }
    }

    /// Moves a connection from the guest's hands to the host's: flush, FIN, close.
    pub(super) fn start_close(&mut self, slot: usize) {
        let Some(conn) = self.conns.slot_mut(slot) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        let owner = conn.owner;
        if let Some(tapes) = self.tapes.as_deref_mut() {
            tapes.on_host_close(conn.id);
        }
        self.buffered += tls_close_notify(conn, &mut self.agenda) as u64;
        let deadline = Instant::now() + CLOSE_LINGER;
        self.agenda.set_phase(conn, Phase::Closing { deadline });
        self.owners.conn_removed(owner);
        if self.finish_closing(slot) {
            self.remove(slot);
        }
    }

    /// Moves a closing connection on: its last bytes out, then either the close at
    /// once or the FIN and a lingering wait for the peer's own end, as [`Lingering`]
    /// decides. True when it can be dropped now.
    ///
    /// Closing a socket while input is unread, or while input is still to come,
    /// makes the kernel answer with a reset, which destroys whatever of ours the
    /// kernel has not sent yet and what the peer has not read yet. So a lingering
    /// close sends the FIN and keeps reading and discarding until the peer's
    /// end-of-stream (or the linger deadline), like nginx's.
    pub(super) fn finish_closing(&mut self, slot: usize) -> bool {
        let scratch = &mut self.scratch;
        let Some(conn) = self.conns.slot_mut(slot) else {
            return false;
        };
        if conn.ring.on {
            // Its last bytes go out in the ring's sends; back here when they are.
            if conn.unsent() > 0 {
                super::queue_send(conn, &mut self.sends);
                return false;
            }
        } else {
            let before = conn.out.len();
            let flushed = conn.out.flush_to(&mut conn.stream);
            self.buffered -= (before - conn.out.len()) as u64;
            match flushed {
                Ok(true) => {}
                Ok(false) => return false,
                Err(_) => return true,
            }
        }
        if scratch.is_empty() {
            scratch.resize(MAX_READ_CHUNK, 0);
        }
        if !conn.fin_sent {
            // The peer has ended its side and the guest read it all: nothing more
            // can come, so nothing can turn into a reset.
            if conn.eof_seen {
                return true;
            }
            // On the ring, input received and not read is pending input too.
            let received = !std::mem::take(&mut conn.ring.unread).is_empty();
            if self.lingering == Lingering::Auto && !received {
                match read_pending(&mut conn.stream, scratch) {
                    // Nothing to read, and every byte of ours on the wire: late input
                    // could only reset what is already sent. Close at once.
                    Ok(false) if unsent(&conn.stream) == 0 => return true,
                    Ok(_) => {}
                    Err(_) => return true,
                }
            }
            send_fin(conn);
            if let Phase::Closing { deadline } = &mut conn.phase {
                *deadline = (*deadline).min(Instant::now() + LINGER_AFTER_FIN);
            }
        }
        if conn.ring.on {
            // The ring's receive reads (and discards) until the end.
            let ended = conn.peer_closed;
            if !ended {
                self.keep_receiving(slot);
            }
            return ended;
        }
        loop {
            match conn.stream.read(scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}

/// One read to see whether input is pending at a close: true if it found (and
/// discarded) some, false at `WouldBlock` or the peer's end-of-stream.
fn read_pending(stream: &mut TcpStream, scratch: &mut [u8]) -> io::Result<bool> {
    loop {
        return match stream.read(scratch) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Bytes the kernel holds for a socket that it has not sent yet (the peer's window is
/// full, say): a reset would discard them. Unknown counts as some.
fn unsent(stream: &TcpStream) -> usize {
    let mut unsent: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, to a valid local.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::SIOCOUTQNSD, &mut unsent) };
    if rc == 0 {
        usize::try_from(unsent).unwrap_or(1)
    } else {
        1
    }
}

pub(super) fn send_fin(conn: &mut Connection) {
    if !conn.fin_sent {
        conn.fin_sent = true;
        // NotConnected only means the peer is gone already; the FIN is moot then.
        let _ = conn.stream.shutdown(Shutdown::Write);
    }
}
