//! `writes_more`: echoes each chunk, then writes one line more.
//!
//! It exists to prove that a canary (`--swap canary`) rejects a candidate that
//! writes more than the serving `echo` example: the same bytes first, then more.

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct WritesMore;

impl Handler for WritesMore {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        io.write(conn, data);
        io.write(conn, b"and one line more\n");
    }
}

sandsock_sdk::serve!(WritesMore);
