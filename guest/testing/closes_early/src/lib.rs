//! `closes_early`: echoes the first chunk of a connection, then closes it.
//!
//! It exists to prove that a canary (`--swap canary`) rejects a candidate that
//! closes a connection the serving `echo` example keeps open.

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct ClosesEarly;

impl Handler for ClosesEarly {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        io.write(conn, data);
        io.close(conn);
    }
}

sandsock_sdk::serve!(ClosesEarly);
