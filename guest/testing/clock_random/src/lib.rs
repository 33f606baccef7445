//! `clock_random`: answers each chunk with the wall clock, the monotonic clock and
//! eight random bytes it was given, then the chunk:
//! `wall=1796000000123456789 mono=123456 random=9f3a0c1d2e4b5a69 ping`.
//!
//! It exists to prove that a replay gives a guest back exactly the clocks and
//! random bytes it was given when recorded: two runs never write the same line,
//! so a replay agrees only if the tape's readings were used.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sandsock_sdk::{Conn, Handler, Io};

struct ClockRandom {
    started: Instant,
}

impl Default for ClockRandom {
    fn default() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

impl Handler for ClockRandom {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let mono = self.started.elapsed().as_nanos();
        // A fresh `RandomState` per chunk: its keys come from the host's random
        // bytes, so the hash of one fixed value is random too.
        let random = RandomState::new().hash_one(0u8);
        io.write(
            conn,
            format!("wall={wall} mono={mono} random={random:016x} ").as_bytes(),
        );
        io.write(conn, data);
    }
}

sandsock_sdk::serve!(ClockRandom);
