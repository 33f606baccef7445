//! `loops_forever`: echoes until a chunk contains `TRIGGER`, then spins forever
//! inside the `handle` call.
//!
//! It exists to prove that the host's per-call deadline (epoch interruption)
//! cuts off a guest that never returns: the call traps, the instance is
//! replaced, and the host and the other connections keep going.

use std::hint::black_box;

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct LoopsForever;

impl Handler for LoopsForever {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if triggered(data) {
            spin();
        }
        io.write(conn, data);
    }
}

/// Never returns. The counter goes through `black_box`, so the optimiser cannot
/// prove the loop does nothing and must keep executing it.
fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

/// Whether a chunk holds the word `TRIGGER` (a short write arrives in one chunk).
fn triggered(data: &[u8]) -> bool {
    data.windows(7).any(|window| window == b"TRIGGER")
}

sandsock_sdk::serve!(LoopsForever);
