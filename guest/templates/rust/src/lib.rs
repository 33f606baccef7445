//! An HTTP/1.1 hello: every request (a head ending in an empty line; bodies are not
//! expected) is answered `200 hello`, on the same connection. Start from here.

use sandsock_sdk::{BadSnapshot, Conn, Handler, InputBuffers, Io, SnapshotReader, SnapshotWriter};

const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
const TOO_LARGE: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// A head longer than this is refused: a client cannot make the guest hold more.
const MAX_HEAD: usize = 8 * 1024;
/// The layout of this guest's own part of a snapshot (see `snapshot`).
const SNAPSHOT_VERSION: u8 = 1;

#[derive(Default)]
struct Hello {
    /// Each connection's unfinished request (a head split across chunks).
    unfinished: InputBuffers,
}

impl Handler for Hello {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let refused = self.unfinished.feed(conn, data, |input| {
            let mut used = 0;
            while let Some(end) = input[used..].windows(4).position(|w| w == b"\r\n\r\n") {
                io.write(conn, ANSWER);
                used += end + 4;
            }
            if input.len() - used > MAX_HEAD {
                return (input.len(), true);
            }
            (used, false)
        });
        if refused {
            io.write(conn, TOO_LARGE);
            io.close(conn);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.unfinished.forget(conn);
    }

    /// At a hot swap (or a recycle), unfinished requests go to the next instance.
    fn snapshot(&mut self, _io: &mut Io) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        w.u8(SNAPSHOT_VERSION);
        self.unfinished.encode(&mut w);
        w.into_bytes()
    }

    fn restore(&mut self, _io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        let mut r = SnapshotReader::new(state);
        if r.u8()? != SNAPSHOT_VERSION {
            return Err(BadSnapshot::new("another snapshot layout"));
        }
        let unfinished = InputBuffers::decode(&mut r)?;
        r.finish()?;
        self.unfinished.merge(unfinished);
        Ok(())
    }
}

sandsock_sdk::serve!(Hello);
