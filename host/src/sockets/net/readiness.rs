//! Mio's edges recorded per connection, and each turn's events made from them: the
//! guest sees readiness as level-triggered, whatever the kernel reported when.

use std::io;
use std::time::Instant;

use mio::event::Event as MioEvent;
use tracing::debug;

use super::closing::send_fin;
use super::guest_io::connect_error;
use super::{Agenda, Net};
use crate::shared::wit::IoError;
use crate::sockets::batch::Batch;
use crate::sockets::connection::{Connection, Phase};
use crate::sockets::events::{Event, HangupInfo};

impl Net {
    /// Records what mio reported for a connection's socket, and does the host's own
    /// part of the work: completing a connect, flushing buffered output, finishing a
    /// close.
    pub fn on_socket_event(&mut self, slot: usize, event: &MioEvent) {
        let max_buffer = self.limits.max_buffer;
        let Some(conn) = self.conns.slot_mut(slot) else {
            return;
        };
        if event.is_readable() || event.is_read_closed() {
            conn.readable = true;
        }
        if event.is_read_closed() {
            conn.peer_closed = true;
        }
        if event.is_writable() {
            conn.writable = true;
        }
        match conn.phase {
            Phase::Closing { .. } => {
                if event.is_error() || self.finish_closing(slot) {
                    self.remove(slot);
                }
                return;
            }
            Phase::Handshaking { .. } => {
                if event.is_error() {
                    self.counters.tls_handshakes_failed += 1;
                    self.remove(slot);
                } else {
                    self.advance_handshake(slot);
                }
                return;
            }
            Phase::Failed(_) => return,
            Phase::Connecting { .. } => {
                if !(event.is_writable() || event.is_error()) {
                    return;
                }
                match connect_outcome(conn) {
                    None => return, // a spurious edge: still connecting
                    Some(Err(error)) => {
                        self.agenda.set_phase(conn, Phase::Failed(error));
                        self.agenda.enqueue(conn);
                        return;
                    }
                    Some(Ok(())) => {
                        self.agenda.set_phase(conn, Phase::Open);
                        conn.announce_connected = true;
                        if conn.write_shut && conn.out.is_empty() {
                            send_fin(conn);
                        }
                    }
                }
            }
            Phase::Open => {}
        }
        if event.is_error() {
            let error = conn.stream.take_error().ok().flatten();
            let error = error.unwrap_or_else(|| io::ErrorKind::ConnectionReset.into());
            self.agenda.fail(conn, &error);
            return;
        }
        if conn.writable && !conn.out.is_empty() {
            let before = conn.out.len();
            flush(conn, &mut self.agenda);
            self.buffered -= (before - conn.out.len()) as u64;
        }
        if conn.reportable(max_buffer) {
            self.agenda.enqueue(conn);
        }
    }

    /// Appends the events of every connection with something to report, and of
    /// every timer due, to `batch`, each for its owner. Failed connections are
    /// reported `hangup` once and released here.
    pub fn collect(&mut self, batch: &mut Batch) {
        let max_buffer = self.limits.max_buffer;
        let mut i = 0;
        while i < self.agenda.ready.len() {
            let slot = self.agenda.ready[i];
            let Some(conn) = self.conns.slot_mut(slot) else {
                self.agenda.ready.swap_remove(i);
                continue;
            };
            let owner = conn.owner;
            if let Phase::Failed(error) = conn.phase {
                let hangup = HangupInfo {
                    conn: conn.id,
                    error,
                };
                if let Some(tapes) = self.tapes.as_deref_mut() {
                    tapes.on_hangup(conn.id);
                }
                batch.push(owner, Event::Hangup(hangup));
                self.agenda.ready.swap_remove(i);
                self.remove(slot);
                continue;
            }
            if std::mem::take(&mut conn.announce_connected) {
                batch.push(owner, Event::Connected(conn.id));
            }
            let readable = !self.holding_input && conn.read_ready();
            let writable = conn.write_ready(max_buffer);
            if readable {
                batch.push(owner, Event::Readable(conn.id));
            }
            if writable {
                batch.push(owner, Event::Writable(conn.id));
                conn.notify_writable = false;
            }
            if readable || writable {
                i += 1;
            } else {
                conn.queued = false;
                self.agenda.ready.swap_remove(i);
            }
        }
        if !self.timers.is_empty() {
            let owners = &mut self.owners;
            self.timers.expire(Instant::now(), |(owner, id)| {
                owners.timers_gone(owner, 1);
                batch.push(owner, Event::Timer(id));
            });
        }
    }

    /// After a batch: forgets the connections that have nothing left to report, so
    /// the loop only skips its wait when there is work.
    pub fn prune(&mut self) {
        let max_buffer = self.limits.max_buffer;
        let conns = &mut self.conns;
        self.agenda
            .ready
            .retain(|&slot| match conns.slot_mut(slot) {
                Some(conn) if conn.reportable(max_buffer) => true,
                Some(conn) => {
                    conn.queued = false;
                    false
                }
                None => false,
            });
    }

    /// Whether a batch is due without waiting for the kernel.
    pub fn has_ready(&self) -> bool {
        !self.agenda.ready.is_empty()
    }
}

/// How an outbound connect ended, after a writable or error edge: `None` while it
/// is still under way.
fn connect_outcome(conn: &mut Connection) -> Option<Result<(), IoError>> {
    let error = match conn.stream.take_error() {
        Ok(None) => match conn.stream.peer_addr() {
            Ok(_) => return Some(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
            Err(e) => e,
        },
        Ok(Some(e)) | Err(e) => e,
    };
    debug!(conn = conn.id, peer = %conn.peer, %error, "connect failed");
    Some(Err(connect_error(&error)))
}

/// Sends buffered bytes after a writable edge; sends the FIN once they are out.
fn flush(conn: &mut Connection, agenda: &mut Agenda) {
    match conn.out.flush_to(&mut conn.stream) {
        Ok(true) => {
            if conn.write_shut {
                send_fin(conn);
            }
        }
        Ok(false) => conn.writable = false,
        Err(e) => agenda.fail(conn, &e),
    }
}
