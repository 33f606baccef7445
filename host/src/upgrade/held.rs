//! [`HeldSockets`]: the listening sockets a host process holds, by worker, and its
//! admin listener: what a binary upgrade hands to the new process, and what systemd
//! hands a socket-activated one.

use std::io;
use std::net::TcpListener as StdListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::link::{Kind, Link, MAX_FDS_PER_FRAME};
use crate::sockets::listener::Listener;
use crate::sockets::tls::TlsServer;

/// The most a handover's description may hold: a line per socket.
const HANDOVER_MAX: usize = 1 << 20;

/// One listening socket and whether it speaks TLS.
#[derive(Debug)]
pub struct HeldListener {
    /// The socket (the same one, duplicated, in every process that holds it).
    pub fd: OwnedFd,
    /// A `--listen-tls` address.
    pub tls: bool,
}

/// Every listening socket of a process.
#[derive(Debug, Default)]
pub struct HeldSockets {
    /// By worker, in the order its loop registers them (plain, then TLS).
    pub workers: Vec<Vec<HeldListener>>,
    /// The admin listener, with `--admin`.
    pub admin: Option<OwnedFd>,
}

impl HeldSockets {
    /// Duplicates of the workers' listeners and of the admin listener: an upgrade
    /// hands these over while the loops go on with their own.
    pub fn duplicate(listeners: &[Vec<Listener>], admin: Option<&StdListener>) -> Result<Self> {
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .context("cannot duplicate a listening socket")
        };
        let workers = listeners
            .iter()
            .map(|worker| {
                worker
                    .iter()
                    .map(|l| {
                        Ok(HeldListener {
                            fd: dup(l.socket.as_fd())?,
                            tls: l.tls.is_some(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let admin = admin.map(|a| dup(a.as_fd())).transpose()?;
        Ok(Self { workers, admin })
    }

    /// How many descriptors.
    pub fn count(&self) -> usize {
        self.workers.iter().map(Vec::len).sum::<usize>() + usize::from(self.admin.is_some())
    }

    /// Sends them, with `about` (what else the new process should know), as one
    /// [`Kind::Handover`] frame of description and as many frames as the
    /// descriptors need.
    pub fn send(&self, link: &mut Link, mut about: Value) -> io::Result<()> {
        let tls: Vec<Vec<bool>> = self
            .workers
            .iter()
            .map(|w| w.iter().map(|l| l.tls).collect())
            .collect();
        about["workers"] = json!(tls);
        about["admin"] = json!(self.admin.is_some());
        let fds: Vec<BorrowedFd<'_>> = self
            .workers
            .iter()
            .flatten()
            .map(|l| l.fd.as_fd())
            .chain(self.admin.as_ref().map(|a| a.as_fd()))
            .collect();
        let mut batches = fds.chunks(MAX_FDS_PER_FRAME);
        let first = batches.next().unwrap_or(&[]);
        link.send(Kind::Handover, about.to_string().as_bytes(), first)?;
        for batch in batches {
            link.send(Kind::Handover, b"", batch)?;
        }
        Ok(())
    }

    /// Receives what [`HeldSockets::send`] sent: the sockets, and the description.
    pub fn recv(link: &mut Link) -> Result<(Self, Value)> {
        let frame = link
            .recv(HANDOVER_MAX)
            .context("no handover from the old process")?;
        if frame.kind != Kind::Handover {
            bail!(
                "the old process sent {:?} where a handover belongs",
                frame.kind
            );
        }
        let about: Value = serde_json::from_slice(&frame.payload)
            .context("the old process's handover is not JSON")?;
        let shape: Vec<Vec<bool>> = serde_json::from_value(about["workers"].clone())
            .context("the old process's handover has no workers")?;
        let admin = about["admin"].as_bool().unwrap_or(false);
        let expected = shape.iter().map(Vec::len).sum::<usize>() + usize::from(admin);
        let mut fds = frame.fds;
        while fds.len() < expected {
            let more = link
                .recv(HANDOVER_MAX)
                .context("the handover ended early")?;
            if more.kind != Kind::Handover || more.fds.is_empty() {
                bail!(
                    "the handover ended after {} of {expected} sockets",
                    fds.len()
                );
            }
            fds.extend(more.fds);
        }
        if fds.len() != expected {
            bail!("the handover holds {} sockets, not {expected}", fds.len());
        }
        let mut fds = fds.into_iter();
        let workers = shape
            .iter()
            .map(|worker| {
                worker
                    .iter()
                    .map(|&tls| HeldListener {
                        fd: fds.next().expect("counted"),
                        tls,
                    })
                    .collect()
            })
            .collect();
        let admin = if admin { fds.next() } else { None };
        Ok((Self { workers, admin }, about))
    }

    /// The workers' listeners, non-blocking, TLS ones with `tls`; and the admin
    /// listener. Blocking mode is the open socket's, shared with the process that
    /// handed it over: only non-blocking is ever set, which both sides use.
    pub fn into_listeners(
        self,
        tls: Option<&TlsServer>,
    ) -> Result<(Vec<Vec<Listener>>, Option<StdListener>)> {
        let workers = self
            .workers
            .into_iter()
            .map(|worker| {
                worker
                    .into_iter()
                    .map(|held| {
                        let socket = StdListener::from(held.fd);
                        socket
                            .set_nonblocking(true)
                            .context("cannot make a listening socket non-blocking")?;
                        let tls = match (held.tls, tls) {
                            (false, _) => None,
                            (true, Some(server)) => Some(server.clone()),
                            (true, None) => bail!(
                                "a TLS listening socket was handed over, and this process has no certificate (--tls-cert, --tls-key)"
                            ),
                        };
                        Ok(Listener {
                            socket: mio::net::TcpListener::from_std(socket),
                            tls,
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((workers, self.admin.map(StdListener::from)))
    }

    /// Whether any listener speaks TLS.
    pub fn has_tls(&self) -> bool {
        self.workers.iter().flatten().any(|l| l.tls)
    }
}
