//! The new process's side of a binary upgrade ([`Predecessor`]): take the listening
//! sockets from the old process, say when the guest is loaded, take the memory store
//! and (handover) the connections, which it puts in place and touches only once the
//! old process has released them (`Taken`, then `Released`); and (drain) say when it
//! serves. Until then, the old process does.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tracing::{info, warn};

use super::binary::LINK_FD_VAR;
use super::hand_over::PROTOCOL;
use super::held::HeldSockets;
use super::link::{Kind, Link, MAX_FRAME};
use crate::sockets::parcel::Parcel;

/// How long the old process may take to answer: it answers from its supervisor,
/// which has nothing else to wait on.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most the old process's go may hold (the store comes in a frame of its own).
const MAX_WORD: usize = 64 * 1024;
/// Descriptors kept free beside those handed over: the store's, the guest
/// loader's, a few more connections.
const SPARE_FILES: u64 = 64;
/// The oldest handover protocol this binary takes over from (1 drains).
const OLDEST_PROTOCOL: u64 = 1;
/// How long a new process whose link ended waits to see its parent change (the
/// old process died) before it takes the end for the old process's choice.
const REPARENT_WAIT: Duration = Duration::from_secs(1);

/// The link to the old process, in a process an upgrade started.
#[derive(Debug)]
pub struct Predecessor {
    link: Option<Link>,
    pid: u32,
    /// Upgrades before this one, in the line of processes that served.
    upgrades: u64,
}

/// What the old process handed over when it stopped accepting.
#[derive(Debug, Default)]
pub struct Carried {
    /// `--store memory`'s keys and values.
    pub store: Option<Vec<u8>>,
    /// Milliseconds from the upgrade's start to the new process's readiness, as the
    /// old process measured them.
    pub ready_ms: Option<u64>,
    /// Milliseconds from the upgrade's start to the old process's go (it had
    /// stopped accepting and snapshotted the store by then).
    pub go_ms: Option<u64>,
    /// When the old process's go arrived.
    pub at: Option<std::time::Instant>,
    /// Each worker's connections (`--upgrade handover`), with their sockets in the
    /// parcel's order; empty when the old process drains.
    pub parcels: Vec<(Parcel, Vec<OwnedFd>)>,
}

impl Predecessor {
    /// The link and the sockets, if an upgrade started this process; an error if the
    /// link is not from this process's parent and user.
    pub fn from_env() -> Result<Option<(Self, HeldSockets)>> {
        let Some(value) = std::env::var_os(LINK_FD_VAR) else {
            return Ok(None);
        };
        let raw: i32 = value
            .to_str()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{LINK_FD_VAR}={value:?} is not a descriptor number"))?;
        // It must be a socket, or it is not the link (an unrelated descriptor
        // inherited by accident): taking it would close someone else's file.
        // SAFETY: fstat writes one stat struct; a descriptor that is not open is EBADF.
        let is_socket = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(raw, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
        };
        if !is_socket {
            bail!(
                "{LINK_FD_VAR}={raw} is not an open socket: was this process started by a host upgrade?"
            );
        }
        // SAFETY: the descriptor is open and a socket (checked above), and the old
        // process put it there for this process alone; it is taken once, here.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // It came without close-on-exec (to cross the exec): a process this one
        // starts (its own upgrade) must not inherit it.
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
            .context("cannot set up the upgrade link")?;
        let mut link = Link::from_fd(fd);
        match Self::take(&mut link) {
            Ok((pid, upgrades, held)) => Ok(Some((
                Self {
                    link: Some(link),
                    pid,
                    upgrades,
                },
                held,
            ))),
            Err(error) => {
                // The old process logs why, in its own words.
                let line = format!("{error:#}");
                let _ = link.send(Kind::Failed, line.as_bytes(), &[]);
                Err(error)
            }
        }
    }

    /// Checks the link's peer and takes the sockets: (its pid, the upgrades before
    /// this one, the sockets).
    fn take(link: &mut Link) -> Result<(u32, u64, HeldSockets)> {
        let (pid, uid) = link.peer().context("cannot read the upgrade link's peer")?;
        let parent = parent_pid();
        // SO_PEERCRED gives the effective uid the peer had when it made the pair.
        let own_uid = rustix::process::geteuid().as_raw();
        if pid != parent || uid != own_uid {
            bail!(
                "the upgrade link's peer is pid {pid} (uid {uid}), not this process's parent {parent} (uid {own_uid}): refusing its sockets"
            );
        }
        link.set_timeout(Some(ANSWER_TIMEOUT))?;
        let (held, about) = HeldSockets::recv(link)?;
        let protocol = about["protocol"].as_u64().unwrap_or(0);
        if !(OLDEST_PROTOCOL..=PROTOCOL).contains(&protocol) {
            bail!(
                "the old process hands over in protocol {protocol}, and this binary speaks {OLDEST_PROTOCOL} to {PROTOCOL}: upgrade through a version that speaks both, or restart"
            );
        }
        info!(
            from = pid,
            sockets = held.count(),
            "upgrade: took the listening sockets from the old process"
        );
        Ok((pid, about["upgrades"].as_u64().unwrap_or(0), held))
    }

    /// The old process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Upgrades before the one that started this process.
    pub fn upgrades_before(&self) -> u64 {
        self.upgrades
    }

    /// Tells the old process the guest is loaded, and waits for it to stop accepting
    /// and hand over the memory store and (one parcel per worker of `workers`) its
    /// connections, which this process touches only after [`Predecessor::taken`].
    /// If the old process went away meanwhile, this one serves anyway: it holds the
    /// sockets.
    pub fn ready(&mut self, workers: usize) -> Result<Carried> {
        let Some(link) = self.link.as_mut() else {
            return Ok(Carried::default());
        };
        link.send(Kind::Ready, b"", &[])
            .context("cannot tell the old process this one is ready")?;
        let go = match link.recv(MAX_WORD) {
            Ok(frame) if frame.kind == Kind::Go => frame,
            Ok(frame) => bail!("the old process sent {:?} where go belongs", frame.kind),
            Err(e) if ended(&e) => {
                // Its parent still being the old process, the old process gave the
                // upgrade up (and serves on); otherwise it died, and this one serves.
                if self.old_lives() {
                    bail!("the old process gave the upgrade up before it handed over");
                }
                warn!(
                    old = self.pid,
                    "upgrade: the old process went away before it handed over; serving anyway"
                );
                self.link = None;
                return Ok(Carried::default());
            }
            Err(e) => return Err(e).context("no word from the old process"),
        };
        let at = std::time::Instant::now();
        let about: Value = serde_json::from_slice(&go.payload).unwrap_or_default();
        let store = if about["store"].as_bool() == Some(true) {
            let frame = link
                .recv(MAX_FRAME)
                .context("the memory store was not handed over")?;
            if frame.kind != Kind::Store {
                bail!(
                    "the old process sent {:?} where the store belongs",
                    frame.kind
                );
            }
            Some(frame.payload)
        } else {
            None
        };
        let parcels = about["parcels"].as_u64().unwrap_or(0) as usize;
        let parcels = if parcels == 0 {
            Vec::new()
        } else {
            if parcels != workers {
                bail!(
                    "the old process hands over the connections of {parcels} workers, and this one runs {workers}"
                );
            }
            let connections = about["connections"].as_u64().unwrap_or(0);
            check_open_files(connections)?;
            (0..parcels)
                .map(|worker| take_parcel(link, worker))
                .collect::<Result<Vec<_>>>()?
        };
        Ok(Carried {
            store,
            ready_ms: about["ready_ms"].as_u64(),
            go_ms: about["go_ms"].as_u64(),
            at: Some(at),
            parcels,
        })
    }

    /// With connections handed over (`carried` of them, in place in the loops, not
    /// yet touched): tells the old process this one has them all, and waits for it
    /// to let them go. From its answer on they are this process's alone; until
    /// then the old process may still take the upgrade back (an error here: this
    /// process exits, having touched nothing). If the old process died meanwhile,
    /// nobody else holds them: this one serves them.
    pub fn taken(&mut self, carried: usize) -> Result<()> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let at = std::time::Instant::now();
        link.send(Kind::Taken, b"", &[])
            .context("cannot tell the old process its connections were taken")?;
        match link.recv(MAX_WORD) {
            Ok(frame) if frame.kind == Kind::Released => {}
            Ok(frame) => bail!(
                "the old process sent {:?} where its release belongs",
                frame.kind
            ),
            Err(e) if ended(&e) => {
                // The old process gives up only by killing this one first: alive
                // here, it died, and nobody else holds the connections.
                if self.old_lives() {
                    bail!("the old process gave the upgrade up before it let the connections go");
                }
                warn!(
                    old = self.pid,
                    "upgrade: the old process went away before it let the connections go; serving them"
                );
            }
            Err(e) => return Err(e).context("no release from the old process"),
        }
        // The old process lets them go and exits once its TLS connections are done:
        // it has nothing more to hear.
        self.link = None;
        info!(
            old = self.pid,
            connections = carried,
            released_ms = crate::shared::metrics::millis(at.elapsed()),
            "upgrade: took the connections of the old process"
        );
        Ok(())
    }

    /// Tells the old process this one accepts connections now; the link ends.
    pub fn serving(&mut self) {
        if let Some(mut link) = self.link.take()
            && let Err(e) = link.send(Kind::Serving, b"", &[])
        {
            warn!(error = %e, "upgrade: cannot tell the old process this one serves");
        }
    }

    /// Tells the old process why this one cannot go on (it keeps serving).
    pub fn fail(&mut self, error: &anyhow::Error) {
        if let Some(mut link) = self.link.take() {
            let line = format!("{error:#}").replace('\n', " ");
            let _ = link.send(Kind::Failed, line.as_bytes(), &[]);
        }
    }
}

/// One worker's parcel and every socket that comes with it.
fn take_parcel(link: &mut Link, worker: usize) -> Result<(Parcel, Vec<OwnedFd>)> {
    let frame = link
        .recv(MAX_FRAME)
        .with_context(|| format!("worker {worker}'s connections were not handed over"))?;
    if frame.kind != Kind::Conns {
        bail!(
            "the old process sent {:?} where worker {worker}'s connections belong",
            frame.kind
        );
    }
    let parcel = Parcel::decode(&frame.payload)
        .map_err(|e| anyhow::anyhow!("worker {worker}'s connections cannot be read: {e}"))?;
    let mut fds = frame.fds;
    while fds.len() < parcel.conns.len() {
        let more = link.recv(MAX_WORD).with_context(|| {
            format!(
                "worker {worker}'s sockets stopped at {} of {}",
                fds.len(),
                parcel.conns.len()
            )
        })?;
        if more.kind != Kind::Fds || more.fds.is_empty() {
            bail!(
                "worker {worker}'s sockets stopped at {} of {}",
                fds.len(),
                parcel.conns.len()
            );
        }
        fds.extend(more.fds);
    }
    if fds.len() != parcel.conns.len() {
        bail!(
            "worker {worker}'s {} connections came with {} sockets",
            parcel.conns.len(),
            fds.len()
        );
    }
    Ok((parcel, fds))
}

/// Refuses, before any is taken, connections that would not fit under this
/// process's open-file limit: the old process keeps them then.
fn check_open_files(connections: u64) -> Result<()> {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let needed = open + connections + SPARE_FILES;
    if needed > limit {
        bail!(
            "{connections} connections are handed over and this process may open {limit} files ({open} open already): raise its open-file limit (ulimit -n, LimitNOFILE=)"
        );
    }
    Ok(())
}

impl Predecessor {
    /// Whether the old process still lives, once its link has ended: a process
    /// that dies closes its descriptors before this one is given a new parent, so
    /// the parent is looked at for a moment before it is believed.
    fn old_lives(&self) -> bool {
        let deadline = std::time::Instant::now() + REPARENT_WAIT;
        while parent_pid() == self.pid {
            if std::time::Instant::now() >= deadline {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// Whether a read's error means the link ended: its end, or a reset when the old
/// process died with bytes of this one's unread.
fn ended(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    )
}

/// This process's parent (0 when it has none).
fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}
