//! `leaks`: echoes each line, and leaks 256 KiB of memory per line (touched, so
//! every page is really used), as a guest toolchain that never frees a buffer does.
//! `COUNT` answers `served N`: the lines served so far, kept in its `state`, so that
//! an instance that takes over (a recycle, a handoff) goes on counting.
//!
//! It exists to prove that recycling (`--recycle-at-memory`) renews such a guest
//! before it runs out of memory, without closing a connection or losing its state.

use std::hint::black_box;

use sandsock_sdk::{BadSnapshot, Conn, Handler, Io, LineBuffers, trim_line_end};

/// Bytes leaked per line.
const LEAK: usize = 256 * 1024;
/// Bytes between two writes into a leaked block: one per wasm page.
const PAGE: usize = 64 * 1024;

/// The longest line: a test sends short ones.
const MAX_LINE: usize = 1024;

struct Leaks {
    /// Unfinished lines are not in the snapshot: the test waits for each answer.
    lines: LineBuffers,
    served: u64,
}

impl Default for Leaks {
    fn default() -> Self {
        Self {
            lines: LineBuffers::new(MAX_LINE),
            served: 0,
        }
    }
}

impl Handler for Leaks {
    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        self.served.to_le_bytes().to_vec()
    }

    fn restore(&mut self, _io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| BadSnapshot::new("not a count"))?;
        self.served += u64::from_le_bytes(bytes);
        Ok(())
    }

    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let Self { lines, served } = self;
        let _ = lines.feed(conn, data, |line| {
            if trim_line_end(line) == b"COUNT" {
                io.write(conn, format!("served {served}\n").as_bytes());
                return;
            }
            *served += 1;
            leak();
            io.write(conn, line);
        });
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.lines.forget(conn);
    }
}

/// Allocates a block, touches every page, and never frees it.
fn leak() {
    let block: &'static mut [u8] = vec![0u8; LEAK].leak();
    for page in block.chunks_mut(PAGE) {
        page[0] = black_box(1);
    }
    // The block escapes, so the compiler cannot drop the allocation as unused.
    black_box(block);
}

sandsock_sdk::serve!(Leaks);
