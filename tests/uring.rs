//! `--io uring` where the system refuses io_uring: the host says so in one line and
//! exits, and the same system serves on epoll. Everything else about the ring is
//! the rest of the suite's to prove: README.md's test command runs every test
//! that touches the loop a second time with `SANDSOCK_IO=uring`.

mod common;

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::upgrade::get;
use common::{Host, host_bin, test_cache_home};

/// Makes the child's `io_uring_setup` fail with EPERM, as Docker's and most
/// container runtimes' default seccomp profiles do; every other system call is
/// allowed. The filter is the kernel's own (no library between): load the system
/// call number, compare, return.
fn refuse_io_uring(command: &mut Command) {
    const LOAD_NR: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JUMP_EQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // system calls (two prctl) on memory of its own.
    unsafe {
        command.pre_exec(|| {
            let filter = [
                // seccomp_data.nr, at offset 0
                libc::sock_filter {
                    code: LOAD_NR,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: JUMP_EQ,
                    jt: 0,
                    jf: 1,
                    k: libc::SYS_io_uring_setup as u32,
                },
                libc::sock_filter {
                    code: RETURN,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                },
                libc::sock_filter {
                    code: RETURN,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
            ];
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A host under the filter, with `io` (`epoll` or `uring`).
fn filtered_host(io: &str) -> Command {
    let mut command = Command::new(host_bin());
    command
        .args(["--guest", "http", "--io", io, "--listen", "127.0.0.1:0"])
        .env("XDG_CACHE_HOME", test_cache_home())
        .env_remove("SANDSOCK_IO");
    refuse_io_uring(&mut command);
    command
}

#[test]
fn where_a_seccomp_filter_refuses_io_uring_the_host_says_so_in_one_line_and_exits() {
    let mut child = filtered_host("uring")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a host refused io_uring is still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "it must fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("--io uring: io_uring_setup is not permitted")
            && lines[0].contains("seccomp")
            && lines[0].contains("--io epoll"),
        "it names what is refused, and the way out: {stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn under_the_same_filter_the_host_serves_on_epoll() {
    let host = Host::start_command(filtered_host("epoll"), false);
    assert_eq!(get(host.addr), "HTTP/1.1 200 OK");
}

#[test]
fn the_environment_picks_the_loop_and_the_log_names_it() {
    let host = common::start_with_log_level(&["--guest", "http"], "info");
    let default = if common::on_uring() {
        "io=Uring"
    } else {
        "io=Epoll"
    };
    host.wait_for_log(default, Duration::from_secs(10));
    let uring = Host::start_env(
        &["--guest", "http"],
        &[("SANDSOCK_IO", "uring"), ("RUST_LOG", "info")],
    );
    uring.wait_for_log("io=Uring", Duration::from_secs(10));
    assert_eq!(get(uring.addr), "HTTP/1.1 200 OK");
}
