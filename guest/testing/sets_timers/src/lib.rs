//! `sets_timers`: echoes until a chunk contains `TRIGGER`, then arms timers with
//! new ids until the host refuses, and reports how many it got.
//!
//! It exists to prove that the host bounds the timers one guest may have armed
//! (`--max-timers`): `set-timer` must answer `limit-exceeded` at the limit rather
//! than let a guest grow the host's timer wheel without end. The reply is one
//! line, then the guest goes on echoing:
//!
//! ```text
//! timers: N armed, then limit-exceeded
//! ```
//!
//! (`then <error>` for another refusal, `no limit` if 1,000,000 timers were all
//! accepted).

use sandsock_sdk::raw::io;
use sandsock_sdk::{Conn, Handler, Io};

/// Attempts per trigger, at most, so a host without a limit still gets an answer.
const MAX_ATTEMPTS: u64 = 1_000_000;

/// How long each timer waits: long enough that none fires during a test.
const DELAY_MS: u32 = 60 * 60 * 1000;

#[derive(Default)]
struct SetsTimers {
    /// The next unused timer id: each attempt arms a new timer, never re-arms one.
    next_id: u64,
}

impl Handler for SetsTimers {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if triggered(data) {
            let report = self.arm_until_refused();
            io.write(conn, report.as_bytes());
        } else {
            io.write(conn, data);
        }
    }
}

impl SetsTimers {
    fn arm_until_refused(&mut self) -> String {
        let mut armed = 0;
        for _ in 0..MAX_ATTEMPTS {
            let id = self.next_id;
            self.next_id += 1;
            if let Err(error) = io::set_timer(id, DELAY_MS) {
                return format!("timers: {armed} armed, then {}\n", error.name());
            }
            armed += 1;
        }
        format!("timers: {armed} armed, no limit\n")
    }
}

/// Whether a chunk holds the word `TRIGGER` (a short write arrives in one chunk).
fn triggered(data: &[u8]) -> bool {
    data.windows(7).any(|window| window == b"TRIGGER")
}

sandsock_sdk::serve!(SetsTimers);
