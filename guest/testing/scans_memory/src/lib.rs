//! `scans_memory`: looks through the whole of its linear memory for a marker.
//!
//! ```text
//! MARK  ->  MARKED    (the marker written into a static and into a leaked heap block)
//! SCAN  ->  FOUND n   (the copies of the marker in linear memory: 0 in a fresh instance)
//! ```
//!
//! It exists to prove that with an instance per connection (`--isolation
//! connection`) no connection's instance can read what another's left in memory,
//! however the host's pooling allocator reuses and resets memory slots between
//! them. The marker is never in the guest's data whole: `MARK` makes it from a key
//! (each byte XORed with a mask) and `SCAN` compares through the same mask, so the
//! only copies in memory are the ones written.

use sandsock_sdk::{Conn, Handler, Io};

/// The marker, each byte XORed with [`MASK`] (the marker is `sandsock-marker!`).
const KEY: [u8; 16] = *b");4>)591w7;(1?({";
const MASK: u8 = 0x5a;

/// Where `MARK` writes one copy; the other goes to the heap.
static mut SLOT: [u8; 16] = [0; 16];

fn marker() -> [u8; 16] {
    // Not a constant the compiler could fold into the data segment.
    std::hint::black_box(KEY).map(|b| b ^ MASK)
}

/// The linear memory's size in bytes (none natively, where `cargo test` builds the
/// workspace: nothing to scan there).
fn memory_bytes() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0) * 65536;
    #[cfg(not(target_arch = "wasm32"))]
    0
}

/// The copies of the marker in the whole linear memory.
fn count() -> usize {
    let size = memory_bytes();
    let mut found = 0;
    // Address 0 is never an object's; start past it.
    for at in 8..=size.saturating_sub(KEY.len()) {
        // SAFETY: every address below the memory's size is readable in wasm.
        let first = unsafe { core::ptr::read_volatile(at as *const u8) };
        if first ^ MASK != KEY[0] {
            continue;
        }
        let whole = (1..KEY.len()).all(|i| {
            // SAFETY: as above.
            let byte = unsafe { core::ptr::read_volatile((at + i) as *const u8) };
            byte ^ MASK == KEY[i]
        });
        found += usize::from(whole);
    }
    found
}

#[derive(Default)]
struct ScansMemory;

impl Handler for ScansMemory {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let answer = match data.trim_ascii() {
            b"MARK" => {
                // SAFETY: one thread; no reference to the static is taken.
                unsafe { core::ptr::write_volatile(&raw mut SLOT, marker()) };
                Box::leak(std::hint::black_box(Box::new(marker())));
                "MARKED\n".to_owned()
            }
            b"SCAN" => format!("FOUND {}\n", count()),
            _ => "ERROR unknown command\n".to_owned(),
        };
        io.write(conn, answer.as_bytes());
    }
}

sandsock_sdk::serve!(ScansMemory);
