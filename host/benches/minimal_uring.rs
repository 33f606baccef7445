//! The io_uring floor: the minimal HTTP/1.1 server of `minimal_http.rs` on io_uring
//! instead of epoll, written for the benchmarks and nothing else. It answers exactly
//! what the mio one answers; what differs is how it talks to the kernel:
//!
//! - one multishot accept on the listener: one submission for every connection;
//! - per connection, one multishot receive into a ring of buffers the kernel picks
//!   from (a provided-buffer ring shared by every connection: its memory is fixed,
//!   not per connection), copied out and handed back at once;
//! - sends, cancels and closes queued as submissions, and every submission of a turn
//!   handed to the kernel in the one `io_uring_enter` that also waits for the next
//!   completions.
//!
//! So a keep-alive request costs no syscall of its own: its receive completion and
//! its send submission ride on the turn's single enter, where epoll needs a read, a
//! write and a share of `epoll_wait`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::types::Fd;
use io_uring::{IoUring, cqueue, opcode, squeue};

use sandsock::sockets::ring::{BUFFER_GROUP, ProvidedBuffers};

use super::minimal_http::answer;

/// Set (to an address) in the environment of a benchmark's own binary when it runs
/// as the minimal io_uring server.
pub const SERVE_AT: &str = "SANDSOCK_BENCH_MINIMAL_URING";

/// Entries of the submission queue (completions: twice as many).
const RING_ENTRIES: u32 = 4096;
/// Buffers in the provided-buffer ring, and the size of each: 8 MiB in all, for
/// every connection together.
const BUFFERS: u16 = 2048;
const BUFFER_SIZE: usize = 4096;

/// What a completion is for: the low byte of its `user_data`; the slot and the
/// slot's generation (so that a late completion for a reused slot is ignored) above.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const IGNORED: u64 = 3;

struct Conn {
    fd: RawFd,
    generation: u32,
    input: Vec<u8>,
    /// Answers queued while a send is in flight.
    output: Vec<u8>,
    /// The bytes of the send in flight: they stay put until it completes.
    sending: Vec<u8>,
    close_after_output: bool,
    /// The multishot receive is armed.
    receiving: bool,
    closing: bool,
}

fn tag(kind: u64, slot: usize, generation: u32) -> u64 {
    kind | (slot as u64) << 8 | u64::from(generation) << 32
}

/// A ring one thread submits to and reaps from: the kernel runs the completions'
/// work when that thread enters to wait for them (`DEFER_TASKRUN`, 6.1 and later),
/// not by interrupting it whenever a packet comes in.
fn ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(entries * 2)
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(entries)
}

/// Serves on `addr` for ever, printing `listening on ADDR` to stderr as the host does.
pub fn serve(addr: SocketAddr) -> ! {
    let listener = TcpListener::bind(addr).expect("bind");
    let mut ring = ring(RING_ENTRIES).expect("an io_uring");
    let mut buffers =
        ProvidedBuffers::register(&ring, BUFFERS, BUFFER_SIZE).expect("a provided-buffer ring");
    eprintln!(
        "listening on {}",
        listener.local_addr().expect("local address")
    );
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut generation = 0u32;
    let mut queue: Vec<squeue::Entry> = Vec::new();
    queue.push(
        opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .build()
            .user_data(tag(ACCEPT, 0, 0)),
    );
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(RING_ENTRIES as usize * 2);
    loop {
        submit(&mut ring, &mut queue);
        done.extend(
            ring.completion()
                .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
        );
        for (data, result, flags) in done.drain(..) {
            let (kind, slot, of) = (
                data & 0xff,
                (data >> 8 & 0xff_ffff) as usize,
                (data >> 32) as u32,
            );
            if kind == ACCEPT {
                if result >= 0 {
                    generation = generation.wrapping_add(1);
                    let slot = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    set_nodelay(result);
                    conns[slot] = Some(Conn {
                        fd: result,
                        generation,
                        input: Vec::new(),
                        output: Vec::new(),
                        sending: Vec::new(),
                        close_after_output: false,
                        receiving: true,
                        closing: false,
                    });
                    queue.push(receive(result, slot, generation));
                }
                if !cqueue::more(flags) {
                    queue.push(
                        opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
                            .build()
                            .user_data(tag(ACCEPT, 0, 0)),
                    );
                }
                continue;
            }
            if kind == IGNORED {
                continue;
            }
            let Some(conn) = conns
                .get_mut(slot)
                .and_then(Option::as_mut)
                .filter(|c| c.generation == of)
            else {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    buffers.give_back(bid);
                }
                continue;
            };
            let open = match kind {
                RECV => on_receive(conn, &mut buffers, result, flags, slot, &mut queue),
                _ => on_sent(conn, result, slot, &mut queue),
            };
            if !open && !conn.closing {
                close(conn, slot, &mut queue);
            }
            if conn.closing && !conn.receiving && conn.sending.is_empty() {
                conns[slot] = None;
                free.push(slot);
            }
        }
    }
}

/// Hands the kernel every queued submission and waits for at least one completion:
/// one `io_uring_enter` a turn.
fn submit(ring: &mut IoUring, queue: &mut Vec<squeue::Entry>) {
    loop {
        let mut pushed = 0;
        {
            let mut sq = ring.submission();
            for entry in queue.iter() {
                // SAFETY: every buffer an entry points at (a connection's `sending`)
                // stays put until its completion.
                if unsafe { sq.push(entry) }.is_err() {
                    break;
                }
                pushed += 1;
            }
        }
        queue.drain(..pushed);
        if queue.is_empty() {
            break;
        }
        // The queue was full: hand these over without waiting, then the rest.
        if let Err(e) = ring.submit()
            && e.raw_os_error() != Some(libc::EBUSY)
        {
            panic!("io_uring_enter: {e}");
        }
    }
    match ring.submit_and_wait(1) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => panic!("io_uring_enter: {e}"),
    }
}

fn receive(fd: RawFd, slot: usize, generation: u32) -> squeue::Entry {
    opcode::RecvMulti::new(Fd(fd), BUFFER_GROUP)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(tag(RECV, slot, generation))
}

/// Bytes (or the end) arrived: answers every complete request; false when the
/// connection is done.
fn on_receive(
    conn: &mut Conn,
    buffers: &mut ProvidedBuffers,
    result: i32,
    flags: u32,
    slot: usize,
    queue: &mut Vec<squeue::Entry>,
) -> bool {
    if !cqueue::more(flags) {
        conn.receiving = false;
    }
    // The buffer first: whatever else the completion says, it goes back.
    let bytes = cqueue::buffer_select(flags).map(|bid| {
        let len = usize::try_from(result).unwrap_or(0);
        conn.input.extend_from_slice(buffers.bytes(bid, len));
        buffers.give_back(bid);
    });
    if conn.closing {
        // Its descriptor is closed (its number may be another connection's by now):
        // nothing more goes out on it.
        return false;
    }
    if result == -libc::ENOBUFS {
        // Every buffer was taken: receive again once some are back.
        if !conn.closing {
            conn.receiving = true;
            queue.push(receive(conn.fd, slot, conn.generation));
        }
        return true;
    }
    if result <= 0 || bytes.is_none() {
        return false;
    }
    if !conn.receiving {
        conn.receiving = true;
        queue.push(receive(conn.fd, slot, conn.generation));
    }
    if !answer(
        &mut conn.input,
        &mut conn.output,
        &mut conn.close_after_output,
    ) {
        return false;
    }
    send(conn, slot, queue);
    true
}

/// Starts a send of what is queued, unless one is in flight.
fn send(conn: &mut Conn, slot: usize, queue: &mut Vec<squeue::Entry>) {
    if !conn.sending.is_empty() || conn.output.is_empty() {
        return;
    }
    std::mem::swap(&mut conn.sending, &mut conn.output);
    queue.push(send_entry(conn, slot));
}

/// A send of what `conn.sending` holds.
fn send_entry(conn: &Conn, slot: usize) -> squeue::Entry {
    opcode::Send::new(
        Fd(conn.fd),
        conn.sending.as_ptr(),
        conn.sending.len() as u32,
    )
    .build()
    .user_data(tag(SEND, slot, conn.generation))
}

/// A send completed: sends the rest, or what was queued meanwhile; false when the
/// connection is done.
fn on_sent(conn: &mut Conn, result: i32, slot: usize, queue: &mut Vec<squeue::Entry>) -> bool {
    if result < 0 || conn.closing {
        // A closing connection's descriptor may be another's by now: nothing more
        // goes out on it.
        conn.sending.clear();
        conn.output.clear();
        return false;
    }
    conn.sending.drain(..result as usize);
    if !conn.sending.is_empty() {
        queue.push(send_entry(conn, slot));
        return true;
    }
    send(conn, slot, queue);
    !(conn.close_after_output && conn.sending.is_empty())
}

/// Ends a connection: its receive cancelled, then its descriptor closed, both
/// queued (no syscall of their own).
fn close(conn: &mut Conn, slot: usize, queue: &mut Vec<squeue::Entry>) {
    conn.closing = true;
    if conn.receiving {
        queue.push(
            opcode::AsyncCancel::new(tag(RECV, slot, conn.generation))
                .build()
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(tag(IGNORED, 0, 0)),
        );
    }
    queue.push(
        opcode::Close::new(Fd(conn.fd))
            .build()
            .user_data(tag(IGNORED, 0, 0)),
    );
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a valid pointer.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
