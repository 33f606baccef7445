//! Helpers shared by the integration tests: start the real `host` binary on
//! `127.0.0.1:0`, find its address from its `listening on ADDR` line, talk to it over
//! loopback, and kill it when the test ends, pass or fail.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod languages;
pub mod redis;
pub mod upgrade;

/// How long a host may take to start: a bound, not a timing (it compiles its guest
/// first, and a Python guest is ~18 MB of wasm).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Every socket read or write in a test gives up after this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The `host` binary under test.
pub fn host_bin() -> &'static str {
    env!("CARGO_BIN_EXE_host")
}

/// Whether the hosts of this run are on `--io uring` (the README's second pass of
/// the suite sets `SANDSOCK_IO=uring`, which every host started here inherits).
pub fn on_uring() -> bool {
    std::env::var("SANDSOCK_IO").as_deref() == Ok("uring")
}

/// A test guest built from `guest/testing/`.
pub fn test_guest(name: &str) -> PathBuf {
    PathBuf::from(env!("SANDSOCK_GUEST_DIR")).join(format!("{name}.wasm"))
}

/// The `XDG_CACHE_HOME` every host started by the tests gets, unless a test sets its
/// own: a directory of cargo's for test files, so that no test reads or writes the
/// user's cache of compiled guests, and hosts of one run share their compiled guests.
pub fn test_cache_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache")
}

/// A running host, killed on drop.
pub struct Host {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The admin listener's address, when started with `--admin 127.0.0.1:0`.
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
}

impl Host {
    /// Starts `host ARGS --listen 127.0.0.1:0` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Host {
        Host::start_env(args, &[])
    }

    /// Like [`Host::start`], with extra environment variables for the host.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Host {
        let mut command = Command::new(host_bin());
        command
            .args(args)
            .envs(env.iter().copied())
            .args(["--listen", "127.0.0.1:0"]);
        Host::start_command(command, args.contains(&"--admin"))
    }

    /// Starts `command` (a host, however started: another copy of the binary, a
    /// wrapper) with the tests' cache and a piped stderr, and waits for its
    /// `listening on` line; and for its `admin listening on` line if `admin`.
    pub fn start_command(mut command: Command, admin: bool) -> Host {
        // The tests' shared cache, unless the test chose another.
        if !command.get_envs().any(|(key, _)| key == "XDG_CACHE_HOME") {
            command.env("XDG_CACHE_HOME", test_cache_home());
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let (admin_tx, admin_rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let said = announcement(&line);
                if let Some(addr) = said.strip_prefix("admin listening on ")
                    && let Ok(addr) = addr.trim().parse::<SocketAddr>()
                {
                    let _ = admin_tx.send(addr);
                }
                if let Some(addr) = said.strip_prefix("listening on ")
                    && let (Some(tx), Ok(addr)) = (addr_tx.as_ref(), addr.trim().parse())
                {
                    let _ = tx.send(addr);
                    addr_tx = None;
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&strip_ansi(&line));
                log.push('\n');
            }
        });
        let addr: SocketAddr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("host did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        // The admin line comes right after the listening ones, or not at all.
        let admin = if admin {
            admin_rx.recv_timeout(START_TIMEOUT).ok()
        } else {
            None
        };
        Host {
            child,
            addr,
            admin,
            log,
        }
    }

    /// An HTTP request to the admin listener; the status and the body.
    pub fn admin_request(&self, method: &str, path: &str) -> (u16, String) {
        let addr = self.admin.expect("the host was started with --admin");
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to admin");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("the admin answer");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// `GET /metrics`, parsed as Prometheus text.
    pub fn metrics(&self) -> prometheus_parse::Scrape {
        let (status, body) = self.admin_request("GET", "/metrics");
        assert_eq!(status, 200, "{body}");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("/metrics parses as Prometheus text")
    }

    /// The sum of every sample of the metric `name` whose labels include `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    /// A connected client socket with the test timeouts.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).expect("connect to host");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// The host's resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kib * 1024
    }

    /// The process id of the host started (an upgrade's new process has another).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the host wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal (SIGTERM, SIGINT, ...) to the host process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it did not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Stops the process (SIGSTOP) and waits until the kernel says it is stopped:
    /// the signal alone is asynchronous.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&stat).expect("read /proc stat");
            // The state follows the command name, which is in parentheses.
            let state = text
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            if state == Some("T") {
                return;
            }
            assert!(Instant::now() < deadline, "the host did not stop: {text}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits until the metric `name` (summed over the samples whose labels include
    /// `labels`, as [`Host::metric`] reads it) satisfies `until`, or panics with its
    /// value and the log after `timeout`; returns the value. The loop publishes once
    /// per turn, so a scrape may be a turn behind: a wait, not a single look.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        until: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> f64 {
        let scrape = self.wait_metrics(
            &format!("{name}{labels:?}"),
            |scrape| until(metric_value(scrape, name, labels)),
            timeout,
        );
        metric_value(&scrape, name, labels)
    }

    /// Waits until one scrape of `/metrics` satisfies `until` (for conditions on
    /// several metrics at once), or panics naming `what` after `timeout`; returns
    /// that scrape.
    pub fn wait_metrics(
        &self,
        what: &str,
        until: impl Fn(&prometheus_parse::Scrape) -> bool,
        timeout: Duration,
    ) -> prometheus_parse::Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let scrape = self.metrics();
            if until(&scrape) {
                return scrape;
            }
            if Instant::now() >= deadline {
                let (_, body) = self.admin_request("GET", "/metrics");
                panic!(
                    "the metrics never showed {what} within {timeout:?}:\n{body}\nthe log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the log contains `needle`, or panics with the log after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_for_more_log(needle, 0, timeout);
    }

    /// Waits until `needle` appears more than `seen` times in the log.
    pub fn wait_for_more_log(&self, needle: &str, seen: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() > seen {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "log never showed {needle:?} more than {seen} time(s):\n{}",
            self.log()
        );
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The processes binary upgrades started outlive it: its log names each.
        for pid in upgrade::upgrade_pids(&self.log()) {
            // SAFETY: kill has no memory preconditions; each is a host this test
            // started, through an upgrade.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The sum of every sample of `name` in `scrape` whose labels include `labels`.
/// What a log line says where the host listens: the line itself in text mode, the
/// record's message in JSON mode (`--log-format json`).
/// Waits until the host (started with `--admin`) holds `clients` connections, each
/// accepted by its worker, its instance told (the gauge is published after the call
/// that handled `accepted`): with several workers, which accept in no order between
/// them, the way to know that every client of a chat room has joined it.
pub fn joined(host: &Host, clients: usize) {
    let open = |n: f64| n >= clients as f64;
    host.wait_metric(
        "sandsock_connections_open",
        &[],
        open,
        Duration::from_secs(10),
    );
}

pub fn announcement(line: &str) -> String {
    if line.starts_with('{')
        && let Ok(record) = serde_json::from_str::<serde_json::Value>(line)
        && let Some(message) = record["message"].as_str()
    {
        return message.to_string();
    }
    line.to_string()
}

pub fn metric_value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v)))
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// `line` without ANSI escape sequences (colours), so that log matching does not
/// depend on how the host colours its output.
pub fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..=~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Runs `host ARGS` to completion (bounded), for the subcommands and error cases.
pub fn run_host(args: &[&str]) -> Output {
    let mut child = Command::new(host_bin())
        .args(args)
        .env("XDG_CACHE_HOME", test_cache_home())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "host {args:?} did not exit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `host ARGS --listen 127.0.0.1:0` with `RUST_LOG` set.
pub fn start_with_log_level(args: &[&str], level: &str) -> Host {
    Host::start_env(args, &[("RUST_LOG", level)])
}

/// Reads exactly `n` bytes.
pub fn read_exact_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream
        .read_exact(&mut buf)
        .expect("read the expected bytes");
    buf
}

/// Reads until the peer closes, bounded by the socket timeout.
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .expect("read until the peer closes");
    buf
}

/// Reads until the peer closes or resets: for answers after which the server closes
/// while the client may still have been sending (a reset may follow the answer).
pub fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return buf,
            Err(e) => panic!("reading until the server closes: {e}"),
        }
    }
}

/// Asserts that the server closed `stream` without sending a byte: the read ends in
/// end-of-stream or a reset (the kernel's answer when the server closed while input
/// was unread). Anything else fails: an answer, or no end within the socket timeout
/// (a hung host).
pub fn assert_closed_without_answer(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "{what}: answered {:?} instead of closing",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: not closed ({e})"),
    }
}

/// Reads one `\n`-terminated line (byte by byte: tests only).
pub fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream.read(&mut byte).expect("read a line");
        assert_eq!(
            n,
            1,
            "connection closed mid-line after {:?}",
            String::from_utf8_lossy(&line)
        );
        if byte[0] == b'\n' {
            return String::from_utf8(line).expect("utf-8 line");
        }
        line.push(byte[0]);
    }
}

/// Sends `data` from a second thread and then shuts down the write side, while
/// this one reads until the server closes: a half-close round trip that cannot
/// deadlock on full socket buffers. Returns what came back.
pub fn send_finish_and_read_all(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let mut writer = stream.try_clone().expect("clone the client socket");
    let data = data.to_vec();
    let sender = std::thread::spawn(move || {
        writer.write_all(&data).expect("send");
        writer.shutdown(Shutdown::Write).expect("shutdown write");
    });
    let received = read_to_end(stream);
    sender.join().expect("the sender failed");
    received
}

/// Waits until the server has shut down its write side of `stream` (its FIN has
/// arrived), without reading anything: what it sent stays there to be read. Panics
/// after `timeout`.
pub fn wait_for_fin(stream: &TcpStream, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(stream),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid, initialised pollfd, and its count.
        let rc = unsafe { libc::poll(&mut fd, 1, left.as_millis().min(1000) as libc::c_int) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll: {e}");
        } else if fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not shut down its side within {timeout:?}"
        );
    }
}

/// Closes `stream` with SO_LINGER 0, which makes the kernel send a reset (RST)
/// instead of a FIN.
pub fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized, initialised option value.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
}

/// A deterministic, non-repeating-looking payload of `len` bytes.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

// ---- guest files and HTTP, for hot swaps and workers ----------------------------

/// An empty scratch directory for one test, removed with every other scratch
/// directory of the test process when it exits (a failed test's too: read its files
/// while it runs, or keep them with `SANDSOCK_KEEP_SCRATCH=1`).
pub fn scratch(name: &str) -> PathBuf {
    static CLEAN_UP_AT_EXIT: std::sync::Once = std::sync::Once::new();
    CLEAN_UP_AT_EXIT.call_once(|| {
        if std::env::var_os("SANDSOCK_KEEP_SCRATCH").is_none() {
            // SAFETY: `remove_scratch` is a plain function that neither unwinds nor
            // touches anything being torn down; libtest leaves through `exit`, which
            // runs it, whether the tests passed or not.
            unsafe { libc::atexit(remove_scratch) };
        }
    });
    let dir = std::env::temp_dir().join(format!("{}{name}", scratch_prefix()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What every scratch directory of this test process is named with.
fn scratch_prefix() -> String {
    format!("sandsock-test-{}-", std::process::id())
}

/// Removes this test process's scratch directories, at its exit.
extern "C" fn remove_scratch() {
    let prefix = scratch_prefix();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The bytes of a built-in example, as `host examples --out` writes them.
pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("SANDSOCK_GUEST_DIR")).join(format!("{name}.wasm"))).unwrap()
}

/// Replaces `path` the way many builds do: write a temporary file, rename it over.
pub fn install(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Installs `bytes` as a fresh guest file for test `name` and serves it with
/// `host --guest FILE --no-tier-up FLAGS`; returns the host and the file to swap.
pub fn serve_file(name: &str, bytes: &[u8], flags: &[&str]) -> (Host, PathBuf) {
    let path = scratch(name).join("guest.wasm");
    install(&path, bytes);
    // Swap tests count generations: a tier-up (a second swap, when a test finds the
    // new guest not yet in the shared cache) would make the count depend on timing.
    let mut args = vec!["--guest", path.to_str().unwrap(), "--no-tier-up"];
    args.extend_from_slice(flags);
    (Host::start(&args), path)
}

/// The same component with one more custom section: other bytes (another digest,
/// so a new generation), the same code.
pub fn with_custom_section(mut bytes: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    let name = b"sandsock-test";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload);
    bytes.push(0);
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        bytes.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&section);
    bytes
}

/// The `http_v2` test guest's bytes.
pub fn http_v2() -> Vec<u8> {
    std::fs::read(test_guest("http_v2")).unwrap()
}

/// One keep-alive GET; returns the body.
pub fn get(stream: &mut BufReader<TcpStream>) -> String {
    stream
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send a request");
    read_body(stream)
}

/// Reads one `200` response; returns its body.
pub fn read_body(stream: &mut BufReader<TcpStream>) -> String {
    let mut length = None;
    let mut status = String::new();
    stream.read_line(&mut status).expect("read a status line");
    assert!(status.starts_with("HTTP/1.1 200"), "status {status:?}");
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).expect("read a header");
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = Some(value.trim().parse::<usize>().unwrap());
        }
    }
    let mut body = vec![0; length.expect("a Content-Length")];
    stream.read_exact(&mut body).expect("read a body");
    String::from_utf8(body).unwrap()
}

/// A keep-alive HTTP client connection.
pub fn connect(host: &Host) -> BufReader<TcpStream> {
    BufReader::new(host.connect())
}

/// The body a brand-new connection gets.
pub fn fresh_body(host: &Host) -> String {
    get(&mut connect(host))
}

/// Waits until the host has swapped to `generation`.
pub fn wait_swapped_to(host: &Host, generation: u32) {
    host.wait_for_log(
        &format!("swap to generation {generation} "),
        Duration::from_secs(30),
    );
}

/// How often `needle` appears in the host's log.
pub fn count(host: &Host, needle: &str) -> usize {
    host.log().matches(needle).count()
}

/// Sends SIGHUP to a host serving a guest file that has not changed since it was
/// last loaded, and waits for the loader's `reload skipped` line. The loader takes
/// its triggers one at a time, in order, and a tier-up is the second half of the
/// reload that brought the code: once this line is there, every reload triggered
/// before the signal has run its course and handed to the loop whatever it loaded.
///
/// Only for hosts where nothing else can log `reload skipped` meanwhile: no
/// `--watch` (a watcher may send a trigger of its own late).
pub fn reload_skipped(host: &Host) {
    let seen = count(host, "reload skipped");
    host.signal(libc::SIGHUP);
    host.wait_for_more_log("reload skipped", seen, Duration::from_secs(30));
}

/// Waits until the log of a one-worker host without `--watch`, serving a guest file
/// that has not changed since it was last loaded, shows everything the reloads
/// triggered so far led to, swaps and tier-ups included, so that a test can then
/// check that something did *not* happen:
/// 1. a skipped reload ([`reload_skipped`]): the loader has handed over all it
///    loaded, and woken the loop;
/// 2. `round_trip`, a request answered: the loop takes a new guest (and logs its
///    swap) in the turn it is woken, before it serves anything that came later;
/// 3. a second skipped reload: the lines the loop wrote before the answer are
///    before this one in the log, since the signal was sent after the answer.
pub fn reloads_settled(host: &Host, round_trip: impl Fn(&Host)) {
    reload_skipped(host);
    round_trip(host);
    reload_skipped(host);
}

// ---- raw output of a child ------------------------------------------------------

/// The lines a child writes to a pipe (its stderr, say), read by a thread as they
/// come, kept raw: colours and all, which [`Host`] strips from its log.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Lines {
    /// Starts reading `pipe`.
    pub fn read(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line that satisfies `found` and returns it; panics with the lines
    /// so far if the pipe ends first or `timeout` passes.
    pub fn wait_for(&mut self, found: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if found(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no such line ({e}) among:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Reads until the pipe ends (the child closed it, or exited); panics with the
    /// lines so far if that takes longer than `timeout`.
    pub fn read_to_end(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the pipe did not end within {timeout:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Everything read so far, a line each.
    pub fn text(&self) -> String {
        self.seen.iter().map(|line| format!("{line}\n")).collect()
    }
}
