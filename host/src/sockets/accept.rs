//! New connections from the listeners. On epoll, a listener's edge is taken with
//! `accept4` until its queue is empty; on the ring (`--io uring`), each listener has
//! one multishot accept whose completions bring the new sockets, with no system
//! call of the loop's own. Either way a new connection is then admitted the same
//! way: within the connection limit, while the guest runs, TLS ones held for their
//! handshake first.
//!
//! Nagle's algorithm is off on every listener ([`no_delay`]) rather than on each
//! new socket: an accepted socket inherits it on Linux, which saves a system call
//! per connection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Instant;

use mio::net::TcpStream;
use tracing::{debug, warn};

use super::batch::Batch;
use super::connection::Phase;
use super::events::Event;
use super::handler::EventHandler;
use super::listener::Listener;
use super::net::Net;
use super::ring::Completion;
use crate::shared::rate_limit::RateLimit;

/// What admitting a connection touches in the loop.
pub struct Admission<'a, H> {
    /// The connections.
    pub net: &'a mut Net,
    /// Says whether the guest runs, and which instance a connection goes to.
    pub handler: &'a mut H,
    /// The turn's batch: an `accepted` event for each new connection.
    pub batch: &'a mut Batch,
    /// Set when accepting failed (out of descriptors): the loop tries again soon.
    pub retry: &'a mut bool,
    /// Keeps the warnings about refused connections to a few a second.
    pub refused: &'a mut RateLimit,
}

/// Answers are small and come in one write: Nagle's algorithm would only delay
/// them. Set on a listener, it holds for every connection accepted from it.
pub fn no_delay(listener: &Listener) -> io::Result<()> {
    socket2::SockRef::from(&listener.socket).set_tcp_nodelay(true)
}

impl<H: EventHandler> Admission<'_, H> {
    /// Accepts every pending connection of one listener (edge-triggered: until
    /// `WouldBlock`).
    pub fn accept(&mut self, listener: &Listener) {
        loop {
            match listener.socket.accept() {
                Ok((stream, peer)) => self.admit(listener, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.failed(&e),
            }
        }
    }

    /// An accept failed: out of descriptors, most likely. The queue stays, so the
    /// loop comes back soon.
    fn failed(&mut self, error: &io::Error) {
        *self.retry = true;
        if self.refused.allow() {
            warn!(%error, "accept failed; retrying shortly");
        }
    }

    /// Takes a new connection in and adds an `accepted` event for it to the batch,
    /// or closes it at once (past the connection limit, or while the guest is
    /// down); a TLS connection is held by the host for its handshake first.
    fn admit(&mut self, listener: &Listener, stream: TcpStream, peer: SocketAddr) {
        let net = &mut *self.net;
        // Dropping `stream` (at a `return`) closes it, and dropping `place` gives
        // the place back.
        let Some(place) = net.capacity().take() else {
            net.counters_mut().refused_at_limit += 1;
            if self.refused.allow() {
                warn!(
                    limit = net.capacity().max(),
                    "connection limit reached; closing new connections at once"
                );
            }
            return;
        };
        if !self.handler.accepting() {
            net.counters_mut().refused_guest_down += 1;
            if self.refused.allow() {
                warn!(
                    "the guest is not running (backing off after traps); closing new connections"
                );
            }
            return;
        }
        if let Some(server) = &listener.tls {
            let deadline = Instant::now() + server.handshake_timeout();
            match server
                .session()
                .and_then(|tls| net.insert_tls(stream, peer, tls, deadline, place))
            {
                Ok(id) => {
                    net.counters_mut().accepted += 1;
                    debug!(
                        conn = id,
                        %peer,
                        "accepted; TLS handshake under way"
                    );
                }
                Err(e) => warn!(error = %e, "cannot take a new connection"),
            }
            return;
        }
        let owner = self.handler.owner_for_new_connection();
        match net.insert(stream, peer, owner, Phase::Open, place) {
            Ok(id) => {
                net.counters_mut().accepted += 1;
                debug!(conn = id, %peer, "accepted");
                self.batch.push(owner, Event::Accepted(id));
            }
            Err(e) => warn!(error = %e, "cannot take a new connection"),
        }
    }
}

/// The listeners' multishot accepts on the ring: which are armed. A multishot
/// accept ends on an error (out of descriptors: armed again after a pause, as
/// epoll's accept is retried), when cancelled (the loop paused or shutting down),
/// and now and then on its own (armed again at once).
#[derive(Debug, Default)]
pub struct RingAccepts {
    armed: Vec<bool>,
}

impl RingAccepts {
    /// Arms the accept of every listener that has none.
    pub fn arm(&mut self, listeners: &[Listener], net: &mut Net) {
        self.armed.resize(listeners.len(), false);
        for (index, listener) in listeners.iter().enumerate() {
            if !self.armed[index] {
                net.ring_accept(listener.socket.as_raw_fd(), index);
                self.armed[index] = true;
            }
        }
    }

    /// Cancels every armed accept (to pause, or to shut down). Connections the
    /// kernel accepted before the cancel still come, and are admitted.
    pub fn cancel(&mut self, net: &mut Net) {
        for (index, _) in self.armed.iter().enumerate().filter(|(_, armed)| **armed) {
            net.ring_cancel_accept(index);
        }
    }

    /// Whether no accept is armed any more: the loop takes no new connection.
    pub fn idle(&self) -> bool {
        !self.armed.contains(&true)
    }

    /// Takes the last wait's accept completions: each new socket admitted (or
    /// closed, when its listener is gone or `refusing`: the guest heard
    /// `shutdown`), and each accept that ended armed again unless `stopped`
    /// (paused, or shutting down) or it failed (then the loop's retry arms it).
    pub fn completed<H: EventHandler>(
        &mut self,
        listeners: &[Listener],
        admission: &mut Admission<'_, H>,
        stopped: bool,
        refusing: bool,
    ) {
        let done = admission.net.take_accepts();
        for completion in &done {
            self.one(completion, listeners, admission, stopped, refusing);
        }
        admission.net.put_accepts(done);
    }

    fn one<H: EventHandler>(
        &mut self,
        done: &Completion,
        listeners: &[Listener],
        admission: &mut Admission<'_, H>,
        stopped: bool,
        refusing: bool,
    ) {
        let index = done.id as usize;
        let listener = listeners.get(index).filter(|_| !refusing);
        if done.result >= 0 {
            // SAFETY: the kernel made this descriptor for this completion; nothing
            // else owns it.
            let stream = unsafe { std::net::TcpStream::from_raw_fd(done.result) };
            // A multishot accept says nothing of the peer: the socket does (the
            // guest's `peer` answers for as long as the handle lives). A peer that
            // reset the connection already is not taken in.
            match (listener, stream.peer_addr()) {
                (Some(listener), Ok(peer)) => {
                    admission.admit(listener, TcpStream::from_std(stream), peer);
                }
                // Or its listener closed at a shutdown since, or the guest heard
                // `shutdown`: the client is refused.
                _ => drop(stream),
            }
        }
        if done.more() {
            return;
        }
        if let Some(armed) = self.armed.get_mut(index) {
            *armed = false;
        }
        let Some(listener) = listener else {
            return;
        };
        // A cancelled accept is armed again too when the loop was un-paused before
        // the cancel completed.
        if done.result < 0 && done.result != -libc::ECANCELED {
            admission.failed(&io::Error::from_raw_os_error(-done.result));
        } else if !stopped {
            admission
                .net
                .ring_accept(listener.socket.as_raw_fd(), index);
            self.armed[index] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::listener::bind_all;

    #[test]
    fn accepted_sockets_inherit_no_delay_from_their_listener() {
        let any = "127.0.0.1:0".parse().unwrap();
        let socket = bind_all(&[any], 16, 1).unwrap().remove(0).remove(0);
        let listener = Listener { socket, tls: None };
        no_delay(&listener).unwrap();
        let client = std::net::TcpStream::connect(listener.socket.local_addr().unwrap()).unwrap();
        let accepted = loop {
            match listener.socket.accept() {
                Ok((accepted, _)) => break accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(
            accepted.nodelay().unwrap(),
            "Linux copies it to the new socket"
        );
        assert!(!client.nodelay().unwrap(), "and only there");
    }
}
