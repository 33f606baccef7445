//! A real `redis-server` on loopback for the tests of `--store redis://`: started on a
//! free port, stopped, resumed, killed and started again there, and ended with the
//! test. Without a `redis-server` on the PATH the tests fail, saying how to get one
//! (`.ci/run` installs Debian's); they never skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `redis-server` process, with what it was started with.
pub struct RedisServer {
    child: Option<Child>,
    /// The port it listens on (its TLS port, for a TLS server).
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    password: Option<String>,
    tls: bool,
}

impl RedisServer {
    /// A server with no password.
    pub fn start() -> Self {
        Self::start_with(&[], None, false)
    }

    /// A server with `password` required of every client.
    pub fn with_password(password: &str) -> Self {
        Self::start_with(&[], Some(password), false)
    }

    /// A TLS-only server with the certificate and key in `dir` (`server.pem`,
    /// `server.key`, `ca.pem`); clients need no certificate.
    pub fn with_tls(dir: &std::path::Path) -> Self {
        let file = |name: &str| dir.join(name).display().to_string();
        let extra = [
            "--tls-cert-file".to_string(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        Self::start_with(&extra, None, true)
    }

    fn start_with(extra: &[&str], password: Option<&str>, tls: bool) -> Self {
        let dir = super::scratch(&format!("redis-{}", unique()));
        let mut last = String::new();
        // A free port is found by binding it and letting it go; another process may
        // take it in between, so a server that cannot bind is tried on another.
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                dir: dir.clone(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                password: password.map(str::to_string),
                tls,
            };
            match server.launch() {
                Ok(()) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// Starts the process on `self.port` and waits until it answers.
    fn launch(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut command = Command::new(binary());
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.display().to_string()]);
        if self.tls {
            command.args(["--port", "0", "--tls-port", &port]);
        } else {
            command.args(["--port", &port]);
        }
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = command
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("it exited ({status}): {}", self.log()));
            }
            if self.answers() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "no answer within {START_TIMEOUT:?}: {}",
            self.log()
        ))
    }

    /// Whether the port takes a connection, and (without TLS) the server answers
    /// a PING (with an error, if it wants a password: it is up).
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0; 1];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && matches!(reply[0], b'+' | b'-')
    }

    /// `redis://127.0.0.1:PORT` (`rediss://localhost:PORT` for TLS: the name its
    /// certificate holds).
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        // The port can stay taken for a moment after the kill.
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => panic!("no restart: {why}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `redis-cli ARGS` against it; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            command.env("REDISCLI_AUTH", password);
        }
        let out = command.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// How many connections subscribe to `channel`.
    pub fn subscribers(&self, channel: &str) -> usize {
        let said = self.cli(&["PUBSUB", "NUMSUB", channel]);
        said.lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until `channel` has `count` subscribers (each host listening to it).
    pub fn wait_subscribers(&self, channel: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.subscribers(channel) < count {
            assert!(
                Instant::now() < deadline,
                "{channel} has {} subscribers, not {count}",
                self.subscribers(channel)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped server too.
        self.kill();
    }
}

/// The `redis-server` to run: Debian's, which `.ci/run` installs.
fn binary() -> &'static str {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let on_path = std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("redis-server"))
                    .any(|file| file.is_file())
            })
            .unwrap_or(false);
        assert!(
            on_path,
            "redis-server is not installed: the Redis tests need a real server \
             (`apt-get install redis-server`, as .ci/run does; see README.md)"
        );
        "redis-server".to_string()
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// A number no other server of this test process has.
fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
