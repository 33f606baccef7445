//! `too_big_to_start`: an echo whose linear memory starts 8 MiB larger than an echo's.
//!
//! It compiles and fits the `handler` world, but under a `--max-memory` below its
//! initial size it cannot even be instantiated: the host's hot swap must refuse it
//! as failing to start, keep the serving generation, and try it again (and refuse
//! it again) at the next reload rather than take it for the one serving.

use sandsock_sdk::{Conn, Handler, Io};

/// Zero-initialised, so it costs the component file nothing, but the linker counts
/// it in the memory the instance starts with.
static mut BALLAST: [u8; 8 << 20] = [0; 8 << 20];

#[derive(Default)]
struct TooBigToStart;

impl Handler for TooBigToStart {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        // Keeps the ballast from being dropped as unused.
        std::hint::black_box(&raw const BALLAST);
        io.write(conn, data);
    }
}

sandsock_sdk::serve!(TooBigToStart);
