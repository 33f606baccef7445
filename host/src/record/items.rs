//! The records a tape is made of: who was recorded ([`Header`]), each turn
//! ([`Turn`]) and what it holds ([`Item`]), and how the tape ended ([`End`]).
//! `codec.rs` writes and reads them; `tape.rs` frames them into a file.

use crate::shared::wit::{Conn, IoError, TlsInfo};
use crate::store::{Op, Outcome};

/// Who was recorded, running what, under which limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    /// The guest's name, as the log names it.
    pub guest: String,
    /// The guest's SHA-256.
    pub digest: [u8; 32],
    /// The contract version it was built for (`1.1.0`).
    pub contract: String,
    /// The host's version that recorded it.
    pub host: String,
    /// The worker that ran the instance.
    pub worker: u32,
    /// The instance's owner number in its worker.
    pub owner: u64,
    /// Whether the instance served every connection (`shared`) or one.
    pub shared: bool,
    /// When the tape started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// `--record-sample`: the share of connections recorded, in percent.
    pub sample_percent: u32,
    /// The limits the instance ran under.
    pub limits: TapeLimits,
    /// The environment variables the guest saw (`--env`).
    pub env: Vec<(String, String)>,
}

/// The limits a replay holds the guest to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TapeLimits {
    /// `--event-timeout`, in microseconds: a wall-clock deadline.
    pub event_timeout_us: u64,
    /// `--fuel` per call, if set: deterministic.
    pub fuel: Option<u64>,
    /// `--max-memory`, in bytes.
    pub max_memory: u64,
    /// `--max-timers`.
    pub max_timers: u32,
}

/// One call's worth of what the world gave the instance, and what it sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Turn {
    /// When, in microseconds since the tape started.
    pub at_us: u64,
    /// What the turn brought and what the instance sent; a replay takes in every
    /// input before the turn's calls (a hang-up the host caused after them, and
    /// one that followed input read in the same turn, after), so their order within
    /// a turn is the recorder's: arrivals and timers, the environment's answers and
    /// the store's, each connection's input, end, output and close, the trap last.
    pub items: Vec<Item>,
}

/// The facts of a TLS connection the guest can ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The protocol agreed by ALPN.
    pub alpn: Option<String>,
}

impl From<TlsInfo> for TlsFacts {
    fn from(info: TlsInfo) -> Self {
        Self {
            version: info.version,
            server_name: info.server_name,
            alpn: info.alpn,
        }
    }
}

impl From<TlsFacts> for TlsInfo {
    fn from(facts: TlsFacts) -> Self {
        Self {
            version: facts.version,
            server_name: facts.server_name,
            alpn: facts.alpn,
        }
    }
}

/// One thing on a tape.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A new connection, with its peer and TLS facts. `sampled` is false for one
    /// kept only because the instance trapped while it was open.
    Accepted {
        /// Its handle (the same in a replay).
        conn: Conn,
        /// The peer's address.
        peer: Option<String>,
        /// TLS facts, from a TLS listener.
        tls: Option<TlsFacts>,
        /// Recorded from its start.
        sampled: bool,
    },
    /// A connection an earlier generation held, handed to this instance.
    Adopted {
        /// Its handle.
        conn: Conn,
        /// The peer's address.
        peer: Option<String>,
        /// TLS facts, from a TLS listener.
        tls: Option<TlsFacts>,
    },
    /// An outbound connection completed.
    Connected {
        /// Its handle.
        conn: Conn,
    },
    /// Bytes read from the peer and given to the instance.
    Input {
        /// The connection.
        conn: Conn,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The peer's end-of-stream, given to the instance.
    Eof {
        /// The connection.
        conn: Conn,
    },
    /// The connection failed (reset): the instance heard `hangup`.
    Hangup {
        /// The connection.
        conn: Conn,
    },
    /// The host ended the connection (a drain timeout, a trap's clean-up, the
    /// shutdown): what it holds after this is not comparable.
    HostClosed {
        /// The connection.
        conn: Conn,
    },
    /// The instance's timer fired.
    Timer {
        /// The timer's id.
        id: u64,
    },
    /// The wall clock, read: nanoseconds since the Unix epoch.
    Wall {
        /// The reading.
        nanos: u64,
    },
    /// The monotonic clock, read: nanoseconds.
    Monotonic {
        /// The reading.
        nanos: u64,
    },
    /// Random bytes the instance was given (secure and insecure alike, in order).
    Random {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The seed `wasi:random/insecure-seed` answers (once, at the start).
    Seed {
        /// The seed.
        seed: u128,
    },
    /// What a `connect` answered.
    Connect {
        /// The new handle, or the error.
        result: Result<Conn, IoError>,
    },
    /// A store operation the instance made, with its id.
    StoreOp {
        /// The operation's id.
        id: u64,
        /// The operation.
        op: Op,
    },
    /// A store answer the instance was given.
    StoreAnswer {
        /// The operation's id.
        id: u64,
        /// The answer.
        outcome: Outcome,
    },
    /// A message the instance published.
    Published {
        /// The topic.
        topic: String,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A message the instance heard.
    Message {
        /// The topic.
        topic: String,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Bytes the instance wrote that the host accepted.
    Output {
        /// The connection.
        conn: Conn,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The instance closed the connection.
    Closed {
        /// The connection.
        conn: Conn,
    },
    /// The host is shutting down: the instance heard `shutdown`.
    Shutdown,
    /// The call trapped: the instance ends here.
    Trap {
        /// The cause, as the log words it.
        message: String,
        /// The guest's backtrace, as the log prints it.
        backtrace: String,
        /// It ran past `--event-timeout`: a wall-clock deadline.
        deadline: bool,
    },
}

/// How a tape ended.
#[derive(Clone, Debug, PartialEq)]
pub struct End {
    /// Every turn of the instance while it was recorded is on the tape.
    pub complete: bool,
    /// Why it ended (the instance ended, trapped, the writer fell behind...).
    pub why: String,
}
