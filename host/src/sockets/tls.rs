//! TLS termination: the host holds the certificate and the key, runs the handshake
//! inside the event loop, and gives the guest plaintext only. Untrusted handler code
//! can serve HTTPS without ever seeing a private key.
//!
//! Each connection from a `--listen-tls` listener carries a [`Tls`]: rustls'
//! server session, driven non-blocking by the loop. Until its handshake is done the
//! connection belongs to the host (the guest hears `accepted` only afterwards), and a
//! handshake that does not finish within its timeout is closed. Ciphertext the
//! session produces goes to the socket when it takes it, else into the connection's
//! write buffer, so that flushing, the write bound and the lingering close work on
//! TLS connections exactly as on plain ones.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use mio::net::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::write_buffer::WriteBuffer;
use crate::shared::wit::TlsInfo;

/// The one application protocol offered: the examples speak HTTP/1.1.
const ALPN: &[u8] = b"http/1.1";

/// The certificate chain and key every TLS listener presents, reloadable while the
/// host serves: new handshakes use the newest pair that loaded, open connections go
/// on with the one they began with.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The bytes of both files as last loaded, to tell a change from a reload of
    /// the same pair.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads the PEM chain at `cert` and the PEM key at `key`; an error names the
    /// file and what is wrong with it (unreadable, not PEM, empty, not matching).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = read_pair(cert, key)?;
        let pair = parse_pair(&files, cert, key, &provider)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(pair)),
            loaded: Mutex::new(files),
        }))
    }

    /// Reads both files again; if they changed and load, new handshakes present
    /// them (`Ok(true)`). A pair that fails to load is an error, and the pair serving
    /// goes on.
    pub fn reload(&self) -> Result<bool> {
        let files = read_pair(&self.cert, &self.key)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == files {
            return Ok(false);
        }
        let pair = parse_pair(&files, &self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        *loaded = files;
        Ok(true)
    }

    /// The certificate and key files, for `--watch`.
    pub fn files(&self) -> [&Path; 2] {
        [&self.cert, &self.key]
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The bytes of the certificate and key files.
fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
    };
    Ok((read(cert, "certificate")?, read(key, "private key")?))
}

/// Parses and checks one certificate chain and its key (`files`, read from `cert`
/// and `key`, which the errors name).
fn parse_pair(
    files: &(Vec<u8>, Vec<u8>),
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(&files.0)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "no certificate in {} (expected PEM `BEGIN CERTIFICATE` blocks)",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_slice(&files.1)
        .map_err(|e| anyhow!("{}: not a PEM private key: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        anyhow!(
            "the TLS private key {} does not go with the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

/// What every TLS listener of the process shares: the configuration (its
/// certificates reloadable), and how long a handshake may take.
#[derive(Clone, Debug)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl TlsServer {
    /// A server configuration presenting `certificates`, TLS 1.2 and 1.3, ALPN
    /// `http/1.1`, no client certificates.
    pub fn new(certificates: Arc<Certificates>, handshake_timeout: Duration) -> Result<Self> {
        let provider = certificates.provider.clone();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("the TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(certificates);
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            config: Arc::new(config),
            handshake_timeout,
        })
    }

    /// How long a handshake may take (`--tls-handshake-timeout`).
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The TLS state of a newly accepted connection.
    pub fn session(&self) -> io::Result<Tls> {
        let mut session = ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        // The host bounds what it holds per connection itself (`--max-buffer`).
        session.set_buffer_limit(None);
        Ok(Tls {
            session,
            plaintext: 0,
            eof: false,
            closed: false,
        })
    }
}

/// One connection's TLS session, and what the host knows of it without asking.
#[derive(Debug)]
pub struct Tls {
    session: ServerConnection,
    /// Decrypted bytes waiting for the guest.
    plaintext: usize,
    /// The socket reached its end (with or without the peer's `close_notify`).
    eof: bool,
    /// The peer sent `close_notify`: nothing follows what was decrypted.
    closed: bool,
}

/// Why a TLS connection cannot go on.
#[derive(Debug)]
pub enum Failure {
    /// The socket failed.
    Io(io::Error),
    /// The peer broke the protocol (a bad client hello, a bad record).
    Protocol(rustls::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(e) => e.fmt(f),
            Failure::Protocol(e) => e.fmt(f),
        }
    }
}

impl Tls {
    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Whether decrypted bytes wait for the guest, or the end does.
    pub fn has_input(&self) -> bool {
        self.plaintext > 0 || self.at_end()
    }

    /// Whether the guest has read everything there will be: the socket ended, or
    /// the peer said `close_notify`, and no decrypted byte waits.
    pub fn at_end(&self) -> bool {
        self.plaintext == 0 && (self.eof || self.closed)
    }

    /// Reads ciphertext from the socket and decrypts it until `want` plaintext bytes
    /// wait, the socket would block or ends. `Ok(true)` when it was drained (no new
    /// bytes without a new edge).
    pub fn fill(&mut self, stream: &mut TcpStream, want: usize) -> Result<bool, Failure> {
        loop {
            if self.plaintext >= want {
                return Ok(false);
            }
            match self.session.read_tls(stream) {
                Ok(0) => {
                    self.eof = true;
                    self.process()?;
                    return Ok(true);
                }
                Ok(_) => self.process()?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // rustls holds as much as it will: the guest reads first.
                Err(e) if e.kind() == io::ErrorKind::Other && self.plaintext > 0 => {
                    return Ok(false);
                }
                Err(e) => return Err(Failure::Io(e)),
            }
        }
    }

    fn process(&mut self) -> Result<(), Failure> {
        let state = self
            .session
            .process_new_packets()
            .map_err(Failure::Protocol)?;
        self.plaintext = state.plaintext_bytes_to_read();
        self.closed = state.peer_has_closed();
        Ok(())
    }

    /// Copies decrypted bytes into `buf`; 0 when none wait.
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> usize {
        if self.plaintext == 0 {
            return 0;
        }
        let n = io::Read::read(&mut self.session.reader(), buf).unwrap_or(0);
        self.plaintext -= n.min(self.plaintext);
        n
    }

    /// Encrypts `data` (the caller bounds its size); the records wait for
    /// [`Tls::send`].
    pub fn write_plaintext(&mut self, data: &[u8]) -> usize {
        self.session.writer().write(data).unwrap_or(0)
    }

    /// What the handshake settled, as the guest's `tls` call answers it.
    pub fn info(&self) -> TlsInfo {
        let version = match self.session.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        TlsInfo {
            version,
            server_name: self.session.server_name().map(str::to_string),
            alpn: self
                .session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }

    /// Queues the `close_notify` alert: the peer learns the end was meant.
    pub fn close_notify(&mut self) {
        self.session.send_close_notify();
    }

    /// Moves the records the session has made to the socket while it takes them
    /// (only when nothing is buffered before them), and the rest into `out`.
    /// Returns how many bytes went into `out`.
    pub fn send(
        &mut self,
        stream: &mut TcpStream,
        writable: &mut bool,
        out: &mut WriteBuffer,
    ) -> io::Result<usize> {
        let before = out.len();
        while self.session.wants_write() {
            if out.is_empty() && *writable {
                match self.session.write_tls(stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            } else {
                self.session.write_tls(&mut Append(out))?;
            }
        }
        Ok(out.len() - before)
    }
}

/// Appends to a write buffer, unbounded: rustls' records are whole or nothing, and
/// the caller bounds the plaintext it lets in.
struct Append<'a>(&'a mut WriteBuffer);

impl Write for Append<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        Ok(self.0.push(data, usize::MAX))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
