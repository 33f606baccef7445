//! `echo`: sends every byte back, in order.
//!
//! The whole guest is one `on_data`. The SDK does the rest: it queues what the host
//! cannot take yet, stops reading a client that sends without reading back
//! (backpressure), and, through the default `on_eof`, closes a connection once the
//! client has finished sending and everything has been echoed. When the host shuts
//! down, every connection is closed once what it was sent has been echoed.

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        io.write(conn, data);
    }

    /// Nothing is in flight beyond what is queued, which a graceful close sends.
    fn on_shutdown(&mut self, io: &mut Io) {
        io.close_all();
    }
}

sandsock_sdk::serve!(Echo);
