//! Upgrading the host binary while it serves (SIGUSR2, POST /upgrade): no request
//! lost under load, a new process each time that owns the listeners, the old one
//! gone; a new binary that cannot serve leaves the old one serving; the store's
//! values carried; admin writes guarded by a token; and systemd socket activation.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::upgrade::{
    Load, UPGRADE_WAIT, field, get, install_binary, install_script, installed_binary, nth_line,
    pass_descriptors, socket_activated, socket_activated_for, start, successor_pid, wait_gone,
};
use common::{Host, IO_TIMEOUT, read_line};

/// The inode of the socket listening on `addr`'s port, from /proc/net/tcp.
fn listening_inode(addr: SocketAddr) -> String {
    listening_inodes(addr).swap_remove(0)
}

/// The inodes of every socket listening on `addr`'s port (one per worker with
/// `SO_REUSEPORT`).
fn listening_inodes(addr: SocketAddr) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = format!(":{:04X}", addr.port());
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols[1].ends_with(&port) && cols[3] == "0A")
        .map(|cols| cols[9].to_string())
        .collect();
    assert!(!inodes.is_empty(), "nothing listens on {addr}");
    inodes
}

/// Whether `pid` holds the socket with `inode` open.
fn holds(pid: u32, inode: &str) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == wanted)
            })
        })
        .unwrap_or(false)
}

/// How many epoll instances of `pid` watch the socket with `inode` (from
/// /proc/PID/fdinfo: each epoll lists the descriptors it watches as `tfd:`). An
/// instance reached through several descriptors (mio clones a registry by `dup`)
/// shows the same list under each: it counts once.
fn epolls_watching(pid: u32, inode: &str) -> usize {
    let wanted = format!("socket:[{inode}]");
    let fd_dir = format!("/proc/{pid}/fd");
    let target = |fd: &str| std::fs::read_link(format!("{fd_dir}/{fd}")).ok();
    let mut watching = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(&fd_dir).unwrap().flatten() {
        let is_epoll = std::fs::read_link(fd.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventpoll]");
        if !is_epoll {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        let watched: Vec<String> = std::fs::read_to_string(info)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                Some(
                    l.strip_prefix("tfd:")?
                        .split_whitespace()
                        .next()?
                        .to_string(),
                )
            })
            .collect();
        if watched
            .iter()
            .any(|fd| target(fd).is_some_and(|t| t.to_string_lossy() == wanted))
        {
            watching.insert(watched);
        }
    }
    watching.len()
}

/// An admin request with extra header lines; the status and the body.
fn admin(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{headers}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn three_upgrades_under_load_lose_no_request() {
    three_upgrades_under_load("upgrade-load", "handover");
}

/// Part 1's way, still a choice: the old process finishes its connections itself
/// while the new one accepts.
#[test]
fn three_draining_upgrades_under_load_lose_no_request() {
    three_upgrades_under_load("upgrade-load-drain", "drain");
}

/// Three upgrades in a row (`--upgrade MODE`) under a load of a new connection per
/// request, every answer checked: a new process each time holds every listener,
/// and the old one is gone.
fn three_upgrades_under_load(name: &str, mode: &str) {
    let binary = installed_binary(name);
    // Two workers: each has a socket of its own (SO_REUSEPORT), with its own queue.
    let mut host = start(
        &binary,
        &["--guest", "http", "--workers", "2", "--upgrade", mode],
    );
    // A new connection per request, in runs of 5,000.
    let load = Load::start(host.addr, 5000, &["--close"]);
    let inodes = listening_inodes(host.addr);
    assert_eq!(inodes.len(), 2, "a socket per worker");
    let mut old = host.pid();
    for upgrade in 0..=3 {
        // Each process serves part of the load before it hands over (and the last
        // after it took over).
        host.wait_metric(
            "sandsock_connections_accepted_total",
            &[],
            |n| n >= 1000.0,
            UPGRADE_WAIT,
        );
        if upgrade == 3 {
            break;
        }
        install_binary(&binary);
        // SAFETY: kill has no memory preconditions; `old` is the host serving now.
        assert_eq!(unsafe { libc::kill(old as libc::pid_t, libc::SIGUSR2) }, 0);
        let new = successor_pid(&host, upgrade);
        assert_ne!(new, old);
        if upgrade == 0 {
            assert!(
                host.wait_exit(UPGRADE_WAIT).is_some(),
                "the first host exits"
            );
        }
        wait_gone(old);
        for inode in &inodes {
            assert!(holds(new, inode), "pid {new} holds every listener");
        }
        old = new;
    }
    let runs = load.finish(&host);
    assert!(runs >= 2, "{runs} load runs");
    host.wait_metric(
        "sandsock_upgrades_total",
        &[("outcome", "succeeded")],
        |n| n == 3.0,
        IO_TIMEOUT,
    );
    assert_eq!(get(host.addr), "HTTP/1.1 200 OK");
    assert_eq!(
        host.log().matches("upgrade: the old process exits").count(),
        3
    );
}

/// SIGUSR2 to the host, then waits for the log to say the attempt failed, for the
/// `count`-th time.
fn failed_upgrade(host: &Host, count: usize, why: &str) {
    host.signal(libc::SIGUSR2);
    let line = nth_line(host, "upgrade failed", count);
    assert!(line.contains(why), "{line}");
    assert!(line.contains("this process goes on serving"), "{line}");
    assert_eq!(get(host.addr), "HTTP/1.1 200 OK", "still serving");
}

#[test]
fn a_new_binary_that_cannot_serve_leaves_the_old_one_serving() {
    let binary = installed_binary("upgrade-bad");
    let guest = binary.parent().unwrap().join("guest.wasm");
    std::fs::write(&guest, common::example("http")).unwrap();
    let mut host = start(
        &binary,
        &["--guest", guest.to_str().unwrap(), "--no-tier-up"],
    );
    let mode = |m| std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(m)).unwrap();

    mode(0o644);
    failed_upgrade(&host, 0, "Permission denied");
    mode(0o775);
    failed_upgrade(&host, 1, "writable by its group");
    mode(0o755);

    // The guest file is broken: the new process cannot load it, and says so.
    std::fs::write(&guest, b"not a component").unwrap();
    failed_upgrade(&host, 2, "the new process failed");
    let line = nth_line(&host, "upgrade failed", 2);
    assert!(
        line.contains("guest.wasm") && line.contains("not a WebAssembly file"),
        "the new process's own reason, naming the file: {line}"
    );
    std::fs::write(&guest, common::example("http")).unwrap();

    // A binary that never gets ready, killed: the old process notices its end.
    install_script(&binary, "exec sleep 60\n");
    let before = host
        .log()
        .matches("handed it the listening sockets")
        .count();
    host.signal(libc::SIGUSR2);
    host.wait_for_more_log("handed it the listening sockets", before, UPGRADE_WAIT);
    let started = host
        .log()
        .lines()
        .rfind(|l| l.contains("handed it the listening sockets"))
        .map(|l| field(l, "pid").parse::<u32>().unwrap())
        .unwrap();
    assert_eq!(
        get(host.addr),
        "HTTP/1.1 200 OK",
        "serving while the new one starts"
    );
    // SAFETY: kill has no memory preconditions; `started` is the stand-in binary.
    unsafe { libc::kill(started as libc::pid_t, libc::SIGKILL) };
    host.wait_for_more_log("upgrade failed", 3, UPGRADE_WAIT);
    assert!(host.log().contains("before it served"), "{}", host.log());
    assert_eq!(get(host.addr), "HTTP/1.1 200 OK");
    host.wait_metric(
        "sandsock_upgrades_total",
        &[("outcome", "failed")],
        |n| n == 4.0,
        IO_TIMEOUT,
    );
    host.wait_metric(
        "sandsock_upgrades_started_total",
        &[],
        |n| n == 4.0,
        IO_TIMEOUT,
    );

    // After all that, a good binary takes over.
    install_binary(&binary);
    host.signal(libc::SIGUSR2);
    successor_pid(&host, 0);
    assert!(host.wait_exit(UPGRADE_WAIT).is_some());
    assert_eq!(get(host.addr), "HTTP/1.1 200 OK");
}

/// A new process that says nothing within `--upgrade-timeout` is given up: stopped,
/// and the old one goes on serving, saying why.
#[test]
fn a_new_process_not_ready_within_the_upgrade_timeout_is_stopped() {
    let binary = installed_binary("upgrade-timeout");
    let host = start(&binary, &["--guest", "http", "--upgrade-timeout", "300ms"]);
    install_script(&binary, "exec sleep 60\n");
    host.signal(libc::SIGUSR2);
    let started = nth_line(&host, "handed it the listening sockets", 0);
    let started: u32 = field(&started, "pid").parse().unwrap();
    let line = nth_line(&host, "upgrade failed", 0);
    assert!(line.contains("not ready within 300ms"), "{line}");
    assert!(line.contains("this process goes on serving"), "{line}");
    wait_gone(started);
    assert_eq!(get(host.addr), "HTTP/1.1 200 OK");
}

/// A process given an upgrade link that its parent did not make refuses it: the
/// sockets on a link could come from anyone who can start it. Here the pair is the
/// test's, and the host runs under `timeout`, its parent.
#[test]
fn an_upgrade_link_not_from_the_parent_is_refused() {
    use std::os::unix::net::UnixStream;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut command = Command::new("/bin/sh");
    // Not `exec`: `timeout` is the host's parent (and bounds a host that would
    // wrongly serve instead of refusing).
    command
        .arg("-c")
        .arg("exec timeout -s KILL 60 \"$0\" \"$@\"")
        .arg(common::host_bin())
        .args(["--guest", "http", "--listen", "127.0.0.1:0"])
        .env("SANDSOCK_UPGRADE_FD", "3")
        .env("XDG_CACHE_HOME", common::test_cache_home())
        .stderr(std::process::Stdio::piped());
    pass_descriptors(&mut command, &[theirs.as_raw_fd()]);
    let out = command.output().unwrap();
    drop((ours, theirs));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("peer is pid {}", std::process::id()))
            && said.contains("not this process's parent")
            && said.contains("refusing its sockets"),
        "{said}"
    );
}

/// Sockets passed for another process (`LISTEN_PID` not this one's, as when a
/// socket-activated service starts a child that inherits its environment) are
/// not taken: the host listens where its flags say.
#[test]
fn sockets_passed_for_another_pid_are_left_alone() {
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let command = socket_activated_for(
        Path::new(common::host_bin()),
        &[passed.as_raw_fd()],
        None,
        &["--guest", "http", "--listen", "127.0.0.1:0"],
        Some(std::process::id()),
    );
    let host = Host::start_command(command, false);
    assert_ne!(host.addr, passed.local_addr().unwrap());
    assert_eq!(get(host.addr), "HTTP/1.1 200 OK");
    assert!(!host.log().contains("socket activation"), "{}", host.log());
}

fn ask(addr: SocketAddr, line: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    read_line(&mut stream)
}

#[test]
fn store_values_are_read_after_an_upgrade_on_memory_and_on_a_file_in_both_modes() {
    let binary = installed_binary("upgrade-store");
    let file = binary.parent().unwrap().join("store.db");
    let stores = ["memory", file.to_str().unwrap()];
    for (store, mode) in stores.iter().flat_map(|s| [(s, "handover"), (s, "drain")]) {
        let mut host = start(
            &binary,
            &[
                "--guest",
                "kv",
                "--workers",
                "2",
                "--store",
                store,
                "--upgrade",
                mode,
            ],
        );
        for i in 0..50 {
            let set = format!("SET k{i} v{i}-{mode}");
            assert_eq!(ask(host.addr, &set), "OK", "{store} {mode}");
        }
        host.signal(libc::SIGUSR2);
        successor_pid(&host, 0);
        assert!(host.wait_exit(UPGRADE_WAIT).is_some());
        for i in 0..50 {
            assert_eq!(
                ask(host.addr, &format!("GET k{i}")),
                format!("VALUE v{i}-{mode}"),
                "{store} {mode}"
            );
        }
    }
}

/// The host at `binary` with its admin listener on 0.0.0.0 (not loopback), and
/// `--admin-token-file token` if given; the host and where to reach the listener.
fn off_loopback(binary: &Path, token: Option<&Path>) -> (Host, SocketAddr) {
    let mut command = Command::new(binary);
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "0.0.0.0:0",
        "--admin-allow-remote",
    ]);
    if let Some(token) = token {
        command.arg("--admin-token-file").arg(token);
    }
    let host = Host::start_command(command, true);
    let admin_at = ([127, 0, 0, 1], host.admin.unwrap().port()).into();
    (host, admin_at)
}

#[test]
fn admin_writes_need_the_token_off_loopback() {
    let binary = installed_binary("upgrade-token");
    let token_file = binary.parent().unwrap().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();

    // Not on loopback, no token file: reads open, writes refused.
    let (host, admin_at) = off_loopback(&binary, None);
    assert_eq!(admin(admin_at, "GET", "/healthz", "").0, 200);
    let (status, body) = admin(admin_at, "POST", "/upgrade", "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--admin-token-file"), "{body}");
    drop(host);

    let (mut host, admin_at) = off_loopback(&binary, Some(&token_file));
    assert_eq!(
        admin(admin_at, "GET", "/metrics", "").0,
        200,
        "reads stay open"
    );
    assert_eq!(admin(admin_at, "POST", "/upgrade", "").0, 401);
    assert_eq!(
        admin(
            admin_at,
            "POST",
            "/reload",
            "Authorization: Bearer nope\r\n"
        )
        .0,
        401
    );
    assert_eq!(
        admin(
            admin_at,
            "POST",
            "/upgrade",
            "Authorization: Bearer s3cret!\r\n"
        )
        .0,
        401
    );
    assert!(host.log().contains("admin write refused"));
    let (status, body) = admin(
        admin_at,
        "POST",
        "/upgrade",
        "Authorization: Bearer s3cret\r\n",
    );
    assert_eq!(status, 202, "{body}");
    successor_pid(&host, 0);
    assert!(host.wait_exit(UPGRADE_WAIT).is_some());
    // The new process serves the same admin listener, with the same token.
    assert_eq!(admin(admin_at, "POST", "/upgrade", "").0, 401);
    assert_eq!(get(host.addr), "HTTP/1.1 200 OK");
}

#[test]
fn socket_activation_serves_the_sockets_systemd_passes() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let web_at = web.local_addr().unwrap();
    let admin_at = admin_socket.local_addr().unwrap();
    let binary = installed_binary("socket-activation");
    let command = socket_activated(
        &binary,
        &[web.as_raw_fd(), admin_socket.as_raw_fd()],
        Some("web:admin"),
        &["--guest", "http", "--workers", "2"],
    );
    let mut host = Host::start_command(command, true);
    assert_eq!(host.addr, web_at, "it serves the socket it was given");
    assert_eq!(host.admin, Some(admin_at));
    // The test's copies are closed: only the host holds the sockets now.
    drop((web, admin_socket));
    for _ in 0..20 {
        assert_eq!(get(web_at), "HTTP/1.1 200 OK");
    }
    assert!(host.log().contains("socket activation"), "{}", host.log());
    assert_eq!(admin(admin_at, "GET", "/healthz", "").0, 200);
    // Both workers' loops watch the one socket: each in its own epoll, or, on
    // `--io uring`, each with a multishot accept in its own ring (and in no epoll).
    let watching = if common::on_uring() { 0 } else { 2 };
    assert_eq!(
        epolls_watching(host.pid(), &listening_inode(web_at)),
        watching
    );

    // An upgrade of a socket-activated host hands the same sockets on.
    assert_eq!(admin(admin_at, "POST", "/upgrade", "").0, 202);
    successor_pid(&host, 0);
    assert!(host.wait_exit(UPGRADE_WAIT).is_some());
    assert_eq!(get(web_at), "HTTP/1.1 200 OK");

    // A passed socket that is not listening is refused, naming it.
    let plain = TcpStream::connect(web_at).unwrap();
    let mut command = socket_activated(&binary, &[plain.as_raw_fd()], None, &[]);
    command.stderr(std::process::Stdio::piped());
    let out = command.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("fd 3") && said.contains("not listening"),
        "{said}"
    );
}
