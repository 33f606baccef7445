//! `tells_tls`: answers each accepted connection with one line of what `io.tls` says
//! of it, then closes it: `tls VERSION SERVER-NAME ALPN` (`-` for none) for a
//! connection from a TLS listener, `plain` for one from a plaintext listener.

use sandsock_sdk::{Conn, Handler, Io};

#[derive(Default)]
struct TellsTls;

impl Handler for TellsTls {
    fn on_accept(&mut self, io: &mut Io, conn: Conn) {
        let line = match io.tls(conn) {
            Some(tls) => format!(
                "tls {} {} {}\n",
                tls.version,
                tls.server_name.as_deref().unwrap_or("-"),
                tls.alpn.as_deref().unwrap_or("-")
            ),
            None => "plain\n".to_string(),
        };
        io.write(conn, line.as_bytes());
        io.close(conn);
    }
}

sandsock_sdk::serve!(TellsTls);
