//! `grows_memory`: echoes until a chunk contains `TRIGGER`, then allocates 1 MiB
//! blocks, touching each, and never frees them.
//!
//! It exists to prove that the host's cap on linear memory holds: the guest's
//! `memory.grow` is refused at the cap, the allocation fails, the Rust runtime
//! aborts (a trap), and the host replaces the instance instead of running out of
//! memory itself.
//!
//! Two more words show that the host names a trap's cause by its own call: `TRY`
//! asks for 1 GiB with `try_reserve`, which the cap refuses and the guest handles
//! (it answers `refused`), and `PANIC` then panics: an ordinary trap, not an
//! out-of-memory one.

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
        if contains(data, b"TRIGGER") {
            hoard();
        }
        if contains(data, b"TRY") {
            let mut big: Vec<u8> = Vec::new();
            let answer: &[u8] = match big.try_reserve(1 << 30) {
                Ok(()) => b"reserved\n",
                Err(_) => b"refused\n",
            };
            io.write(conn, answer);
            return;
        }
        if contains(data, b"PANIC") {
            panic!("asked to panic after a refused allocation");
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

/// Whether a chunk holds `word` (a short write arrives in one chunk).
fn contains(data: &[u8], word: &[u8]) -> bool {
    data.windows(word.len()).any(|window| window == word)
}

sandsock_sdk::serve!(GrowsMemory);
