//! What the upgrade tests share with the others: a copy of the host binary installed
//! as a package would, socket activation as systemd does it, and the pids of the
//! processes upgrades started (so that every test's host takes them down with it).

use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{host_bin, scratch};

/// A command that starts the host as systemd would with socket activation:
/// `fds` on descriptors 3, 4, ..., named by `names` (`LISTEN_FDNAMES`), and
/// `LISTEN_PID` the host's.
pub fn socket_activated(
    program: &Path,
    fds: &[RawFd],
    names: Option<&str>,
    args: &[&str],
) -> Command {
    assert!(fds.len() <= 4);
    let mut raw: [RawFd; 4] = [-1; 4];
    raw[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    // `exec` keeps the shell's pid, which is what LISTEN_PID must be.
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(program)
        .args(args)
        .env("LISTEN_FDS", count.to_string());
    if let Some(names) = names {
        command.env("LISTEN_FDNAMES", names);
    }
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
    command
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
    let temporary = path.with_extension("new");
    std::fs::copy(host_bin(), &temporary).unwrap();
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
