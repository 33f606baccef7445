//! systemd: socket activation (`LISTEN_FDS`), and what a `Type=notify` service
//! tells its manager: ready, stopping, and which process is the service's main one
//! after an upgrade.
//!
//! Socket activation gives one socket per address, and every worker's loop listens
//! on a duplicate of it: the kernel wakes each loop that waits on the socket and
//! one of them wins each `accept` (the others find nothing), where `--listen` with
//! several workers gives each its own socket (`SO_REUSEPORT`) and spreads
//! connections without that extra wake-up.

use std::net::SocketAddr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use sd_notify::NotifyState;
use tracing::{debug, info};

use super::held::{HeldListener, HeldSockets};

/// The `FileDescriptorName=` that makes a socket the admin listener.
pub const ADMIN_NAME: &str = "admin";
/// The `FileDescriptorName=` that makes a socket a TLS listener.
pub const TLS_NAME: &str = "tls";

/// The sockets systemd passed this process, if it was socket-activated: each
/// worker gets a duplicate of every plain and TLS one (plain first, as `--listen`
/// comes before `--listen-tls`).
pub fn activated_sockets(workers: usize) -> Result<Option<HeldSockets>> {
    let passed: Vec<_> = sd_notify::listen_fds_with_names()
        .context("cannot read the sockets systemd passed (LISTEN_FDS, LISTEN_FDNAMES)")?
        .collect();
    if passed.is_empty() {
        return Ok(None);
    }
    let mut plain = Vec::new();
    let mut tls = Vec::new();
    let mut admin = None;
    for (raw, name) in passed {
        // SAFETY: systemd hands these descriptors to this process, which takes each
        // once, here; nothing else in the host knows of them.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = listening_address(&fd)
            .with_context(|| format!("the socket systemd passed as fd {raw} ({name})"))?;
        debug!(fd = raw, name, %addr, "socket from systemd");
        match name.as_str() {
            ADMIN_NAME if admin.is_none() => admin = Some(fd),
            ADMIN_NAME => bail!("systemd passed two sockets named `{ADMIN_NAME}`"),
            TLS_NAME => tls.push(fd),
            _ => plain.push(fd),
        }
    }
    let mut held = HeldSockets {
        workers: Vec::with_capacity(workers),
        admin,
    };
    let counts = (plain.len(), tls.len());
    let sockets: Vec<(OwnedFd, bool)> = (plain.into_iter().map(|fd| (fd, false)))
        .chain(tls.into_iter().map(|fd| (fd, true)))
        .collect();
    // Every worker but the last gets duplicates; the last, the sockets themselves.
    for _ in 1..workers {
        let mut listeners = Vec::with_capacity(sockets.len());
        for (fd, tls) in &sockets {
            let fd = fd
                .as_fd()
                .try_clone_to_owned()
                .context("cannot duplicate a socket systemd passed")?;
            listeners.push(HeldListener { fd, tls: *tls });
        }
        held.workers.push(listeners);
    }
    held.workers.push(
        sockets
            .into_iter()
            .map(|(fd, tls)| HeldListener { fd, tls })
            .collect(),
    );
    info!(
        plain = counts.0,
        tls = counts.1,
        admin = held.admin.is_some(),
        workers,
        "socket activation: serving on the sockets systemd passed"
    );
    Ok(Some(held))
}

/// The address a passed socket listens on; an error unless it is a listening TCP
/// socket.
fn listening_address(fd: &OwnedFd) -> Result<SocketAddr> {
    let socket = socket2::SockRef::from(fd);
    if !socket.is_listener().context("not a socket")? {
        bail!("it is not listening (ListenStream= makes a listening socket)");
    }
    socket
        .local_addr()
        .context("cannot read its address")?
        .as_socket()
        .context("it is not a TCP socket: the host serves TCP (ListenStream=ADDRESS:PORT)")
}

/// Tells systemd (when it started the host as `Type=notify`) that the host serves.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// Tells systemd the host is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Tells systemd that the service's main process is now `pid`: the new process of
/// an upgrade, which outlives this one.
pub fn main_pid(pid: u32) {
    let status = format!("upgraded: pid {pid} serves");
    notify(&[NotifyState::MainPid(pid), NotifyState::Status(&status)]);
}

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
