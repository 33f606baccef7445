//! A binary upgrade's part of the table: the connections packed for the new process
//! (the old process keeps its own descriptors until the new one has taken them), and
//! unpacked there under the same handles.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::Net;
use crate::sockets::connection::{Connection, Phase};
use crate::sockets::handler::CarriedGroup;
use crate::sockets::owners::Owner;
use crate::sockets::parcel::{
    CarriedConn, CarriedPhase, Flags, Group, Parcel, error_code, error_of,
};
use crate::sockets::write_buffer::WriteBuffer;

/// One worker's connections, packed: the parcel, the descriptors in its order, and
/// the slots they hold here (released once the new process has them).
#[derive(Debug)]
pub struct Packed {
    /// What the new process needs to know.
    pub parcel: Parcel,
    /// The sockets, in the order of `parcel.conns`; they stay open here until
    /// [`Net::release_packed`] (the loop waits, frozen, meanwhile).
    pub fds: Vec<RawFd>,
    /// Their slots here, for [`Net::release_packed`].
    pub slots: Vec<usize>,
    /// Connections that stay (TLS ones, and handshakes), to finish here.
    pub kept: usize,
}

impl Net {
    /// The guest instances whose connections an upgrade can carry (every plain one
    /// the guest holds), lowest first.
    pub fn carried_owners(&self) -> Vec<Owner> {
        let mut owners: Vec<Owner> = self
            .conns
            .iter()
            .filter(|(_, conn)| carried(conn) && !conn.is_closing())
            .map(|(_, conn)| conn.owner)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        owners
    }

    /// Packs every plain connection for an upgrade's new process, in groups by the
    /// owners in `owners` (each with its snapshot, from `snapshots`, and timers). The
    /// connections stay as they are until [`Net::release_packed`]: if the new process
    /// never takes them, nothing is undone.
    pub fn pack(&self, owners: &[Owner], snapshots: Vec<Option<Vec<u8>>>) -> Packed {
        let now = Instant::now();
        let groups = owners
            .iter()
            .zip(snapshots)
            .map(|(&owner, snapshot)| {
                let timers = self
                    .timers
                    .of_owner(owner)
                    .into_iter()
                    .map(|(id, at)| (id, at.saturating_duration_since(now)))
                    .collect();
                Group::new(snapshot, timers)
            })
            .collect();
        let mut conns = Vec::new();
        let mut fds = Vec::new();
        let mut slots = Vec::new();
        for (slot, conn) in self.conns.iter().filter(|(_, conn)| carried(conn)) {
            let group = (!conn.is_closing())
                .then(|| owners.iter().position(|&o| o == conn.owner))
                .flatten()
                .map(|g| g as u32);
            let phase = match conn.phase {
                Phase::Open => CarriedPhase::Open,
                Phase::Connecting { deadline } => {
                    CarriedPhase::Connecting(deadline.saturating_duration_since(now))
                }
                Phase::Failed(error) => CarriedPhase::Failed(error_code(error)),
                Phase::Closing { deadline } => {
                    CarriedPhase::Closing(deadline.saturating_duration_since(now))
                }
                Phase::Handshaking { .. } => unreachable!("not carried"),
            };
            let mut carried = CarriedConn::new(
                conn.id,
                conn.peer,
                group,
                phase,
                flags_of(conn),
                conn.out.pending().to_vec(),
            );
            carried.unread.clone_from(&conn.ring.unread);
            conns.push(carried);
            fds.push(conn.stream.as_raw_fd());
            slots.push(slot);
        }
        Packed {
            parcel: Parcel {
                generations: self.conns.generations(),
                groups,
                conns,
            },
            kept: self.conns.len() - slots.len(),
            fds,
            slots,
        }
    }

    /// The new process has the connections in `slots` (a [`Packed`]'s): they leave this table
    /// without a word to their peers (out of epoll first: the new process's
    /// descriptors keep the sockets, and epoll watches a socket, not a descriptor),
    /// and the timers of the owners in `owners` that hold nothing here any more are
    /// disarmed (they went with the state; one still holding TLS connections keeps
    /// its own for them).
    pub fn release_packed(&mut self, slots: &[usize], owners: &[Owner]) {
        for &slot in slots {
            if let (Some(registry), Some(conn)) = (&self.registry, self.conns.slot_mut(slot))
                && !conn.ring.on
            {
                let _ = registry.deregister(&mut conn.stream);
            }
            self.remove(slot);
        }
        for &owner in owners {
            if self.owners.get(owner).conns == 0 {
                let disarmed = self.timers.clear_owner(owner);
                self.owners.timers_gone(owner, disarmed);
            }
        }
    }

    /// Takes in the connections an upgrade's old process handed over (`fds` in the
    /// order of `parcel.conns`), under their handles, each group's owned by the owner
    /// at its index in `owners`, with its timers armed. Before the loop's first
    /// connection. Returns each group: its owner, snapshot and handles.
    pub fn unpack(
        &mut self,
        parcel: Parcel,
        fds: Vec<OwnedFd>,
        owners: &[Owner],
    ) -> io::Result<Vec<CarriedGroup>> {
        let Parcel {
            generations,
            groups,
            conns,
        } = parcel;
        if fds.len() != conns.len() {
            return Err(io::Error::other(format!(
                "{} connections came with {} sockets",
                conns.len(),
                fds.len()
            )));
        }
        if owners.len() != groups.len() {
            return Err(io::Error::other(format!(
                "{} owners for {} groups of connections",
                owners.len(),
                groups.len()
            )));
        }
        let now = Instant::now();
        let mut by_group = vec![Vec::new(); groups.len()];
        let mut held = Vec::with_capacity(conns.len());
        for (carried, fd) in conns.into_iter().zip(fds) {
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true)?;
            let stream = TcpStream::from_std(std);
            let owner = carried.group.map_or(0, |g| owners[g as usize]);
            if let Some(group) = carried.group {
                by_group[group as usize].push(carried.id);
            }
            // A deadline is seconds away; one that cannot be (a damaged parcel) is now.
            let after = |left: Duration| now.checked_add(left).unwrap_or(now);
            let phase = match carried.phase {
                CarriedPhase::Open => Phase::Open,
                CarriedPhase::Connecting(left) => Phase::Connecting {
                    deadline: after(left),
                },
                CarriedPhase::Failed(code) => Phase::Failed(error_of(code)),
                CarriedPhase::Closing(left) => Phase::Closing {
                    deadline: after(left),
                },
            };
            let place = self.capacity.take_anyway();
            let mut conn = Connection::new(carried.id, stream, carried.peer, owner, phase, place);
            set_flags(&mut conn, carried.flags);
            conn.out = WriteBuffer::holding(carried.out);
            conn.ring.unread = carried.unread;
            held.push((carried.id, conn));
        }
        self.conns
            .restore(&generations, held)
            .map_err(io::Error::other)?;
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        let max_buffer = self.limits.max_buffer;
        for slot in slots {
            // On the ring (`--io uring`) unless its phase needs epoll's edges.
            let on_ring = self.onto_ring(slot);
            let conn = self.conns.slot_mut(slot).expect("just restored");
            if let (false, Some(registry)) = (on_ring, &self.registry) {
                let interest = Interest::READABLE | Interest::WRITABLE;
                registry.register(&mut conn.stream, Token(slot), interest)?;
            }
            self.buffered += conn.unsent() as u64;
            self.agenda.note(conn);
            if !conn.is_closing() {
                self.owners.conn_added(conn.owner);
            }
            // Whatever it was waiting for (room to write, a deadline) is looked at
            // in the first turn.
            if conn.reportable(max_buffer) || !conn.out.is_empty() || conn.is_closing() {
                self.agenda.enqueue(conn);
            }
        }
        let mut carried = Vec::with_capacity(groups.len());
        for ((group, &owner), conns) in groups.into_iter().zip(owners).zip(by_group) {
            for (id, left) in group.timers {
                if self.timers.set((owner, id), now, left) {
                    self.owners.timer_armed(owner);
                }
            }
            carried.push((owner, group.snapshot, conns));
        }
        Ok(carried)
    }
}

/// Whether an upgrade carries this connection: plain TCP, not a TLS one (its session
/// cannot leave the process) nor one in its handshake.
fn carried(conn: &Connection) -> bool {
    conn.tls.is_none() && !matches!(conn.phase, Phase::Handshaking { .. })
}

fn flags_of(conn: &Connection) -> Flags {
    Flags {
        readable: conn.readable,
        peer_closed: conn.peer_closed,
        eof_seen: conn.eof_seen,
        writable: conn.writable,
        want_read: conn.want_read,
        want_write: conn.want_write,
        notify_writable: conn.notify_writable,
        write_shut: conn.write_shut,
        fin_sent: conn.fin_sent,
        announce_connected: conn.announce_connected,
        heard: conn.heard,
    }
}

fn set_flags(conn: &mut Connection, flags: Flags) {
    conn.readable = flags.readable;
    conn.peer_closed = flags.peer_closed;
    conn.eof_seen = flags.eof_seen;
    conn.writable = flags.writable;
    conn.want_read = flags.want_read;
    conn.want_write = flags.want_write;
    conn.notify_writable = flags.notify_writable;
    conn.write_shut = flags.write_shut;
    conn.fin_sent = flags.fin_sent;
    conn.announce_connected = flags.announce_connected;
    conn.heard = flags.heard;
}
