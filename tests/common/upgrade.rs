//! What the upgrade tests share with the others: a copy of the host binary installed
//! as a package would, socket activation as systemd does it, and the pids of the
//! processes upgrades started (so that every test's host takes them down with it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Host, IO_TIMEOUT, host_bin, run_host, scratch};

/// A command that starts the host as systemd would with socket activation:
/// `fds` on descriptors 3, 4, ..., named by `names` (`LISTEN_FDNAMES`), and
/// `LISTEN_PID` the host's (or `listen_pid`, to pass them to someone else).
pub fn socket_activated_for(
    program: &Path,
    fds: &[RawFd],
    names: Option<&str>,
    args: &[&str],
    listen_pid: Option<u32>,
) -> Command {
    // `exec` keeps the shell's pid, `$$`: LISTEN_PID when it is the host's.
    let pid = listen_pid.map_or("$$".to_string(), |pid| pid.to_string());
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("LISTEN_PID={pid} exec \"$0\" \"$@\""))
        .arg(program)
        .args(args)
        .env("LISTEN_FDS", fds.len().to_string());
    if let Some(names) = names {
        command.env("LISTEN_FDNAMES", names);
    }
    pass_descriptors(&mut command, fds);
    command
}

/// [`socket_activated_for`] the host itself.
pub fn socket_activated(
    program: &Path,
    fds: &[RawFd],
    names: Option<&str>,
    args: &[&str],
) -> Command {
    socket_activated_for(program, fds, names, args, None)
}

/// Makes `command`'s process start with `fds` (at most 4) on descriptors 3, 4, ...
pub fn pass_descriptors(command: &mut Command, fds: &[RawFd]) {
    assert!(fds.len() <= 4);
    let mut raw: [RawFd; 4] = [-1; 4];
    raw[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    // SAFETY: between fork and exec only fcntl and dup2, which are
    // async-signal-safe, and no allocation. Each descriptor is first duplicated
    // above the target range (close-on-exec: the duplicate itself is not passed), so
    // that moving one onto 3, 4, ... never overwrites another still to be moved
    // (and dup2 never meets itself, which would leave close-on-exec set).
    unsafe {
        command.pre_exec(move || {
            let mut moved: [RawFd; 4] = [-1; 4];
            for i in 0..count {
                moved[i] = libc::fcntl(raw[i], libc::F_DUPFD_CLOEXEC, 10);
            }
            for (i, &fd) in moved.iter().enumerate().take(count) {
                if fd == -1 || libc::dup2(fd, 3 + i as RawFd) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A copy of the host binary in a directory of its own (mode 0755), as a package
/// would install it: upgrades run the file at this path.
pub fn installed_binary(test: &str) -> PathBuf {
    let dir = scratch(test).join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("host");
    install_binary(&path);
    path
}

/// Puts a fresh copy of the host binary at `path` as a package manager does: a new
/// file renamed over the old one (the running process's file is then deleted).
pub fn install_binary(path: &Path) {
    copy_executable(Path::new(host_bin()), path);
}

/// Puts a shell script (`body`, after its `#!/bin/sh` line) at `path` as a package
/// would install a binary there: a stand-in for the next version that misbehaves
/// as a test needs.
pub fn install_script(path: &Path, body: &str) {
    let text = path.with_extension("sh");
    std::fs::write(&text, format!("#!/bin/sh\n{body}")).unwrap();
    copy_executable(&text, path);
}

/// Copies `source` to `path` (mode 0755) through a new file renamed over it, the copy
/// written by `cp`, never by this process: a descriptor open for writing here would be
/// inherited by any child another test thread forks at that moment, and until that
/// child execs, running the file fails with "Text file busy" (ETXTBSY), in this
/// process or in a host that upgrades to it.
pub fn copy_executable(source: &Path, path: &Path) {
    let temporary = path.with_extension("new");
    let status = Command::new("cp")
        .arg(source)
        .arg(&temporary)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp {} failed", source.display());
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The pids of the new processes upgrades started, from a host's log (text or JSON).
pub fn upgrade_pids(log: &str) -> Vec<libc::pid_t> {
    log.lines()
        .filter(|line| line.contains("handed it the listening sockets"))
        .filter_map(|line| {
            let (_, rest) = line
                .split_once(" pid=")
                .or_else(|| line.split_once("\"pid\":"))?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// How long an upgrade may take in a test: the new process loads its guest from
/// the compiled cache, and the old one finishes its connections.
pub const UPGRADE_WAIT: Duration = Duration::from_secs(60);

/// Starts the host at `binary` with `args` on 127.0.0.1:0 and an admin listener.
pub fn start(binary: &Path, args: &[&str]) -> Host {
    let mut command = Command::new(binary);
    command
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    Host::start_command(command, true)
}

/// The `index`-th log line (0-based) that contains `needle`, once there is one.
pub fn nth_line(host: &Host, needle: &str, index: usize) -> String {
    host.wait_for_more_log(needle, index, UPGRADE_WAIT);
    let log = host.log();
    let line = log.lines().filter(|l| l.contains(needle)).nth(index);
    line.unwrap().to_string()
}

/// The pid the `index`-th upgrade's new process logged (0-based), once it serves.
pub fn successor_pid(host: &Host, index: usize) -> u32 {
    let line = nth_line(host, "upgrade: serving; took over", index);
    field(&line, "pid").parse().unwrap()
}

/// The value of `name=VALUE` in a text log line.
pub fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let at = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    line[at + name.len() + 2..]
        .split_whitespace()
        .next()
        .unwrap()
}

/// Whether `pid` has exited (no process, or a zombie left for its new parent).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        }
    }
}

pub fn wait_gone(pid: u32) {
    let deadline = Instant::now() + UPGRADE_WAIT;
    while !gone(pid) {
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP request on a new connection: the status line.
pub fn get(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

/// Raises this test process's open-file limit to the hard one: tests that hold
/// a thousand client sockets and more need it.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one properly sized struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// `host load` against a host, in runs of a fixed number of requests, one run after
/// another until it is stopped: however fast the machine, the load outlasts the
/// upgrades a test makes meanwhile.
pub struct Load {
    stop: Arc<AtomicBool>,
    runs: JoinHandle<Vec<Output>>,
    requests: u32,
}

impl Load {
    /// Runs of `requests` HTTP requests on 16 connections to `addr`, `extra` the
    /// other flags (`--close`: a connection per request).
    pub fn start(addr: SocketAddr, requests: u32, extra: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut args: Vec<String> = ["load", &addr.to_string(), "--http", "-c", "16", "-n"]
            .map(String::from)
            .to_vec();
        args.push(requests.to_string());
        args.extend(["--timeout", "120", "--quiet"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        let runs = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut runs = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    runs.push(run_host(&args));
                }
                runs
            })
        };
        Self {
            stop,
            runs,
            requests,
        }
    }

    /// Stops after the run under way, and checks that every run had every request
    /// answered and no error; returns how many runs there were.
    pub fn finish(self, host: &Host) -> usize {
        self.stop.store(true, Ordering::Release);
        let runs = self.runs.join().unwrap();
        let all = format!("requests ok:    {0} of {0}\n", self.requests);
        for out in &runs {
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{report}\n{}", host.log());
            assert!(report.contains(&all), "{report}\n{}", host.log());
            assert!(report.contains("errors:         0\n"), "{report}");
        }
        runs.len()
    }
}
