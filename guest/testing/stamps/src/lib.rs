//! `stamps`: echoes each chunk after the time it arrived, in nanoseconds since the
//! epoch and 20 digits wide: `00001796000000123456 ping`.
//!
//! It exists to prove that a canary's noise learning (`--canary-noise on`) masks
//! what the serving code writes differently on every run: two runs of this guest
//! never agree on the timestamp, and with noise learning off they are a divergence.

use std::time::{SystemTime, UNIX_EPOCH};

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct Stamps;

impl Handler for Stamps {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        io.write(conn, format!("{now:020} ").as_bytes());
        io.write(conn, data);
    }
}

sandsock_sdk::serve!(Stamps);
