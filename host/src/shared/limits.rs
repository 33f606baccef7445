//! The sandbox's limits: what each one bounds, and its default.
//!
//! Every limit exists because a guest (buggy or hostile) or a peer could otherwise
//! make the host spend without end: time, memory, sockets or timers. The command
//! line's defaults are [`Limits::DEFAULT`]; nothing else spells them out.

use std::time::Duration;

/// Bytes one `read` may return. Bounds the host's copy into the guest per call,
/// whatever `max` the guest asks for.
pub const MAX_READ_CHUNK: usize = 64 * 1024;

/// Connection slots are addressed by the low bits of a connection id; this many
/// bits bound the number of simultaneous connections (about a million).
pub const SLOT_BITS: u32 = 20;

/// How often the epoch ticker advances wasmtime's epoch. Guest call deadlines are
/// counted in these ticks, so this is the resolution of `--event-timeout`.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A closed connection whose peer never reads its last bytes would otherwise
/// hold a socket and a buffer for ever: past this, the host drops it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(30);

/// After its FIN, a closed connection waits this long at most for the peer's own
/// end (reading and discarding meanwhile), so that late input does not make the
/// kernel reset the connection and destroy the last bytes in flight.
pub const LINGER_AFTER_FIN: Duration = Duration::from_secs(5);

/// An outbound connection that has not completed by then fails as `unreachable`,
/// instead of waiting out the kernel's minutes of SYN retries.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest delay `set-timer` takes, in milliseconds (a day): a timer armed for
/// ever would hold its place under `--max-timers` for ever, and one that fires after
/// the host is gone fires for nobody. The contract says so.
pub const MAX_TIMER_DELAY_MS: u64 = 86_400_000;

/// How often the connection deadlines above are checked: their resolution. Checking
/// on every turn would cost a scan per event; a second late is harmless for
/// deadlines counted in seconds.
pub const DEADLINE_CHECK: Duration = Duration::from_secs(1);

/// What one guest may use. The defaults suit a server on a small machine.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall time one guest call may take before it is interrupted: a guest that
    /// loops must not stall the loop, and with it every other connection.
    pub event_timeout: Duration,
    /// The guest's linear memory cap: a leaking guest fails inside its sandbox
    /// instead of exhausting the machine.
    pub max_memory: usize,
    /// Open connections at most; past it new ones are accepted and closed at once,
    /// so a flood cannot exhaust file descriptors or host memory.
    pub max_connections: usize,
    /// Bytes the host holds for one connection's unsent writes; past it `write`
    /// answers `would-block`. Bounds what a peer that never reads can cost.
    pub max_buffer: usize,
    /// Timers one guest instance may have armed at once: each costs host memory and a
    /// wake-up.
    pub max_timers: usize,
    /// Optional deterministic budget of wasm instructions (fuel) per guest call,
    /// for experiments that need the same cut-off on every machine.
    pub fuel: Option<u64>,
}

impl Limits {
    /// The defaults, which the command line shows and uses.
    pub const DEFAULT: Self = Self {
        event_timeout: Duration::from_millis(100),
        max_memory: 64 << 20,
        max_connections: 10_000,
        max_buffer: 1 << 20,
        max_timers: 1024,
        fuel: None,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
