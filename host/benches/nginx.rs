//! nginx as a row of the HTTP benchmark, where it is installed: the server users
//! compare us with, set up as the minimal servers are (one process, one worker, no
//! logging, a fixed `200` for every request), so that the figures compare the same
//! work. Its CPU is that one process's.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::process::spawn;

/// The nginx binary on `PATH` (or Debian's `/usr/sbin`), if there is one and it
/// takes this benchmark's configuration (`nginx -t`: an old nginx without `-e`, or a
/// build without a module the configuration names, does not): else why not.
pub fn find() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let nginx = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .ok_or("nginx is not installed (Debian: apt-get install nginx)")?;
    let dir = scratch();
    // `-t` binds nothing: any port will do.
    let conf = write_config(&dir, 8080);
    let test = Command::new(&nginx)
        .args(["-t", "-q", "-p"])
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .args(["-e", "stderr"])
        .output()
        .map_err(|e| format!("{} cannot run: {e}", nginx.display()))?;
    if !test.status.success() {
        let said = String::from_utf8_lossy(&test.stderr);
        return Err(format!(
            "{} refuses its configuration: {}",
            nginx.display(),
            said.trim()
        ));
    }
    Ok(nginx)
}

/// The run's scratch directory for nginx (its configuration, pid file and temporary
/// paths), under the benchmarks' target directory.
fn scratch() -> PathBuf {
    let dir = scratch_path();
    std::fs::create_dir_all(&dir).expect("nginx's scratch directory");
    dir
}

/// Where [`scratch`] is: one directory per run of the benchmark.
fn scratch_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nginx-{}", std::process::id()))
}

/// Removes the scratch directory, at the end of the run.
pub fn clean_up() {
    let _ = std::fs::remove_dir_all(scratch_path());
}

/// Writes the configuration for `port` into `dir`: its path.
fn write_config(dir: &Path, port: u16) -> PathBuf {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, port)).expect("write nginx.conf");
    conf
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
    let dir = scratch();
    let conf = write_config(&dir, addr.port()).display().to_string();
    let prefix = dir.display().to_string();
    let mut child = spawn(
        &nginx.display().to_string(),
        &["-p", &prefix, "-c", &conf, "-e", "stderr"],
        &[],
        pinned,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut said = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut said));
            panic!("nginx did not listen on {addr}: {}", said.trim());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Drain its stderr so that it never blocks on a full pipe.
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
    (child, addr)
}
