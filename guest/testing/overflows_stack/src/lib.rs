//! `overflows_stack`: echoes until a chunk contains `TRIGGER`, then recurses
//! without end.
//!
//! It exists to prove that a stack overflow in the guest is a trap the host
//! survives. Each frame is kept small (a 32-byte array on the shadow stack in
//! linear memory), so with wasmtime's default 512 KiB limit on the engine's
//! stack it is that limit that is hit first, and the trap reads `stack
//! overflow`: the limit that protects the host's own native stack. (With large
//! frames the guest's 1 MiB shadow stack would run out first instead, and the
//! trap would be an out-of-bounds memory access.)

use std::hint::black_box;

use sandsock_sdk::{Conn, Handler, Io};

/// `u64`s in each frame's array: a frame that is real, but small.
const FRAME_WORDS: usize = 4;

#[derive(Default)]
struct OverflowsStack;

impl Handler for OverflowsStack {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if triggered(data) {
            black_box(recurse(0));
        }
        io.write(conn, data);
    }
}

/// Recurses until the stack runs out. The argument and the result go through
/// `black_box`, and the frame's array is used after the call, so the optimiser
/// can neither turn this into a loop nor see that it never ends (the stop at
/// `u64::MAX` is never reached).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; FRAME_WORDS]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse(black_box(depth + 1));
    black_box(below.wrapping_add(frame[depth as usize % FRAME_WORDS]))
}

/// Whether a chunk holds the word `TRIGGER` (a short write arrives in one chunk).
fn triggered(data: &[u8]) -> bool {
    data.windows(7).any(|window| window == b"TRIGGER")
}

sandsock_sdk::serve!(OverflowsStack);
