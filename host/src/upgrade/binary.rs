//! [`Binary`]: what an upgrade runs: the file the host was started from (its path,
//! taken at start: after a package upgrade the running file is gone and
//! `/proc/self/exe` names a deleted one) with the arguments it was started with.
//!
//! The path is the one the host was started by (`argv[0]`, made absolute), not the
//! file it resolved to: a deploy that re-points a symbolic link at a new version
//! (`/usr/local/bin/host -> /opt/host-1.3/host`) upgrades to what the link names
//! then.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// The environment variable that tells a new process which descriptor is its link
/// to the old one.
pub const LINK_FD_VAR: &str = "SANDSOCK_UPGRADE_FD";
/// The descriptor the link gets in the new process: the first after stdio, where
/// systemd's sockets would be (a new process started by an upgrade has none).
const LINK_FD: i32 = 3;

/// The host's own file and arguments, as started.
#[derive(Clone, Debug)]
pub struct Binary {
    path: PathBuf,
    args: Vec<OsString>,
}

impl Binary {
    /// This process's file and arguments; an error when the kernel cannot say
    /// which file runs (then an upgrade is refused with that reason).
    pub fn of_this_process() -> Result<Self> {
        let exe = std::env::current_exe().context("cannot tell which file this host runs")?;
        let mut args = std::env::args_os();
        let invoked = args
            .next()
            .and_then(|arg0| invoked_as(Path::new(&arg0), &exe));
        Ok(Self {
            path: invoked.unwrap_or(exe),
            args: args.collect(),
        })
    }

    /// The file an upgrade runs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the file with the same arguments, its link to us on descriptor 3,
    /// its stdout and stderr ours. Refused when someone other than this process's
    /// user (or root) could write the file or its directory: the new process gets
    /// the listening sockets and everything the host can reach.
    pub fn start(&self, link: OwnedFd) -> Result<Child> {
        check_writers(&self.path)?;
        let mut command = Command::new(&self.path);
        command
            .args(&self.args)
            .env(LINK_FD_VAR, LINK_FD.to_string())
            // Socket activation is this process's, not the new one's: its sockets
            // come over the link.
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::null());
        let raw = link.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls: dup2 and fcntl.
        unsafe {
            command.pre_exec(move || {
                if raw == LINK_FD {
                    // dup2 onto itself keeps close-on-exec: clear it instead.
                    if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, LINK_FD) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.path.display()))?;
        drop(link);
        Ok(child)
    }
}

/// The absolute path `arg0` names (against the working directory when it holds a
/// `/`, else found on `PATH`), if that is the file running (`exe`): `argv[0]` is
/// whatever the starter chose, so it is trusted only when it leads here.
fn invoked_as(arg0: &Path, exe: &Path) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if arg0.as_os_str().as_encoded_bytes().contains(&b'/') {
        vec![std::env::current_dir().ok()?.join(arg0)]
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(arg0))
            .collect()
    };
    let running = std::fs::canonicalize(exe).ok()?;
    candidates
        .into_iter()
        .find(|path| std::fs::canonicalize(path).is_ok_and(|real| real == running))
}

/// Refuses a file (or its directory, or the directory of the file a symbolic link
/// names) that a user other than ours or root owns, or that its group or everyone
/// may write.
fn check_writers(path: &Path) -> Result<()> {
    let uid = rustix::process::geteuid().as_raw();
    let dir = path.parent().unwrap_or(Path::new("/"));
    let real = std::fs::canonicalize(path)
        .with_context(|| format!("cannot read the binary {}", path.display()))?;
    let real_dir = real.parent().unwrap_or(Path::new("/")).to_path_buf();
    for (what, at) in [
        ("binary", path),
        ("binary's directory", dir),
        ("binary's directory", &real_dir),
    ] {
        let meta = std::fs::metadata(at)
            .with_context(|| format!("cannot read the {what} {}", at.display()))?;
        let sticky_dir = meta.is_dir() && meta.mode() & libc::S_ISVTX != 0;
        if meta.uid() != uid && meta.uid() != 0 {
            bail!(
                "the {what} {} belongs to uid {}, who could change the code this host would run: not starting it",
                at.display(),
                meta.uid()
            );
        }
        if meta.mode() & 0o022 != 0 && !sticky_dir {
            bail!(
                "the {what} {} is writable by its group or by everyone (mode {:o}): not starting it",
                at.display(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_others_may_write_is_refused() {
        let dir = std::env::temp_dir().join(format!("sandsock-binary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("host");
        std::fs::write(&file, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_writers(&file).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o775)).unwrap();
        let error = check_writers(&file).unwrap_err().to_string();
        assert!(error.contains("writable by its group"), "{error}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = check_writers(&file).unwrap_err().to_string();
        assert!(error.contains("binary's directory"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
