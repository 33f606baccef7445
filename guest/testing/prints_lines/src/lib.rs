//! `prints_lines`: echoes until a chunk contains `TRIGGER`, then prints 200,000 lines
//! to stdout in that one call, and echoes on; a chunk containing `MORE` prints 1,000
//! (a guest past its budget in every call). A chunk containing `LOG` writes through
//! the `log` import instead: one line at each level, then 1,000 at info.
//!
//! It exists to prove that a guest cannot flood the host's log: its lines past the
//! instance's budget are dropped and counted, and the other connections are served.
//! The host needs a long `--event-timeout` for the call to finish.

use sandsock_sdk::raw::log::{self, Level};
use sandsock_sdk::{Conn, Handler, Io};

/// Lines printed at the trigger.
const LINES: usize = 200_000;
/// Lines printed at `MORE`: over the instance's burst of log bytes on their own.
const MORE: usize = 1_000;

#[derive(Default)]
struct PrintsLines;

impl Handler for PrintsLines {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if data.windows(7).any(|window| window == b"TRIGGER") {
            for i in 0..LINES {
                println!("line {i} of a guest that prints without end");
            }
            io.write(conn, b"printed\n");
            return;
        }
        if data.windows(3).any(|window| window == b"LOG") {
            for (level, name) in [
                (Level::Error, "error"),
                (Level::Warn, "warn"),
                (Level::Info, "info"),
                (Level::Debug, "debug"),
                (Level::Trace, "trace"),
            ] {
                log::write(level, &format!("a line at {name} through the log import"));
            }
            for i in 0..MORE {
                log::write(
                    Level::Info,
                    &format!("log line {i} of a guest past its budget"),
                );
            }
            io.write(conn, b"logged\n");
            return;
        }
        if data.windows(4).any(|window| window == b"MORE") {
            for i in 0..MORE {
                println!("line {i} of a guest that prints without end");
            }
            io.write(conn, b"printed more\n");
            return;
        }
        io.write(conn, data);
    }
}

sandsock_sdk::serve!(PrintsLines);
