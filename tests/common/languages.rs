//! Guests written in Python and JavaScript (`guest/python`, `guest/js`): each
//! language's `build.sh` builds them once per test binary, with its toolchain
//! installed into a private directory of cargo's; and the checks that every
//! language's echo and http guests must pass against the real host.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{Host, read_line, read_until_closed, run_host};

/// Where the build scripts install their toolchains: shared by every test binary
/// and run, so that the set-up downloads once per target directory.
pub fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-tools")
}

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds every guest of `language` (`python` or `js`) with its `build.sh`, once per
/// test binary, and returns the directory holding `NAME.wasm` for each.
pub fn guests(language: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    // Held while building: the tests of one binary wait for one build.
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let built = built.entry(language.to_owned()).or_insert_with(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{language}-guests"));
        let script = repo().join("guest").join(language).join("build.sh");
        let started = Instant::now();
        let output = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .env("SANDSOCK_TOOLS", tools_dir())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        eprintln!(
            "{} built the {language} guests in {:.1} s",
            script.display(),
            started.elapsed().as_secs_f64()
        );
        if !output.status.success() {
            return Err(format!(
                "{} failed:\n{}\n{}",
                script.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(out)
    });
    match built {
        Ok(dir) => dir.clone(),
        Err(why) => panic!("{why}"),
    }
}

/// The built guest `name` of `language`.
pub fn guest(language: &str, name: &str) -> PathBuf {
    let path = guests(language).join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Serves `language`'s guest `name` with `FLAGS`.
pub fn serve(language: &str, name: &str, flags: &[&str]) -> Host {
    let path = guest(language, name);
    let mut args = vec!["--guest", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    Host::start(&args)
}

/// kv (its data in the host's store, contract 1.1), served with two workers: a
/// value stored through one connection is read through 40 new ones, and a
/// pipelined session is answered in order.
pub fn check_kv_across_workers(host: &Host) {
    let ask = |request: &str| {
        let mut client = BufReader::new(host.connect());
        client.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        client.read_line(&mut line).unwrap();
        line
    };
    assert_eq!(ask("SET colour deep blue\n"), "OK\n");
    for _ in 0..40 {
        assert_eq!(ask("GET colour\n"), "VALUE deep blue\n");
    }
    let mut client = BufReader::new(host.connect());
    client
        .get_mut()
        .write_all(b"SET a 1\nGET a\nDEL a\nDEL a\nGET a\nPING\n")
        .unwrap();
    let replies: Vec<String> = (0..6)
        .map(|_| {
            let mut line = String::new();
            client.read_line(&mut line).unwrap();
            line
        })
        .collect();
    let expected = [
        "OK\n",
        "VALUE 1\n",
        "DELETED\n",
        "NOT_FOUND\n",
        "NOT_FOUND\n",
        "ERROR unknown command\n",
    ];
    assert_eq!(replies, expected);
}

/// Echo: 200 connections open at once, five round trips each, every line its own.
pub fn check_echo_on_200_connections(host: &Host) {
    let mut clients: Vec<BufReader<TcpStream>> =
        (0..200).map(|_| BufReader::new(host.connect())).collect();
    for round in 0..5 {
        for (i, client) in clients.iter_mut().enumerate() {
            client
                .get_mut()
                .write_all(format!("client {i} round {round}\n").as_bytes())
                .unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let mut line = String::new();
            client.read_line(&mut line).unwrap();
            assert_eq!(line, format!("client {i} round {round}\n"));
        }
    }
}

/// Echo: 8 MiB through one connection whose client writes all of it before it reads
/// any (so the guest's SDK must pause and resume on backpressure), then ends its
/// side: every byte comes back in order and the guest closes.
pub fn check_echo_backpressure(host: &Host) {
    let mut client = host.connect();
    let sent = super::pattern(8 << 20, 7);
    let mut writer = client.try_clone().unwrap();
    let to_send = sent.clone();
    let writing = std::thread::spawn(move || {
        writer.write_all(&to_send).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    writing.join().unwrap();
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "the echo differs from what was sent");
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// Reads one response (head, and a body of its Content-Length); returns both.
pub fn read_response(stream: &mut BufReader<TcpStream>) -> (String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = stream.read_line(&mut line).unwrap();
        assert!(n > 0, "closed mid-head after {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

fn assert_hello((head, body): (String, String)) {
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "hello\n", "{head}");
}

/// HTTP: keep-alive, three pipelined requests in one write, a request byte by
/// byte, `Connection: close`, and a malformed request answered 400 and closed.
pub fn check_http_conformance(host: &Host) {
    let mut keep = BufReader::new(host.connect());
    for _ in 0..3 {
        keep.get_mut().write_all(GET).unwrap();
        assert_hello(read_response(&mut keep));
    }

    let mut pipelined = BufReader::new(host.connect());
    pipelined.get_mut().write_all(&GET.repeat(3)).unwrap();
    for _ in 0..3 {
        assert_hello(read_response(&mut pipelined));
    }

    let mut slow = BufReader::new(host.connect());
    slow.get_mut().set_nodelay(true).unwrap();
    for byte in GET {
        slow.get_mut().write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_hello(read_response(&mut slow));

    let mut closing = BufReader::new(host.connect());
    closing
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut closing);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_hello((head, body));
    assert!(read_until_closed(closing.get_mut()).is_empty());

    let mut bad = BufReader::new(host.connect());
    bad.get_mut().write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut bad);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(body, "bad request\n");
    let _ = bad.get_mut().shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest);
    assert!(rest.is_empty(), "more after the 400: {rest:?}");
}

/// `host load --http`: `requests` keep-alive requests on 50 connections, every answer
/// checked; returns the report.
pub fn load_http(host: &Host, requests: u64, timeout_secs: u64) -> String {
    let addr = host.addr.to_string();
    let requests = requests.to_string();
    let timeout = timeout_secs.to_string();
    let out = run_host(&[
        "load",
        &addr,
        "--http",
        "-c",
        "50",
        "-n",
        &requests,
        "--timeout",
        &timeout,
        "--quiet",
    ]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "load failed: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("requests ok:    {requests} of {requests}\n")),
        "{report}"
    );
    assert!(report.contains("errors:         0\n"), "{report}");
    report
}

/// A guest whose handler raises (Python) or throws (JavaScript) on `boom`: the
/// connection that triggered it is closed, the trap is logged, and the next
/// connection is served by a fresh instance.
pub fn check_exception_is_a_contained_trap(host: &Host) {
    let mut before = host.connect();
    before.write_all(b"before\n").unwrap();
    assert_eq!(read_line(&mut before), "before");

    let mut victim = host.connect();
    victim.write_all(b"boom\n").unwrap();
    let mut rest = Vec::new();
    let _ = victim.read_to_end(&mut rest);
    assert!(rest.is_empty(), "an answer to boom: {rest:?}");
    host.wait_for_log("guest trapped: ", Duration::from_secs(10));
    // The runtime's panic hint (set RUST_BACKTRACE) means nothing for this guest.
    assert!(!host.log().contains("RUST_BACKTRACE"), "{}", host.log());

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut after = host.connect();
        if after.write_all(b"after\n").is_ok() {
            let mut line = [0u8; 6];
            if after.read_exact(&mut line).is_ok() && &line == b"after\n" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not served after the trap\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `program ARGS` from the repository's root; it must succeed.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}
