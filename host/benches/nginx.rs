//! nginx as a row of the HTTP benchmark, where it is installed: the server users
//! compare us with, set up as the minimal servers are (one process, one worker, no
//! logging, a fixed `200` for every request), so that the figures compare the same
//! work. Its CPU is that one process's.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::process::spawn;

/// The nginx binary on `PATH` (or Debian's `/usr/sbin`), if any.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// The configuration of one run: one process (no master), one worker's worth of
/// connections, keep-alive without a request limit, no access log, temporary paths
/// in `dir` (nginx wants them writable even when it never uses them).
fn config(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log stderr warn;
pid {dir}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type text/plain;
        location / {{ return 200 \"hello\\n\"; }}
    }}
}}
"
    )
}

/// Starts `nginx` on a free loopback port (on CPU 0 when `pinned`) and waits until
/// it accepts connections.
pub fn start(nginx: &Path, pinned: bool) -> (Child, SocketAddr) {
    // nginx does not say which port `:0` gave it: take a free one first.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port");
    // One directory for the run's nginx processes (each rewrites its config).
    let dir = std::env::temp_dir().join(format!("sandsock-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("nginx's scratch directory");
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(&dir, addr.port())).expect("write nginx.conf");
    let conf = conf.display().to_string();
    let prefix = dir.display().to_string();
    let mut child = spawn(
        &nginx.display().to_string(),
        &["-p", &prefix, "-c", &conf, "-e", "stderr"],
        &[],
        pinned,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("nginx exited ({status}) before listening on {addr}");
        }
        assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Drain its stderr so that it never blocks on a full pipe.
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
    (child, addr)
}
