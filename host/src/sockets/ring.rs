//! [`Ring`]: `--io uring`'s way to the kernel. One io_uring per loop, and one
//! provided-buffer ring in it that every connection's receives share.
//!
//! What goes through it, for the connections on the ring (plain TCP; TLS and
//! outbound connects stay on epoll, see [`crate::sockets::net`]):
//! - one multishot receive per connection: the kernel picks a buffer from the
//!   provided-buffer ring for each piece that arrives, and the host copies the bytes
//!   out and gives the buffer back at once, so the buffers' memory is fixed per loop,
//!   not per connection;
//! - sends of what the guest wrote, cancels, and closes, queued as submissions;
//! - one multishot accept per listener, whose completions bring the new sockets;
//! - the loop's epoll (the waker, TLS and outbound sockets), watched by one multishot
//!   poll: the loop waits in one place.
//!
//! Every submission of a turn goes to the kernel in the one `io_uring_enter` that
//! also waits for the next completions (or, when the loop has work already, reaps
//! them without waiting).

use std::alloc::{Layout, alloc_zeroed};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};

use crate::shared::wit::Conn;

/// Entries of the submission queue; completions get twice as many.
const RING_ENTRIES: u32 = 4096;
/// Buffers in the provided-buffer ring (a power of two), and the size of each:
/// 8 MiB per loop, however many connections it has (the kernel takes them in
/// turn, so a busy loop soon has all of them resident).
const BUFFERS: u16 = 512;
/// Each receive completes with at most this many bytes.
const BUFFER_SIZE: usize = 16 << 10;
/// The buffer group every provided-buffer ring here registers as.
pub const BUFFER_GROUP: u16 = 0;
/// `IORING_ENTER_GETEVENTS`: an enter with it runs the completions' deferred work.
const ENTER_GETEVENTS: u32 = 1;

/// What a completion is for: the top byte of its `user_data`, the connection's
/// handle (53 bits at most) below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A connection's multishot receive.
    Receive,
    /// A connection's send.
    Send,
    /// The multishot poll on the loop's epoll.
    Epoll,
    /// A listener's multishot accept (the id is the listener's index).
    Accept,
    /// A cancel or a close: nothing to do when it completes.
    Quiet,
}

impl Op {
    const fn bits(self) -> u64 {
        (match self {
            Op::Receive => 1,
            Op::Send => 2,
            Op::Epoll => 3,
            Op::Accept => 4,
            Op::Quiet => 0,
        }) << 56
    }

    fn of(user_data: u64) -> Self {
        match user_data >> 56 {
            1 => Op::Receive,
            2 => Op::Send,
            3 => Op::Epoll,
            4 => Op::Accept,
            _ => Op::Quiet,
        }
    }
}

fn tag(op: Op, id: Conn) -> u64 {
    op.bits() | id
}

/// One completion, as the loop handles it.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// What it completes.
    pub op: Op,
    /// The connection it is for (`Receive` and `Send`).
    pub id: Conn,
    /// The kernel's result: bytes, or a negated errno.
    pub result: i32,
    /// The completion's flags (more to come, the buffer picked).
    pub flags: u32,
}

impl Completion {
    /// Whether a multishot request goes on after this completion.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer the kernel filled, if any.
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// The ring, its buffers, and what waits to be submitted.
pub struct Ring {
    ring: IoUring,
    /// The loop's epoll, watched by a multishot poll.
    epoll: RawFd,
    buffers: ProvidedBuffers,
    /// Submissions that did not fit in the submission queue; handed over at the
    /// next enter, before waiting.
    overflow: Vec<squeue::Entry>,
    /// The bytes of sends still in flight for connections that are gone, by
    /// handle, freed when their completion comes.
    orphans: Vec<(Conn, Vec<u8>)>,
    /// The completions of the last enter.
    done: Vec<Completion>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("overflow", &self.overflow.len())
            .field("orphans", &self.orphans.len())
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring for one loop, disabled until [`Ring::enable`] on the loop's own thread
    /// (one thread submits: `SINGLE_ISSUER`), watching `epoll` from the start.
    pub fn new(epoll: RawFd) -> io::Result<Self> {
        let ring = build(RING_ENTRIES)?;
        let buffers = ProvidedBuffers::register(&ring, BUFFERS, BUFFER_SIZE)?;
        let mut this = Self {
            ring,
            epoll,
            buffers,
            overflow: Vec::new(),
            orphans: Vec::new(),
            done: Vec::with_capacity(RING_ENTRIES as usize * 2),
        };
        this.watch_epoll();
        Ok(this)
    }

    /// Lets the calling thread (the loop's) submit from now on.
    pub fn enable(&mut self) -> io::Result<()> {
        self.ring.submitter().register_enable_rings()
    }

    /// Queues a submission.
    fn push(&mut self, entry: squeue::Entry) {
        if !self.overflow.is_empty() {
            self.overflow.push(entry);
            return;
        }
        // SAFETY: every buffer an entry points at (a connection's bytes in flight)
        // stays put until its completion: see [`Ring::bury`].
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.overflow.push(entry);
        }
    }

    /// Watches the loop's epoll: a completion whenever one of its sockets is ready.
    fn watch_epoll(&mut self) {
        let poll = opcode::PollAdd::new(Fd(self.epoll), libc::POLLIN as u32).multi(true);
        self.push(poll.build().user_data(tag(Op::Epoll, 0)));
    }

    /// Starts a connection's multishot receive.
    pub fn receive(&mut self, fd: RawFd, id: Conn) {
        let receive = opcode::RecvMulti::new(Fd(fd), BUFFER_GROUP).build();
        self.push(receive.user_data(tag(Op::Receive, id)));
    }

    /// Starts a listener's multishot accept: a completion for each new connection,
    /// its result the new socket's descriptor (non-blocking, close-on-exec). It
    /// says nothing of the peer's address: the socket does.
    pub fn accept(&mut self, fd: RawFd, index: usize) {
        let accept = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build();
        self.push(accept.user_data(tag(Op::Accept, index as u64)));
    }

    /// Sends `bytes` on a connection.
    ///
    /// # Safety
    /// `bytes` must stay where they are, untouched, until the send's completion
    /// comes (or, if the connection goes first, be given to [`Ring::bury`]).
    pub unsafe fn send(&mut self, fd: RawFd, id: Conn, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let send = opcode::Send::new(Fd(fd), bytes.as_ptr(), len).flags(libc::MSG_NOSIGNAL);
        self.push(send.build().user_data(tag(Op::Send, id)));
    }

    /// Cancels a connection's receive or send, or a listener's accept.
    pub fn cancel(&mut self, op: Op, id: u64) {
        let cancel = opcode::AsyncCancel::new(tag(op, id)).build();
        self.push(cancel.user_data(tag(Op::Quiet, 0)));
    }

    /// Closes a descriptor the ring's requests may still refer to (they are
    /// cancelled first: the kernel keeps the socket open while a request holds it).
    pub fn close(&mut self, fd: RawFd) {
        let close = opcode::Close::new(Fd(fd)).build();
        self.push(close.user_data(tag(Op::Quiet, 0)));
    }

    /// Keeps the bytes of a send in flight for a connection that is gone, until
    /// its completion ([`Ring::unbury`]).
    pub fn bury(&mut self, id: Conn, bytes: Vec<u8>) {
        self.orphans.push((id, bytes));
    }

    /// Frees the bytes of a gone connection's send, whose completion came.
    pub fn unbury(&mut self, id: Conn) {
        if let Some(i) = self.orphans.iter().position(|(of, _)| *of == id) {
            self.orphans.swap_remove(i);
        }
    }

    /// Hands the kernel every queued submission, then waits for completions for up
    /// to `timeout` (`None`: until one comes; zero: not at all, only reaping what
    /// is done), and keeps them for [`Ring::take_done`]. True when the loop's epoll
    /// has something to report.
    pub fn enter(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        // A full completion queue (EBUSY) is reaped first; the rest waits a turn.
        while !self.overflow.is_empty() && self.submit_some()? {}
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(Duration::ZERO) => {
                let pending = self.ring.submission().len() as u32;
                // SAFETY: no argument; GETEVENTS with no minimum only runs the
                // completions' deferred work.
                unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(pending, 0, ENTER_GETEVENTS, None)
                }
            }
            Some(wait) => {
                let ts = Timespec::from(wait);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.done.clear();
        let (mut epoll, mut rewatch) = (false, false);
        for cqe in self.ring.completion() {
            let user_data = cqe.user_data();
            let op = Op::of(user_data);
            if op == Op::Epoll {
                epoll = true;
                rewatch |= !cqueue::more(cqe.flags());
                continue;
            }
            self.done.push(Completion {
                op,
                id: user_data & ((1 << 56) - 1),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
        if rewatch {
            self.watch_epoll();
        }
        Ok(epoll)
    }

    /// Submits what fits of the overflow, without waiting; false when the kernel
    /// is busy (its completion queue full).
    fn submit_some(&mut self) -> io::Result<bool> {
        let mut taken = 0;
        {
            let mut sq = self.ring.submission();
            for entry in &self.overflow {
                // SAFETY: as in [`Ring::push`].
                if unsafe { sq.push(entry) }.is_err() {
                    break;
                }
                taken += 1;
            }
        }
        self.overflow.drain(..taken);
        match self.ring.submit() {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The last enter's completions, to go through (and give back with
    /// [`Ring::put_done`], keeping their memory).
    pub fn take_done(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.done)
    }

    /// Gives back the list [`Ring::take_done`] lent.
    pub fn put_done(&mut self, mut done: Vec<Completion>) {
        done.clear();
        self.done = done;
    }

    /// Appends the bytes of provided buffer `bid` (`len` of them) to `to`, and
    /// gives the buffer back to the kernel.
    pub fn take_bytes(&mut self, bid: u16, len: usize, to: &mut Vec<u8>) {
        to.extend_from_slice(self.buffers.bytes(bid, len));
        self.buffers.give_back(bid);
    }

    /// Gives provided buffer `bid` back unread.
    pub fn give_back(&mut self, bid: u16) {
        self.buffers.give_back(bid);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The last turn's cancels and closes: without them a connection closed in
        // the loop's last turn would keep its socket open until the process exits.
        while !self.overflow.is_empty() && self.submit_some().unwrap_or(false) {}
        let _ = self.ring.submit();
        // The kernel tears a ring down after its descriptor closes, and may still
        // write into buffers or read sends until then: their memory is left to the
        // process's end (a loop's ring goes when its loop does, at the exit).
        std::mem::forget(std::mem::take(&mut self.orphans));
        std::mem::forget(std::mem::take(&mut self.buffers.memory));
    }
}

/// Builds a ring one thread submits to and reaps from, whose completions' work the
/// kernel runs when that thread enters to wait (`DEFER_TASKRUN`, 6.1 and later),
/// rather than interrupting it whenever a packet comes in; disabled until its
/// thread enables it.
fn build(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(entries * 2)
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .setup_r_disabled()
        .build(entries)
}

/// Whether this kernel, and whatever filters its system calls, lets `--io uring`
/// run: `Err` names what is missing, in a few words.
pub fn probe() -> Result<(), String> {
    let ring = build(8).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            "io_uring_setup is not permitted ({e}): a seccomp profile (most container runtimes' default) or the kernel.io_uring_disabled sysctl refuses it"
        ),
        Some(libc::ENOSYS) => format!("this kernel has no io_uring ({e})"),
        Some(libc::EINVAL) => format!(
            "this kernel's io_uring lacks SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1 and later) ({e})"
        ),
        _ => format!("cannot set up an io_uring ({e})"),
    })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("cannot ask io_uring what it supports ({e})"))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "receive"),
        (opcode::Send::CODE, "send"),
        (opcode::AsyncCancel::CODE, "cancel"),
        (opcode::Close::CODE, "close"),
        (opcode::PollAdd::CODE, "poll"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(format!("this kernel's io_uring has no {name} operation"));
        }
    }
    let buffers = ProvidedBuffers::register(&ring, BUFFERS, BUFFER_SIZE).map_err(|e| {
        format!("this kernel's io_uring has no provided-buffer rings (Linux 5.19 and later) ({e})")
    })?;
    drop(ring);
    // SAFETY: the ring that knew the entries is gone, and it did no I/O.
    unsafe { buffers.free() };
    Ok(())
}

/// A provided-buffer ring (group [`BUFFER_GROUP`]): the kernel takes a buffer for
/// each receive and says which; its owner copies the bytes out and gives the
/// buffer back. The loop's, and the benchmarks' io_uring floor's.
pub struct ProvidedBuffers {
    entries: *mut BufRingEntry,
    layout: Layout,
    memory: Vec<u8>,
    /// Buffers (a power of two), and the size of each.
    count: u16,
    size: usize,
    tail: u16,
}

// SAFETY: the raw pointer is to memory this value owns, used only by the thread that
// owns the loop (which moves, with the ring, to its thread before its first use).
unsafe impl Send for ProvidedBuffers {}

impl ProvidedBuffers {
    /// `count` buffers (a power of two) of `size` bytes, registered with `ring`
    /// and all handed to the kernel. Their memory must outlive the ring: see the
    /// `Drop` of [`Ring`].
    pub fn register(ring: &IoUring, count: u16, size: usize) -> io::Result<Self> {
        assert!(
            count.is_power_of_two(),
            "a buffer ring's size is a power of two"
        );
        let entries_size = usize::from(count) * size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(entries_size, 4096).map_err(io::Error::other)?;
        // SAFETY: a non-zero size.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut this = Self {
            entries,
            layout,
            memory: vec![0; usize::from(count) * size],
            count,
            size,
            tail: 0,
        };
        // SAFETY: the entries are page aligned, `count` long, and live until the
        // ring is gone.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries as u64,
                count,
                BUFFER_GROUP,
                0,
            )?;
        }
        for bid in 0..count {
            this.give_back(bid);
        }
        Ok(this)
    }

    /// The bytes the kernel put in buffer `bid` (`len` of them).
    pub fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid % self.count) * self.size;
        &self.memory[start..start + len.min(self.size)]
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index` is below `count`; the new tail is published with a
        // release store after the entry is written, as the kernel's protocol asks.
        unsafe {
            let entry = &mut *self.entries.add(index);
            let start = usize::from(bid % self.count) * self.size;
            entry.set_addr(self.memory.as_ptr().add(start) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Frees the entries' memory.
    ///
    /// # Safety
    /// No ring may use them any more.
    unsafe fn free(self) {
        // SAFETY: allocated in `register` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.entries.cast(), self.layout) };
    }
}

/// How a loop talks to the kernel (`--io`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Io {
    /// epoll, through mio: any Linux, any seccomp profile.
    #[default]
    Epoll,
    /// io_uring for the plain TCP connections' I/O: fewer system calls a request;
    /// Linux 6.1 and later, where io_uring is permitted.
    Uring,
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

    use super::*;

    /// A ring on a fresh epoll, enabled on this thread, and a connected pair of
    /// sockets: the host's side and the peer's.
    fn ring_and_pair() -> (mio::Poll, Ring, TcpStream, TcpStream) {
        let poll = mio::Poll::new().unwrap();
        let mut ring = Ring::new(poll.as_raw_fd()).unwrap();
        ring.enable().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (host, _) = listener.accept().unwrap();
        (poll, ring, host, peer)
    }

    /// Enters until a completion for `op` comes (at most a second of waiting).
    fn wait_for(ring: &mut Ring, op: Op) -> Completion {
        for _ in 0..100 {
            ring.enter(Some(Duration::from_millis(10))).unwrap();
            if let Some(done) = ring.take_done().into_iter().find(|c| c.op == op) {
                return done;
            }
        }
        panic!("no {op:?} completion");
    }

    #[test]
    fn a_receive_brings_the_bytes_in_a_provided_buffer_and_goes_on() {
        let (_poll, mut ring, host, mut peer) = ring_and_pair();
        ring.receive(host.as_raw_fd(), 7);
        for word in [&b"hello"[..], b"again"] {
            peer.write_all(word).unwrap();
            let done = wait_for(&mut ring, Op::Receive);
            assert_eq!((done.id, done.result), (7, 5));
            assert!(done.more(), "one multishot receive serves every arrival");
            let mut bytes = Vec::new();
            ring.take_bytes(done.buffer().expect("a buffer"), 5, &mut bytes);
            assert_eq!(bytes, word);
        }
        drop(peer);
        let end = wait_for(&mut ring, Op::Receive);
        assert_eq!(end.result, 0, "the peer's end");
        assert!(!end.more());
    }

    #[test]
    fn a_send_then_a_cancel_and_close_reach_the_peer_in_order() {
        let (_poll, mut ring, host, mut peer) = ring_and_pair();
        ring.receive(host.as_raw_fd(), 3);
        let bytes = b"answer".to_vec();
        // SAFETY: `bytes` stays until the send's completion, awaited below.
        unsafe { ring.send(host.as_raw_fd(), 3, &bytes) };
        let sent = wait_for(&mut ring, Op::Send);
        assert_eq!((sent.id, sent.result), (3, 6));
        ring.cancel(Op::Receive, 3);
        ring.close(host.into_raw_fd());
        let cancelled = wait_for(&mut ring, Op::Receive);
        assert_eq!(cancelled.result, -libc::ECANCELED);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"answer", "the bytes, then the end");
    }

    #[test]
    fn a_multishot_accept_brings_each_connection_until_cancelled() {
        let poll = mio::Poll::new().unwrap();
        let mut ring = Ring::new(poll.as_raw_fd()).unwrap();
        ring.enable().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ring.accept(listener.as_raw_fd(), 2);
        for _ in 0..2 {
            let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let done = wait_for(&mut ring, Op::Accept);
            assert_eq!(done.id, 2, "the listener's index");
            assert!(done.more(), "one multishot accept serves every connection");
            // SAFETY: the completion's descriptor is new and nobody else's.
            let mut accepted = unsafe { TcpStream::from_raw_fd(done.result) };
            assert_eq!(
                accepted.peer_addr().unwrap(),
                peer.local_addr().unwrap(),
                "the peer's address is the socket's to say"
            );
            peer.write_all(b"hi").unwrap();
            let mut got = [0; 2];
            accepted.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"hi");
        }
        ring.cancel(Op::Accept, 2);
        let cancelled = wait_for(&mut ring, Op::Accept);
        assert_eq!(cancelled.result, -libc::ECANCELED);
        assert!(!cancelled.more());
    }

    #[test]
    fn the_loops_epoll_wakes_the_ring() {
        let (mut poll, mut ring, _host, _peer) = ring_and_pair();
        let waker = mio::Waker::new(poll.registry(), mio::Token(1)).unwrap();
        let mut events = mio::Events::with_capacity(4);
        assert!(
            !ring.enter(Some(Duration::from_millis(10))).unwrap(),
            "nothing yet"
        );
        for _ in 0..2 {
            waker.wake().unwrap();
            let woken = (0..100).any(|_| ring.enter(Some(Duration::from_millis(10))).unwrap());
            assert!(woken, "a wake through epoll reaches the ring's wait");
            // The loop reads epoll's events then, without waiting.
            poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
            assert_eq!(events.iter().count(), 1);
        }
    }

    #[test]
    fn this_kernel_passes_the_probe() {
        probe().unwrap();
    }
}
