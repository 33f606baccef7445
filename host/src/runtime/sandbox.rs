//! [`Sandbox`]: everything a guest is granted and held to, and how instances map to
//! connections ([`Isolation`]).

use crate::shared::limits::Limits;

/// How guest instances map to connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// One instance serves every connection; state lives across connections, and a
    /// trap closes them all.
    Shared,
    /// An instance per connection (pooled); a trap closes only that connection.
    Connection,
}

/// Everything a guest is granted and held to.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// Time, memory, connection, buffer, timer and fuel limits.
    pub limits: Limits,
    /// How instances map to connections.
    pub isolation: Isolation,
    /// The only environment the guest sees (`--env`).
    pub env: Vec<(String, String)>,
    /// `--record`: every instance's clocks and random bytes are noted for its tape.
    pub record: bool,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            limits: Limits::DEFAULT,
            isolation: Isolation::Shared,
            env: Vec::new(),
            record: false,
        }
    }
}
