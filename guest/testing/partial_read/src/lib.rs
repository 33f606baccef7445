//! `partial_read`: proves that the host's readiness is level-triggered, as contract
//! 0.4 promised it (1.0 has no `read`: the host reads for the guest).
//!
//! Written against the raw interface of `sandsock:net@0.4.0` (its own bindings of
//! `wit/0.4.0/`), so the host serves it through its adapter for 0.4: the hot-swap
//! tests that use it swap between contracts too. On each `readable` event it makes a single
//! `read` of at most 7 bytes and writes them back; it never reads until
//! `would-block`. A client that sends 100 bytes at once therefore gets all 100
//! back only if the host reports `readable` again while bytes are left, which an
//! edge-triggered host would not do: the echo would stall after 7 bytes.
//!
//! Bytes the host does not accept are kept and retried on the connection's next
//! event; reading pauses meanwhile, so at most 7 bytes wait. At end-of-stream the
//! connection is closed.
//!
//! It is also the host tests' guest without state: `export_raw!` without `with
//! state` makes a component of the plain `handler` world, so a hot swap with
//! `--swap handoff` hands its connections over with nothing but what the host
//! holds. An `adopted` connection is read again from scratch; bytes an old
//! generation was still retrying are lost.

use std::cell::RefCell;
use std::collections::HashMap;

wit_bindgen::generate!({
    path: "../../../wit/0.4.0",
    world: "handler",
});

use sandsock::net::io;
use sandsock::net::types::{ReadResult, WriteResult};

/// Bytes read per `readable` event: small, and not a divisor of typical message
/// sizes, so any message needs several events.
const READ_SIZE: u32 = 7;

/// Handle of a connection, as the raw interface has it.
type Conn = u64;

thread_local! {
    /// Bytes read but not yet accepted by the host, per connection.
    static UNSENT: RefCell<HashMap<Conn, Vec<u8>>> = RefCell::new(HashMap::new());
}

struct PartialRead;

impl Guest for PartialRead {
    fn handle(events: Vec<Event>) {
        UNSENT.with_borrow_mut(|unsent| {
            for event in events {
                match event {
                    // Interest starts as readable only, which is all this needs.
                    Event::Accepted(_)
                    | Event::Connected(_)
                    | Event::Timer(_)
                    | Event::Shutdown => {}
                    Event::Readable(conn) => readable(unsent, conn),
                    Event::Writable(conn) => retry(unsent, conn),
                    // Nothing of the old generation came along (no `state`), and its
                    // interest may have been writable only: read again.
                    Event::Adopted(conn) => io::set_interest(conn, true, false),
                    Event::Hangup(info) => {
                        unsent.remove(&info.conn);
                    }
                }
            }
        });
    }
}

/// One read of at most [`READ_SIZE`] bytes, written straight back.
fn readable(unsent: &mut HashMap<Conn, Vec<u8>>, conn: Conn) {
    if unsent.contains_key(&conn) {
        // Reading is paused, but this event was already on its way.
        return retry(unsent, conn);
    }
    match io::read(conn, READ_SIZE) {
        ReadResult::Data(bytes) => send(unsent, conn, &bytes),
        // Nothing is waiting (checked above), so closing loses nothing.
        ReadResult::Eof => {
            io::close(conn);
        }
        // `would-block`: nothing to do. A failure: the host's `hangup` follows.
        ReadResult::WouldBlock | ReadResult::Failed(_) => {}
    }
}

/// Writes `bytes`; keeps what the host did not take and waits for `writable`.
fn send(unsent: &mut HashMap<Conn, Vec<u8>>, conn: Conn, bytes: &[u8]) {
    let taken = match io::write(conn, bytes) {
        WriteResult::Accepted(n) => (n as usize).min(bytes.len()),
        WriteResult::WouldBlock => 0,
        // Reset: `hangup` follows. Anything else: nothing this guest can do.
        WriteResult::Failed(_) => return,
    };
    if taken < bytes.len() {
        unsent.insert(conn, bytes[taken..].to_vec());
        io::set_interest(conn, false, true);
    }
}

/// Retries the unsent bytes of `conn`, and resumes reading once they are gone.
fn retry(unsent: &mut HashMap<Conn, Vec<u8>>, conn: Conn) {
    let Some(bytes) = unsent.remove(&conn) else {
        return;
    };
    send(unsent, conn, &bytes);
    if !unsent.contains_key(&conn) {
        io::set_interest(conn, true, false);
    }
}

export!(PartialRead);
