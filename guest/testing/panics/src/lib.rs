//! `panics`: echoes until a chunk contains `TRIGGER`, then panics.
//!
//! It exists to prove that a guest panic (an abort, so a trap, with
//! `panic = "abort"`) never takes the host down: the instance is replaced, the
//! connections it owned are closed, the trap is logged with the panic message
//! `triggered`, and the listener keeps accepting.

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct Panics;

impl Handler for Panics {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if triggered(data) {
            panic!("triggered");
        }
        io.write(conn, data);
    }
}

/// Whether a chunk holds the word `TRIGGER` (a short write arrives in one chunk).
fn triggered(data: &[u8]) -> bool {
    data.windows(7).any(|window| window == b"TRIGGER")
}

sandsock_sdk::serve!(Panics);
