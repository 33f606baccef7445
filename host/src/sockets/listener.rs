//! Listening sockets (plain or TLS): bound with the backlog the user chose, and, when several
//! workers serve one address, each worker's own socket on it with `SO_REUSEPORT`, so
//! that the kernel spreads new connections across the workers.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use mio::net::TcpListener;
use socket2::{Domain, Socket, Type};

use super::tls::TlsServer;

/// One listening socket of a worker, and the TLS it speaks, if any.
#[derive(Debug)]
pub struct Listener {
    /// The socket, non-blocking.
    pub socket: TcpListener,
    /// For a `--listen-tls` address: the server side of the handshake.
    pub tls: Option<TlsServer>,
}

/// Where Linux says the most a listen backlog may be.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// The backlog when the kernel's maximum cannot be read: nginx's.
const FALLBACK_BACKLOG: u32 = 511;

/// Connections the kernel queues, handshake done, until the host accepts them: by
/// default as many as the kernel allows (`net.core.somaxconn`, 4096 on current
/// kernels), as Go's runtime does.
///
/// Connects past the backlog are dropped and wait for a SYN retry, a second or
/// more: with the standard library's 128, 2,000 simultaneous connects took twice as
/// long to be answered as with 511 (`cargo bench --bench scale`), and with 511 still
/// a second.
pub fn default_backlog() -> u32 {
    std::fs::read_to_string(SOMAXCONN)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(FALLBACK_BACKLOG)
}

/// Binds every address once per worker: `listeners[worker][i]` listens on
/// `addrs[i]`. A port 0 is resolved by the first worker's bind and shared by the
/// others. Errors name the address.
pub fn bind_all(
    addrs: &[SocketAddr],
    backlog: u32,
    workers: usize,
) -> Result<Vec<Vec<TcpListener>>> {
    let shared = workers > 1;
    let mut listeners: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for &addr in addrs {
        let first = bind(addr, backlog, shared)?;
        let bound = first
            .local_addr()
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners[0].push(first);
        for worker in &mut listeners[1..] {
            worker.push(bind(bound, backlog, shared)?);
        }
    }
    Ok(listeners)
}

/// One non-blocking listening socket on `addr`; `shared` lets other sockets of this
/// process listen on the same address (`SO_REUSEPORT`).
fn bind(addr: SocketAddr, backlog: u32, shared: bool) -> Result<TcpListener> {
    let open = || -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        // As the standard library does: a restarted server rebinds at once, whatever
        // connections of its predecessor are still in TIME_WAIT.
        socket.set_reuse_address(true)?;
        if shared {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        Ok(socket)
    };
    let socket = open().with_context(|| format!("cannot listen on {addr}"))?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_resolved_port() {
        let any = "127.0.0.1:0".parse().unwrap();
        let listeners = bind_all(&[any, any], 16, 3).unwrap();
        assert_eq!(listeners.len(), 3);
        for i in 0..2 {
            let port = listeners[0][i].local_addr().unwrap().port();
            assert_ne!(port, 0);
            for worker in &listeners[1..] {
                assert_eq!(worker[i].local_addr().unwrap().port(), port);
            }
        }
        assert_ne!(
            listeners[0][0].local_addr().unwrap(),
            listeners[0][1].local_addr().unwrap(),
            "two addresses, two ports"
        );
    }

    #[test]
    fn one_worker_does_not_share_its_port() {
        let listener = bind_all(&["127.0.0.1:0".parse().unwrap()], 16, 1)
            .unwrap()
            .remove(0)
            .remove(0);
        let taken = listener.local_addr().unwrap();
        let error = bind_all(&[taken], 16, 1).expect_err("the port is taken");
        assert!(format!("{error:#}").contains(&format!("cannot listen on {taken}")));
    }
}
