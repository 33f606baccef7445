//! TLS termination: HTTPS through `curl --cacert` with keep-alive and with a
//! connection per request, beside a plaintext listener; a client that stalls in the
//! handshake is closed after the timeout while others are served; garbage instead of
//! a client hello is refused with one log line and counted; the certificate rotates
//! (`--watch`, SIGHUP, `POST /reload`) without touching open connections, and a bad
//! new pair is refused while the old one serves; a shutdown does not wait for
//! handshakes under way; a guest learns a connection's TLS facts through
//! `io.tls`; `host load` speaks TLS; bad files at the start are one line and exit 1.
//!
//! Certificates are made at test time (rcgen): a CA and a server certificate for
//! `localhost` and 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Host, fresh_body, install, run_host, scratch};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A CA, and a server certificate it signed, as PEM files in `dir`: `NAME-ca.pem`,
/// `NAME-cert.pem`, `NAME-key.pem`. Returns the server certificate's DER.
fn make_certificates(dir: &Path, name: &str) -> CertificateDer<'static> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("sandsock test CA {name}"),
    );
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-cert.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    cert.der().clone()
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Serves the built-in `http` guest on a TLS listener (beside the plaintext one the
/// test harness adds), with the `name` pair from `dir` installed as `cert.pem` and
/// `key.pem`.
fn serve_tls(dir: &Path, name: &str, flags: &[&str]) -> (Host, SocketAddr) {
    serve_tls_guest("http", dir, name, flags)
}

/// [`serve_tls`] with another guest.
fn serve_tls_guest(guest: &str, dir: &Path, name: &str, flags: &[&str]) -> (Host, SocketAddr) {
    install_pair(dir, name);
    let (cert, key) = (file(dir, "cert.pem"), file(dir, "key.pem"));
    let mut args = vec![
        "--guest",
        guest,
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(flags);
    let host = Host::start(&args);
    let addr = tls_addr(&host);
    (host, addr)
}

/// Puts the `name` pair in place as `cert.pem` and `key.pem`, each renamed over the
/// old file as tools that rotate certificates do.
fn install_pair(dir: &Path, name: &str) {
    for what in ["cert", "key"] {
        let bytes = std::fs::read(dir.join(format!("{name}-{what}.pem"))).unwrap();
        install(&dir.join(format!("{what}.pem")), &bytes);
    }
}

/// The TLS listener's address, from its `listening on ADDR (tls)` line.
fn tls_addr(host: &Host) -> SocketAddr {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let log = host.log();
        let found = log.lines().find_map(|line| {
            line.strip_prefix("listening on ")?
                .strip_suffix(" (tls)")?
                .parse()
                .ok()
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(Instant::now() < deadline, "no TLS listener:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `curl --cacert CA` for each of `urls` in one run (curl reuses its connection
/// when it can); returns, per request, the HTTP code, the new connections made for
/// it, and the body.
fn curl(ca: &str, extra: &[&str], urls: &[String]) -> Vec<(String, String, String)> {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--cacert",
            ca,
        ])
        .args(extra)
        .args(["--write-out", "##%{http_code}|%{num_connects}##"])
        .args(urls)
        .output()
        .expect("curl (the TLS tests need it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // BODY##CODE|CONNECTS## per request (a format that starts with @ names a file).
    let text = String::from_utf8(out.stdout).unwrap();
    let parts: Vec<&str> = text.split("##").collect();
    parts
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| {
            let (code, connects) = pair[1].split_once('|').unwrap();
            (code.to_string(), connects.to_string(), pair[0].to_string())
        })
        .collect()
}

/// A TLS client trusting the CAs of `names`, connected to `addr` as `localhost`.
struct Client(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl Client {
    fn connect(addr: SocketAddr, dir: &Path, names: &[&str]) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for name in names {
            let pem = std::fs::read(dir.join(format!("{name}-ca.pem"))).unwrap();
            let ca = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
            roots.add(ca).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut client = Client(rustls::StreamOwned::new(session, socket));
        while client.0.conn.is_handshaking() {
            client
                .0
                .conn
                .complete_io(&mut client.0.sock)
                .expect("the TLS handshake");
        }
        client
    }

    /// The certificate the server presented.
    fn server_certificate(&self) -> CertificateDer<'static> {
        self.0.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// One keep-alive GET; returns the body.
    fn get(&mut self) -> String {
        self.0
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        // The http example answers `hello\n` with a Content-Length: read to it.
        while !answer.ends_with(b"\r\n\r\nhello\n") {
            self.0.read_exact(&mut byte).expect("the answer");
            answer.push(byte[0]);
        }
        String::from_utf8(answer).unwrap()
    }
}

#[test]
fn https_with_keep_alive_and_a_connection_per_request_beside_plaintext() {
    let dir = scratch("tls-curl");
    make_certificates(&dir, "a");
    let (host, addr) = serve_tls(&dir, "a", &[]);
    let ca = file(&dir, "a-ca.pem");
    let url = |path: &str| format!("https://localhost:{}{path}", addr.port());

    // Three requests in one curl run: one connection, kept alive.
    let answers = curl(&ca, &[], &[url("/"), url("/a"), url("/b")]);
    let connects: Vec<&str> = answers.iter().map(|(_, c, _)| c.as_str()).collect();
    assert_eq!(connects, ["1", "0", "0"], "{answers:?}");
    for (code, _, body) in &answers {
        assert_eq!((code.as_str(), body.as_str()), ("200", "hello\n"));
    }
    // A connection per request, over TLS 1.2 this time.
    for _ in 0..3 {
        let answers = curl(
            &ca,
            &[
                "--tlsv1.2",
                "--tls-max",
                "1.2",
                "--header",
                "Connection: close",
            ],
            &[url("/")],
        );
        assert_eq!(answers, [("200".into(), "1".into(), "hello\n".into())]);
    }
    // The plaintext listener of the same host serves too.
    assert_eq!(fresh_body(&host), "hello\n");
    // curl checked the name and the chain: a client trusting another CA is refused.
    make_certificates(&dir, "other");
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "10", "--cacert"])
        .arg(dir.join("other-ca.pem"))
        .arg(url("/"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn a_stalled_handshake_is_closed_after_the_timeout_while_others_are_served() {
    let dir = scratch("tls-stall");
    make_certificates(&dir, "a");
    let (host, addr) = serve_tls(
        &dir,
        "a",
        &["--tls-handshake-timeout", "1s", "--admin", "127.0.0.1:0"],
    );
    // One client sends nothing; another sends half a client hello.
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let started = Instant::now();
    // Meanwhile others are served, on TLS and plaintext.
    let mut client = Client::connect(addr, &dir, &["a"]);
    assert!(client.get().ends_with("hello\n"));
    assert_eq!(fresh_body(&host), "hello\n");
    for stalled in [&mut silent, &mut half] {
        stalled.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        let closed = stalled.read_to_end(&mut rest);
        assert!(
            closed.is_ok()
                || closed
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{closed:?}"
        );
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    assert!(client.get().ends_with("hello\n"), "the good client goes on");
    let timeouts = host.metric("sandsock_tls_handshakes_total", &[("outcome", "timeout")]);
    assert_eq!(timeouts, 2.0, "{}", host.log());
}

#[test]
fn garbage_instead_of_a_client_hello_is_refused_with_one_line_and_counted() {
    let dir = scratch("tls-garbage");
    make_certificates(&dir, "a");
    let (host, addr) = serve_tls(&dir, "a", &["--admin", "127.0.0.1:0"]);
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer); // an alert, then the close
        assert!(
            !answer.windows(5).any(|w| w == b"hello"),
            "a plaintext request on the TLS port reached the guest"
        );
    }
    // The loop publishes once per turn: the last close may be a turn ahead.
    let deadline = Instant::now() + IO_TIMEOUT;
    while host.metric("sandsock_tls_handshakes_total", &[("outcome", "failed")]) < 20.0 {
        assert!(Instant::now() < deadline, "{}", host.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let failed = host.metric("sandsock_tls_handshakes_total", &[("outcome", "failed")]);
    assert_eq!(failed, 20.0);
    // At most one line a second: 20 refusals within a few seconds log a few.
    let lines = common::count(&host, "TLS handshake failed; closing the connection");
    assert!((1..=5).contains(&lines), "{lines} lines:\n{}", host.log());
    let mut client = Client::connect(addr, &dir, &["a"]);
    assert!(client.get().ends_with("hello\n"));
}

#[test]
fn the_certificate_rotates_with_watch_without_touching_open_connections() {
    let dir = scratch("tls-rotate");
    let first = make_certificates(&dir, "a");
    let second = make_certificates(&dir, "b");
    make_certificates(&dir, "c");
    let (host, addr) = serve_tls(&dir, "a", &["--watch"]);
    // The certificate and the key: the line the SIGHUP test must not find.
    assert_eq!(
        common::count(&host, "watching for changes"),
        2,
        "{}",
        host.log()
    );
    let mut before = Client::connect(addr, &dir, &["a", "b"]);
    assert_eq!(before.server_certificate(), first);
    assert!(before.get().ends_with("hello\n"));

    // The new pair renamed into place (as two renames, a refusal may pass between).
    install_pair(&dir, "b");
    host.wait_for_log("TLS certificate reloaded", IO_TIMEOUT);
    let mut after = Client::connect(addr, &dir, &["a", "b"]);
    assert_eq!(
        after.server_certificate(),
        second,
        "a new connection sees the new pair"
    );
    assert!(after.get().ends_with("hello\n"));
    assert!(
        before.get().ends_with("hello\n"),
        "an open connection goes on"
    );

    // A certificate without its key (c's certificate, b's key) is refused, and the
    // pair serving goes on.
    let refused = common::count(&host, "TLS certificate reload refused");
    let c_cert = std::fs::read(dir.join("c-cert.pem")).unwrap();
    install(&dir.join("cert.pem"), &c_cert);
    host.wait_for_more_log("TLS certificate reload refused", refused, IO_TIMEOUT);
    let log = host.log();
    let last = log
        .lines()
        .rfind(|l| l.contains("TLS certificate reload refused"))
        .unwrap();
    assert!(last.contains("does not go with the certificate"), "{last}");
    let mut later = Client::connect(addr, &dir, &["a", "b"]);
    assert_eq!(later.server_certificate(), second);
    assert!(later.get().ends_with("hello\n"));
}

/// Without `--watch`, a changed pair waits for SIGHUP (or `POST /reload`).
#[test]
fn sighup_and_post_reload_rotate_the_certificate() {
    let dir = scratch("tls-sighup");
    let first = make_certificates(&dir, "a");
    let second = make_certificates(&dir, "b");
    let (host, addr) = serve_tls(&dir, "a", &["--admin", "127.0.0.1:0"]);
    install_pair(&dir, "b");
    // Without --watch nothing in the host looks at the files between signals: no
    // watcher was set up (it says so before `listening on`, so the whole start is
    // in the log by now; the --watch test checks the line). A change then has
    // nothing to act on, and no later line could mark that it had its chance: the
    // positive fact is that the watcher is absent.
    assert_eq!(
        common::count(&host, "watching for changes"),
        0,
        "{}",
        host.log()
    );
    let client = Client::connect(addr, &dir, &["a", "b"]);
    assert_eq!(
        client.server_certificate(),
        first,
        "nothing without a signal"
    );
    host.signal(libc::SIGHUP);
    host.wait_for_log("TLS certificate reloaded", IO_TIMEOUT);
    let client = Client::connect(addr, &dir, &["a", "b"]);
    assert_eq!(client.server_certificate(), second);
    // The one reload was the signal's.
    assert_eq!(
        common::count(&host, "TLS certificate reloaded"),
        1,
        "{}",
        host.log()
    );

    install_pair(&dir, "a");
    let reloaded = common::count(&host, "TLS certificate reloaded");
    assert_eq!(host.admin_request("POST", "/reload").0, 202);
    host.wait_for_more_log("TLS certificate reloaded", reloaded, IO_TIMEOUT);
    let client = Client::connect(addr, &dir, &["a", "b"]);
    assert_eq!(client.server_certificate(), first);
}

/// SIGTERM while a client stalls in its handshake: the handshake ends with the
/// listeners, and the host exits at once rather than after the handshake timeout.
#[test]
fn a_shutdown_does_not_wait_for_handshakes_under_way() {
    let dir = scratch("tls-shutdown");
    make_certificates(&dir, "a");
    let (mut host, addr) = serve_tls(
        &dir,
        "a",
        &[
            "--tls-handshake-timeout",
            "60s",
            "--shutdown-timeout",
            "60s",
        ],
    );
    let mut stalled = TcpStream::connect(addr).unwrap();
    let mut client = Client::connect(addr, &dir, &["a"]);
    assert!(client.get().ends_with("hello\n"));
    drop(client);
    host.signal(libc::SIGTERM);
    let status = host.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "still running, or failed:\n{}",
        host.log()
    );
    stalled.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
}

/// `io.tls` (contract 0.3.0): a guest learns the version, the SNI name and the ALPN
/// protocol of a TLS connection, and `none` for a plaintext one; recorded, a replay
/// tells it the same facts.
#[test]
fn a_guest_learns_the_tls_facts_of_a_connection_and_none_for_plaintext() {
    let dir = scratch("tls-facts");
    make_certificates(&dir, "a");
    let guest = common::test_guest("tells_tls");
    let tapes = dir.join("tapes");
    let record = ["--record", tapes.to_str().unwrap()];
    let (mut host, addr) = serve_tls_guest(guest.to_str().unwrap(), &dir, "a", &record);
    let ca = file(&dir, "a-ca.pem");
    let url = format!("https://localhost:{}/", addr.port());
    // curl offers h2 and http/1.1: the host agrees on http/1.1, its one protocol.
    let said = curl(&ca, &["--http0.9"], std::slice::from_ref(&url));
    assert_eq!(said[0].2, "tls TLSv1.3 localhost http/1.1\n");
    let said = curl(&ca, &["--http0.9", "--tls-max", "1.2"], &[url]);
    assert_eq!(said[0].2, "tls TLSv1.2 localhost http/1.1\n");
    // By address: no server name is sent.
    let by_ip = format!("https://127.0.0.1:{}/", addr.port());
    let said = curl(&ca, &["--http0.9"], &[by_ip]);
    assert_eq!(said[0].2, "tls TLSv1.3 - http/1.1\n");
    let mut plain = host.connect();
    assert_eq!(common::read_line(&mut plain), "plain");
    drop(plain);
    host.signal(libc::SIGTERM);
    assert!(host.wait_exit(Duration::from_secs(30)).is_some());
    let replayed = common::run_host(&[
        "replay",
        tapes.to_str().unwrap(),
        "--guest",
        guest.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{out}");
    assert!(out.contains("0 diverge, 0 trapped"), "{out}");
    assert!(!out.contains(" 0 replayed"), "{out}");
}

/// `host load --tls-ca`: the benchmark's client over TLS, every answer checked, with
/// keep-alive and with a full handshake per request; a name the certificate does not
/// carry fails every request.
#[test]
fn host_load_speaks_tls() {
    let dir = scratch("tls-load");
    make_certificates(&dir, "a");
    let (_host, addr) = serve_tls(&dir, "a", &[]);
    let (addr, ca) = (addr.to_string(), file(&dir, "a-ca.pem"));
    let load = |flags: &[&str]| {
        let base = [
            "load",
            addr.as_str(),
            "--http",
            "--quiet",
            "--tls-ca",
            ca.as_str(),
        ];
        run_host(&[&base[..], flags].concat())
    };
    for (flags, n) in [
        (&["-c", "10", "-n", "2000"][..], 2000),
        (&["-c", "5", "-n", "200", "--close"], 200),
    ] {
        let out = load(flags);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{report}");
        assert!(
            report.contains(&format!("requests ok:    {n} of {n}")),
            "{report}"
        );
    }
    let out = load(&[
        "-c",
        "2",
        "-n",
        "4",
        "--tls-server-name",
        "elsewhere.example",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("errors:         4"), "{report}");
    assert!(report.contains("certificate"), "{report}");
}

#[test]
fn bad_certificate_files_at_the_start_are_one_line_and_exit_1() {
    let dir = scratch("tls-bad");
    make_certificates(&dir, "a");
    make_certificates(&dir, "b");
    let missing = dir.join("missing.pem");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let path = |p: &PathBuf| p.display().to_string();
    let cases: [(String, String, &str); 3] = [
        (
            path(&missing),
            file(&dir, "a-key.pem"),
            "cannot read the TLS certificate",
        ),
        (path(&not_pem), file(&dir, "a-key.pem"), "no certificate in"),
        (
            file(&dir, "a-cert.pem"),
            file(&dir, "b-key.pem"),
            "does not go with the certificate",
        ),
    ];
    for (cert, key, why) in &cases {
        let out = run_host(&[
            "--guest",
            "http",
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{said}");
        let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{said}");
        assert!(errors[0].contains(why), "{said}");
        assert!(!said.contains("listening on"), "{said}");
    }
    // --listen-tls without a certificate is a usage error.
    let out = run_host(&["--guest", "http", "--listen-tls", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

/// A binary upgrade hands the TLS listener on: the new process loads the same
/// certificate and completes the handshakes of connections that arrive after it.
/// An open TLS connection stays with the old process to finish (its session cannot
/// move); a plain one beside it moves.
#[test]
fn an_upgrade_hands_the_tls_listener_to_the_new_process() {
    let dir = scratch("tls-upgrade");
    make_certificates(&dir, "a");
    install_pair(&dir, "a");
    let (cert, key) = (file(&dir, "cert.pem"), file(&dir, "key.pem"));
    let binary = common::upgrade::installed_binary("tls-upgrade-bin");
    let mut command = Command::new(&binary);
    command.args(["--guest", "http", "--listen", "127.0.0.1:0"]);
    command.args([
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let mut host = Host::start_command(command, false);
    let addr = tls_addr(&host);
    let mut kept = Client::connect(addr, &dir, &["a"]);
    assert!(kept.get().ends_with("hello\n"));
    let mut plain = host.connect();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"hello\n") {
        plain.read_exact(&mut byte).expect("the plain answer");
        answer.push(byte[0]);
    }
    host.signal(libc::SIGUSR2);
    // The old process's line: it may come after the new one's "serving".
    let line = common::upgrade::nth_line(&host, "upgrade: the new process took", 0);
    assert!(line.contains("handed=1 kept=1"), "{line}");
    drop(kept);
    // The new process is killed with the host (its log names it).
    assert!(
        host.wait_exit(Duration::from_secs(60)).is_some(),
        "the old process exits"
    );
    for _ in 0..3 {
        assert!(
            Client::connect(addr, &dir, &["a"])
                .get()
                .ends_with("hello\n")
        );
    }
}
