//! `panics_on_accept`: panics on every accepted connection.
//!
//! With an instance per connection, any client can make it trap at will, just by
//! connecting. It exists to prove that such a guest backs off like a crash-looping
//! one, and that its traps cannot flood the host's log.

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct PanicsOnAccept;

impl Handler for PanicsOnAccept {
    fn on_accept(&mut self, _io: &mut Io, _conn: Conn) {
        panic!("panics on accept");
    }
}

sandsock_sdk::serve!(PanicsOnAccept);
