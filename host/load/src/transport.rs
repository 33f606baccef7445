//! [`Transport`]: a client's connection, plain or TLS, as non-blocking `Read` and
//! `Write` over one mio socket.
//!
//! With TLS (`--tls-ca`), writes are encrypted into rustls' buffer and sent as far
//! as the socket takes them; reads first send what is pending (the handshake's next
//! flight, the rest of a request), then take in records until plaintext is there or
//! the socket would block. The handshake needs no stage of its own: the request
//! written right after the connect waits in rustls until the handshake is done.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// How clients speak TLS: the configuration (trusting `--tls-ca`) and the name they
/// ask for.
#[derive(Clone, Debug)]
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the PEM certificates in `ca`, and asks for `name` (SNI and the check of
    /// the server's certificate).
    pub(crate) fn new(ca: &Path, name: &str) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(ca)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("cannot read {}", ca.display()))?;
        for certificate in certificates {
            let certificate =
                certificate.map_err(|e| anyhow!("{}: not PEM certificates: {e}", ca.display()))?;
            roots
                .add(certificate)
                .map_err(|e| anyhow!("{}: {e}", ca.display()))?;
        }
        anyhow::ensure!(!roots.is_empty(), "no certificate in {}", ca.display());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("the TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every connection a full handshake: what a server pays for a new client.
        config.resumption = rustls::client::Resumption::disabled();
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| anyhow!("--tls-server-name {name}: {e}"))?;
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }
}

/// One connection's socket, with its TLS session if the run speaks TLS.
pub(crate) struct Transport {
    socket: TcpStream,
    tls: Option<Box<ClientConnection>>,
}

impl Transport {
    /// Wraps a connecting socket; with `tls`, a new session for it.
    pub(crate) fn new(socket: TcpStream, tls: Option<&TlsClient>) -> Result<Self, String> {
        let tls = match tls {
            Some(client) => Some(Box::new(
                ClientConnection::new(client.config.clone(), client.name.clone())
                    .map_err(|e| format!("TLS session: {e}"))?,
            )),
            None => None,
        };
        Ok(Self { socket, tls })
    }

    /// The socket, to register, deregister and ask about.
    pub(crate) fn socket(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// The socket, to ask about.
    pub(crate) fn socket_ref(&self) -> &TcpStream {
        &self.socket
    }

    /// Sends what the TLS session has ready, until the socket would block.
    fn send_pending(tls: &mut ClientConnection, socket: &mut TcpStream) -> io::Result<()> {
        while tls.wants_write() {
            match tls.write_tls(socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Write for Transport {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.socket.write(data);
        };
        let n = tls.writer().write(data)?;
        Self::send_pending(tls, &mut self.socket)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => Self::send_pending(tls, &mut self.socket),
            None => Ok(()),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.socket.read(buf);
        };
        Self::send_pending(tls, &mut self.socket)?;
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext yet: take in records.
            if tls.read_tls(&mut self.socket)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets().map_err(io::Error::other)?;
            // The handshake's next flight, and what was written before it ended.
            Self::send_pending(tls, &mut self.socket)?;
        }
    }
}
