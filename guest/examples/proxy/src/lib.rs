//! `proxy`: forwards each accepted connection to the address in `UPSTREAM`.
//!
//! Every client gets its own upstream connection (`io.connect`), and bytes go
//! through unchanged in both directions:
//!
//! - **Backpressure.** A side is read only while the other side's queue is below
//!   [`HIGH_WATER`]: past it, the sending side is paused until the queue has been
//!   handed to the host (`on_writable`). The SDK's own pause, which stops reading
//!   a connection whose *own* queue is full, is off on both sides: here a full
//!   queue says nothing about the connection's own sender, and pausing it could
//!   deadlock two peers that each wait for the other to read. So each pair holds
//!   at most about twice `HIGH_WATER` plus a read chunk.
//! - **Half-close.** End-of-stream from one side becomes a write shutdown on the
//!   other once everything before it was sent; once both sides have finished
//!   sending, both connections close.
//! - **Failures.** When one side hangs up, the other is closed once what was
//!   forwarded to it has been sent. If `UPSTREAM` is missing, or the connection to
//!   it cannot be made, one line goes to stderr (a host log line) and the client
//!   is closed.
//!
//! - **Hot swap.** With `--swap handoff` the pairs survive: the snapshot holds
//!   which connection is whose partner and how far each side got, and the SDK
//!   carries the queues and pauses. A connection handed over without a partner
//!   (from a generation that kept no state) cannot be forwarded anywhere, and is
//!   closed.
//!
//! `UPSTREAM` is `ip:port` (no name lookup), read on first use:
//! `host --guest proxy.wasm --env UPSTREAM=127.0.0.1:9000 --allow-connect ...`.

use std::cell::OnceCell;
use std::collections::HashMap;

use sandsock_sdk::{
    BadSnapshot, Conn, HIGH_WATER, Handler, Io, IoError, SnapshotReader, SnapshotWriter,
};

/// The environment variable naming the upstream address.
const UPSTREAM: &str = "UPSTREAM";

/// The layout of [`Proxy::encode`], version 1:
///
/// ```text
/// version  u8    1
/// sides    u64   then per connection: handle u64, partner u64,
///                flags u8 (bit 0 upstream, 1 connected, 2 eof; the rest 0)
/// ```
const SNAPSHOT_VERSION: u8 = 1;

#[derive(Default)]
struct Proxy {
    /// `UPSTREAM`, read on first use (an empty value counts as missing).
    upstream: OnceCell<Option<String>>,
    /// Both connections of each pair, each pointing at the other.
    sides: HashMap<Conn, Side>,
}

/// One connection of a pair.
struct Side {
    /// The other connection of the pair.
    partner: Conn,
    /// This is the upstream connection, not the client.
    is_upstream: bool,
    /// The connection is established: always for a client, after `on_connected`
    /// for the upstream.
    connected: bool,
    /// This side's peer has finished sending.
    eof: bool,
}

impl Handler for Proxy {
    fn on_accept(&mut self, io: &mut Io, client: Conn) {
        let Some(addr) = self.upstream() else {
            eprintln!(
                "proxy: {UPSTREAM} is not set (start the host with --env {UPSTREAM}=IP:PORT); \
                 closing the connection from {}",
                peer(io, client)
            );
            return io.close(client);
        };
        let upstream = match io.connect(&addr) {
            Ok(upstream) => upstream,
            Err(error) => {
                let hint = match error {
                    IoError::NotPermitted => " (start the host with --allow-connect IP:PORT)",
                    _ => "",
                };
                eprintln!(
                    "proxy: cannot connect to {UPSTREAM}={addr}: {}{hint}; \
                     closing the connection from {}",
                    error.name(),
                    peer(io, client)
                );
                return io.close(client);
            }
        };
        for conn in [client, upstream] {
            // Each side's reading is paused by the other side's queue, below.
            io.set_auto_pause(conn, false);
        }
        self.sides.insert(client, Side::new(upstream, false, true));
        self.sides.insert(upstream, Side::new(client, true, false));
    }

    /// A side restored from the snapshot carries on; anything else has lost its
    /// partner, and nothing it sends could be forwarded.
    fn on_adopted(&mut self, io: &mut Io, conn: Conn) {
        if !self.sides.contains_key(&conn) {
            eprintln!(
                "proxy: closing the connection {conn} from {}: handed over without its partner",
                peer(io, conn)
            );
            io.close(conn);
        }
    }

    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        self.encode()
    }

    fn restore(&mut self, _io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        self.sides.extend(decode(state)?);
        Ok(())
    }

    fn on_connected(&mut self, _io: &mut Io, upstream: Conn) {
        if let Some(side) = self.sides.get_mut(&upstream) {
            side.connected = true;
        }
    }

    fn on_data(&mut self, io: &mut Io, from: Conn, data: &[u8]) {
        let Some(side) = self.sides.get(&from) else {
            return;
        };
        io.write(side.partner, data);
        if io.queued(side.partner) >= HIGH_WATER {
            io.pause_reading(from);
        }
    }

    /// `conn`'s queue was handed to the host: its partner may send again.
    fn on_writable(&mut self, io: &mut Io, conn: Conn) {
        if let Some(side) = self.sides.get(&conn) {
            io.resume_reading(side.partner);
        }
    }

    fn on_eof(&mut self, io: &mut Io, from: Conn) {
        let Some(side) = self.sides.get_mut(&from) else {
            return io.close(from);
        };
        side.eof = true;
        let partner = side.partner;
        if self.sides.get(&partner).is_some_and(|other| other.eof) {
            // Both directions are finished; each close sends what is queued first.
            io.close(from);
            io.close(partner);
        } else {
            io.shutdown_write(partner);
        }
    }

    fn on_close(&mut self, io: &mut Io, conn: Conn) {
        let Some(side) = self.sides.remove(&conn) else {
            return;
        };
        if side.is_upstream && !side.connected {
            let reason = io
                .hangup_reason(conn)
                .map_or("closed", |error| error.name());
            eprintln!(
                "proxy: cannot connect to {UPSTREAM}={}: {reason}; closing the connection from {}",
                self.upstream().unwrap_or_default(),
                peer(io, side.partner)
            );
        }
        // Sends what was forwarded to the partner first; a no-op if it is gone.
        io.close(side.partner);
    }
}

impl Proxy {
    /// The snapshot: every side of every pair, as [`SNAPSHOT_VERSION`] lays them
    /// out.
    fn encode(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        w.u64(self.sides.len() as u64);
        for (&conn, side) in &self.sides {
            w.conn(conn);
            w.conn(side.partner);
            let flags = [side.is_upstream, side.connected, side.eof];
            w.u8(flags
                .iter()
                .enumerate()
                .fold(0, |bits, (i, &on)| bits | (u8::from(on) << i)));
        }
        w.into_bytes()
    }

    fn upstream(&self) -> Option<String> {
        self.upstream
            .get_or_init(|| std::env::var(UPSTREAM).ok().filter(|addr| !addr.is_empty()))
            .clone()
    }
}

impl Side {
    fn new(partner: Conn, is_upstream: bool, connected: bool) -> Self {
        Self {
            partner,
            is_upstream,
            connected,
            eof: false,
        }
    }
}

/// Reads what [`Proxy::encode`] wrote, checking all of it before any of it is
/// used: each side's partner must be there and point back, one of the two the
/// upstream.
fn decode(state: &[u8]) -> Result<HashMap<Conn, Side>, BadSnapshot> {
    let mut r = SnapshotReader::new(state);
    if r.u8()? != SNAPSHOT_VERSION {
        return Err(BadSnapshot::new("unknown proxy snapshot version"));
    }
    let mut sides = HashMap::new();
    for _ in 0..r.count()? {
        let conn = r.conn()?;
        let partner = r.conn()?;
        let bits = r.u8()?;
        if bits >> 3 != 0 {
            return Err(BadSnapshot::new("unknown flags"));
        }
        let mut side = Side::new(partner, bits & 1 != 0, bits & 2 != 0);
        side.eof = bits & 4 != 0;
        if sides.insert(conn, side).is_some() {
            return Err(BadSnapshot::new("a connection appears twice"));
        }
    }
    r.finish()?;
    let paired = sides.iter().all(|(&conn, side)| {
        sides
            .get(&side.partner)
            .is_some_and(|other| other.partner == conn && other.is_upstream != side.is_upstream)
    });
    if !paired {
        return Err(BadSnapshot::new("a connection is not paired"));
    }
    Ok(sides)
}

/// The peer's address for a log line.
fn peer(io: &Io, conn: Conn) -> String {
    io.peer(conn).unwrap_or_else(|| conn.to_string())
}

sandsock_sdk::serve!(Proxy);

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(proxy: &mut Proxy, client: u64, upstream: u64) {
        let (client, upstream) = (Conn::from_raw(client), Conn::from_raw(upstream));
        proxy.sides.insert(client, Side::new(upstream, false, true));
        proxy.sides.insert(upstream, Side::new(client, true, false));
    }

    #[test]
    fn pairs_survive_a_snapshot() {
        let mut proxy = Proxy::default();
        pair(&mut proxy, 1, 1000);
        pair(&mut proxy, 2, 1001);
        if let Some(side) = proxy.sides.get_mut(&Conn::from_raw(2)) {
            side.eof = true;
        }
        let sides = decode(&proxy.encode()).expect("its own snapshot");
        assert_eq!(sides.len(), 4);
        let side = &sides[&Conn::from_raw(2)];
        assert_eq!(side.partner, Conn::from_raw(1001));
        assert!(side.eof && side.connected && !side.is_upstream);
        let upstream = &sides[&Conn::from_raw(1000)];
        assert!(upstream.is_upstream && !upstream.connected && !upstream.eof);
    }

    #[test]
    fn a_bad_snapshot_is_refused_without_panicking() {
        let mut proxy = Proxy::default();
        pair(&mut proxy, 1, 1000);
        let good = proxy.encode();
        for end in 0..good.len() {
            assert!(decode(&good[..end]).is_err(), "truncated at {end}");
        }
        proxy.sides.remove(&Conn::from_raw(1000));
        assert!(
            decode(&proxy.encode()).is_err(),
            "a side without its partner"
        );
    }
}
