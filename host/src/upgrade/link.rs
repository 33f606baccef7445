//! [`Link`]: the socket pair between an old host process and the new one it starts,
//! and the frames they exchange on it: `kind`, `u32` length, payload, with file
//! descriptors (the listening sockets) riding on a frame's first bytes.
//!
//! A stream socket, not a datagram one: the store handed over can be larger than a
//! datagram may be. File descriptors travel with the 5-byte head of their frame
//! (`SCM_RIGHTS`, at most [`MAX_FDS_PER_FRAME`] per frame, the kernel's limit), so
//! the reader always finds them on the `recvmsg` that reads a head.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// The kernel passes at most this many descriptors in one message (`SCM_MAX_FD`).
pub const MAX_FDS_PER_FRAME: usize = 253;
/// The largest frame accepted: a `--store memory` snapshot is the big one; a larger
/// one is refused by the old process before it says go (the upgrade fails, and the
/// old process serves on).
pub const MAX_FRAME: usize = 1 << 30;
const HEAD: usize = 5;

/// What a frame says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Old → new: what is handed over (JSON), with the listening sockets.
    Handover = 1,
    /// New → old: the guest is loaded; the new process can take the traffic.
    Ready = 2,
    /// Old → new: it stopped accepting; serve (JSON), a [`Kind::Store`] frame may follow.
    Go = 3,
    /// New → old: it accepts connections now.
    Serving = 4,
    /// New → old: it cannot go on; the payload says why, in one line.
    Failed = 5,
    /// Old → new: the `--store memory` snapshot.
    Store = 6,
    /// Old → new: one worker's connections (a parcel), with the first of their sockets.
    Conns = 7,
    /// Old → new: more sockets of the parcel before.
    Fds = 8,
    /// New → old: it has every connection handed over, and touches none until
    /// [`Kind::Released`].
    Taken = 9,
    /// Old → new: the connections are the new process's now; this one lets them go.
    Released = 10,
}

impl Kind {
    fn from_byte(byte: u8) -> io::Result<Self> {
        Ok(match byte {
            1 => Self::Handover,
            2 => Self::Ready,
            3 => Self::Go,
            4 => Self::Serving,
            5 => Self::Failed,
            6 => Self::Store,
            7 => Self::Conns,
            8 => Self::Fds,
            9 => Self::Taken,
            10 => Self::Released,
            other => return Err(invalid(format!("unknown frame kind {other}"))),
        })
    }
}

/// One frame as read.
#[derive(Debug)]
pub struct Frame {
    /// What it says.
    pub kind: Kind,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// The descriptors that came with it, in the order they were sent.
    pub fds: Vec<OwnedFd>,
}

/// One end of the socket pair.
#[derive(Debug)]
pub struct Link {
    stream: UnixStream,
}

impl Link {
    /// A connected pair: the first end stays with the old process, the second goes
    /// to the new one (both close on exec: the spawn duplicates the second onto the
    /// descriptor the new process is told of).
    pub fn pair() -> io::Result<(Link, OwnedFd)> {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Link::from_fd(ours), theirs))
    }

    /// This end, from its descriptor.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self {
            stream: UnixStream::from(fd),
        }
    }

    /// The process at the other end, as the kernel saw it connect: (pid, uid).
    pub fn peer(&self) -> io::Result<(u32, u32)> {
        let cred = rustix::net::sockopt::socket_peercred(&self.stream)?;
        Ok((cred.pid.as_raw_nonzero().get() as u32, cred.uid.as_raw()))
    }

    /// Reads and writes block at most this long (`None`: for ever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)
    }

    /// For the supervisor's poll.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Sends one frame; `fds` in batches of [`MAX_FDS_PER_FRAME`] is the caller's job.
    pub fn send(&mut self, kind: Kind, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS_PER_FRAME {
            return Err(invalid(format!(
                "{} descriptors in one frame (the most is {MAX_FDS_PER_FRAME})",
                fds.len()
            )));
        }
        let len = u32::try_from(payload.len()).map_err(|_| invalid("frame too large".into()))?;
        let mut head = [0u8; HEAD];
        head[0] = kind as u8;
        head[1..].copy_from_slice(&len.to_le_bytes());
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_FRAME))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(invalid(
                "the descriptors do not fit the control buffer".into(),
            ));
        }
        let sent = loop {
            match rustix::net::sendmsg(
                &self.stream,
                &[IoSlice::new(&head)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(sent) => break sent,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        // The descriptors went with the first byte; the rest of the head, if the
        // kernel took less (it does not for five bytes), goes plainly.
        self.stream.write_all(&head[sent..])?;
        self.stream.write_all(payload)
    }

    /// Reads one frame of at most `max` bytes. End of stream (the other process
    /// closed its end, or died) is `UnexpectedEof`.
    pub fn recv(&mut self, max: usize) -> io::Result<Frame> {
        let mut head = [0u8; HEAD];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_FRAME))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match rustix::net::recvmsg(
                &self.stream,
                &mut [IoSliceMut::new(&mut head)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(msg) => break msg.bytes,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame in time"));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other process closed the link",
            ));
        }
        self.stream.read_exact(&mut head[got..])?;
        let kind = Kind::from_byte(head[0])?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > max.min(MAX_FRAME) {
            return Err(invalid(format!(
                "a frame of {len} bytes (the most is {max})"
            )));
        }
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload)?;
        Ok(Frame { kind, payload, fds })
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    #[test]
    fn frames_carry_bytes_and_descriptors() {
        let (mut old, theirs) = Link::pair().unwrap();
        let mut new = Link::from_fd(theirs);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        old.send(Kind::Handover, b"{}", &[listener.as_fd()])
            .unwrap();
        // Larger than the socket's buffer: written while the other end reads.
        let writer = std::thread::spawn(move || {
            old.send(Kind::Store, &vec![7u8; 3_000_000], &[]).unwrap();
            old
        });
        let frame = new.recv(MAX_FRAME).unwrap();
        assert_eq!(frame.kind, Kind::Handover);
        assert_eq!(frame.payload, b"{}");
        assert_eq!(frame.fds.len(), 1);
        assert_ne!(frame.fds[0].as_raw_fd(), listener.as_raw_fd());
        let passed = TcpListener::from(frame.fds.into_iter().next().unwrap());
        assert_eq!(passed.local_addr().unwrap(), addr, "the same socket");
        let big = new.recv(MAX_FRAME).unwrap();
        assert_eq!((big.kind, big.payload.len()), (Kind::Store, 3_000_000));
        let old = writer.join().unwrap();
        let (pid, uid) = new.peer().unwrap();
        assert_eq!(pid, std::process::id());
        assert_eq!(uid, rustix::process::getuid().as_raw());
        drop(old);
        let end = new.recv(MAX_FRAME).unwrap_err();
        assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn too_many_descriptors_is_an_error_not_a_truncation() {
        let (mut old, _theirs) = Link::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fds = vec![listener.as_fd(); MAX_FDS_PER_FRAME + 1];
        assert!(old.send(Kind::Handover, b"", &fds).is_err());
    }
}
