//! `grows_memory`: echoes until a chunk contains `TRIGGER`, then allocates 1 MiB
//! blocks, touching each, and never frees them.
//!
//! It exists to prove that the host's cap on linear memory holds: the guest's
//! `memory.grow` is refused at the cap, the allocation fails, the Rust runtime
//! aborts (a trap), and the host replaces the instance instead of running out of
//! memory itself.

use std::hint::black_box;

use sandsock_sdk::{Conn, Handler, Io};

/// The size of each block: large enough to reach any cap in a few dozen steps.
const BLOCK: usize = 1024 * 1024;

/// Bytes between two writes into a block: one per wasm page, so every page is
/// really used rather than merely reserved.
const PAGE: usize = 64 * 1024;

#[derive(Default)]
struct GrowsMemory;

impl Handler for GrowsMemory {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if triggered(data) {
            hoard();
        }
        io.write(conn, data);
    }
}

/// Allocates until allocation fails, which aborts: it never returns.
fn hoard() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Zeroed memory fresh from `memory.grow` may never be written: the writes
        // below make sure every page is.
        let mut block = vec![0u8; BLOCK];
        for page in block.chunks_mut(PAGE) {
            page[0] = black_box(1);
        }
        blocks.push(black_box(block));
        black_box(&blocks);
    }
}

/// Whether a chunk holds the word `TRIGGER` (a short write arrives in one chunk).
fn triggered(data: &[u8]) -> bool {
    data.windows(7).any(|window| window == b"TRIGGER")
}

sandsock_sdk::serve!(GrowsMemory);
