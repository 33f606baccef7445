//! `floods`: echoes until a chunk contains `TRIGGER`, then writes without end to
//! that connection, ignoring `would-block`.
//!
//! It exists to prove that the host bounds what it buffers per connection
//! (`--max-buffer`): past the bound `write` must answer `would-block` rather than
//! grow the host's memory, while the guest's other connections keep echoing.
//!
//! After the trigger, the connection's write interest is kept on with the raw
//! `set-interest`, so the host reports it `writable` in every batch (and
//! `data` whenever the client sends), and on each such event the guest makes
//! [`WRITES_PER_EVENT`] raw `write`s of a [`CHUNK`]-byte chunk and ignores the
//! answers. It queues nothing itself: its own memory stays flat. The chunk is
//! the byte `F` repeated.
//!
//! The other connections are served by the SDK as `echo` does. Because the SDK's
//! [`Handler`] never sees a `writable` event when it has nothing queued, this
//! guest exports its own `handle`: it floods for the events of flooding
//! connections and passes every other event to the SDK's runtime, which is what
//! `serve!` would have exported.

use std::cell::RefCell;
use std::collections::HashSet;

use sandsock_sdk::__private::Slot;
use sandsock_sdk::raw::{self, Event, io, kind};
use sandsock_sdk::{Conn, Handler, Io};

/// Bytes per raw `write`: the most the host takes in one call.
const CHUNK: usize = 64 * 1024;

/// Raw `write`s per event of a flooding connection: 4 MiB offered per event.
const WRITES_PER_EVENT: usize = 64;

thread_local! {
    /// What every flood write sends: allocated once, on first use (a `static`
    /// array would add its 64 KiB to the file).
    static FILLER: Vec<u8> = vec![b'F'; CHUNK];
    /// The connections that sent the trigger.
    static FLOODING: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
    /// The SDK's runtime for everything else, as `serve!` would keep it.
    static ECHO: Slot<Echo> = const { Slot::new() };
}

struct Floods;

impl raw::Guest for Floods {
    fn handle(events: Vec<Event>, input: Vec<u8>) {
        let for_the_sdk: Vec<Event> = FLOODING.with_borrow_mut(|flooding| {
            events
                .into_iter()
                .filter(|event| !flood_on(flooding, event))
                .collect()
        });
        // The SDK's `data` events still point into the same input.
        ECHO.with(|slot| slot.handle(|| Echo, for_the_sdk, input));
        // The SDK may have changed the interest of a flooding connection it read
        // to the end (end-of-stream turns reading off): keep writes reported.
        FLOODING.with_borrow(|flooding| {
            for &conn in flooding {
                io::set_interest(conn, true, true);
            }
        });
    }
}

/// Floods if `event` is input or room on a flooding connection, and then keeps it
/// from the SDK (true). A hangup ends the flood and goes on to the SDK, so that it
/// forgets the connection too.
fn flood_on(flooding: &mut HashSet<u64>, event: &Event) -> bool {
    match event.kind {
        kind::DATA | kind::EOF | kind::WRITABLE if flooding.contains(&event.conn) => {
            flood(event.conn);
            true
        }
        kind::HANGUP => {
            flooding.remove(&event.conn);
            false
        }
        _ => false,
    }
}

fn flood(conn: u64) {
    FILLER.with(|filler| {
        for _ in 0..WRITES_PER_EVENT {
            // Ignored on purpose: `would-block` is what this guest does not respect.
            let _ = io::write(conn, filler);
        }
    });
}

#[derive(Default)]
struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let already = FLOODING.with_borrow(|flooding| flooding.contains(&conn.raw()));
        if already {
            // The rest of the chunks read in the event that brought the trigger.
            return;
        }
        if triggered(data) {
            FLOODING.with_borrow_mut(|flooding| flooding.insert(conn.raw()));
            io::set_interest(conn.raw(), true, true);
            flood(conn.raw());
        } else {
            io.write(conn, data);
        }
    }

    fn on_eof(&mut self, io: &mut Io, conn: Conn) {
        // A flooding connection stays open until the host gives up on it.
        if !FLOODING.with_borrow(|flooding| flooding.contains(&conn.raw())) {
            io.close(conn);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        FLOODING.with_borrow_mut(|flooding| flooding.remove(&conn.raw()));
    }
}

/// Whether a chunk holds the word `TRIGGER` (a short write arrives in one chunk).
fn triggered(data: &[u8]) -> bool {
    data.windows(7).any(|window| window == b"TRIGGER")
}

sandsock_sdk::export_raw!(Floods);
