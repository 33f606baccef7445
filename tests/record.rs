//! `--record DIR` and `host replay`: live traffic kept per guest instance, replayed
//! offline on the same guest (no divergence) or a changed one (a divergence where
//! it changed), traps reproduced with the guest's own panic message.

mod common;

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{
    Host, connect, get, read_line, read_to_end, run_host, scratch, send_finish_and_read_all,
    test_guest,
};

/// A record directory for test `name` (not made yet: the host makes it).
fn record_dir(name: &str) -> PathBuf {
    scratch(name).join("tapes")
}

/// Stops `host` with SIGTERM and waits for it: its tapes are closed then.
fn stop(mut host: Host) {
    host.signal(libc::SIGTERM);
    assert!(
        host.wait_exit(Duration::from_secs(30)).is_some(),
        "the host did not exit; its log:\n{}",
        host.log()
    );
}

/// The tapes in `dir`, oldest first.
fn tapes(dir: &Path) -> Vec<PathBuf> {
    let mut tapes: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "tape"))
        .collect();
    tapes.sort();
    tapes
}

/// `host replay WHAT --guest GUEST EXTRA`.
fn replay(what: &Path, guest: &str, extra: &[&str]) -> Output {
    let mut args = vec!["replay", what.to_str().unwrap(), "--guest", guest];
    args.extend_from_slice(extra);
    run_host(&args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The summary line of a replay.
fn summary(output: &Output) -> String {
    let out = stdout(output);
    out.lines()
        .find(|line| line.contains(" replayed, "))
        .unwrap_or_else(|| panic!("no summary in:\n{out}\n{}", stderr(output)))
        .to_string()
}

fn guest(name: &str) -> String {
    test_guest(name).to_str().unwrap().to_string()
}

/// Asserts that a replay exited 0 and that its summary starts with `start`.
fn assert_clean(output: &Output, start: &str) {
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(output),
        stderr(output)
    );
    assert!(summary(output).starts_with(start), "{}", stdout(output));
}

/// The http example's answer to a GET, and http_v2's.
const HELLO: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
const HELLO_V2: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nhello v2\n";

#[test]
fn http_traffic_replays_with_no_divergence_and_a_changed_body_diverges_where_it_changed() {
    let dir = record_dir("record-http");
    let host = Host::start(&["--guest", "http", "--record", dir.to_str().unwrap()]);
    // Keep-alive: two requests, one after the other, on one connection.
    let mut keep_alive = connect(&host);
    assert_eq!(get(&mut keep_alive), "hello\n");
    assert_eq!(get(&mut keep_alive), "hello\n");
    drop(keep_alive);
    // Pipelined: two requests in one write.
    let mut pipelined = host.connect();
    let two =
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let answers = send_finish_and_read_all(&mut pipelined, two);
    assert_eq!(
        String::from_utf8_lossy(&answers).matches("hello\n").count(),
        2
    );
    // An error status (the example has no 404: every path is its hello; another
    // method is its 405), and a malformed request (400, then closed).
    let mut post = host.connect();
    let answer = send_finish_and_read_all(&mut post, b"POST / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(answer.starts_with(b"HTTP/1.1 405 "), "{answer:?}");
    let mut malformed = host.connect();
    malformed.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let answer = read_to_end(&mut malformed);
    assert!(answer.starts_with(b"HTTP/1.1 400 "), "{answer:?}");
    stop(host);

    let tapes = tapes(&dir);
    assert_eq!(tapes.len(), 1, "one shared instance, one tape: {tapes:?}");
    let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "the record directory's mode");
    let mode = std::fs::metadata(&tapes[0]).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "a tape's mode");

    // The same guest: every connection agrees.
    let same = replay(&dir, "http", &[]);
    assert!(
        same.status.success(),
        "{}\n{}",
        stdout(&same),
        stderr(&same)
    );
    assert_eq!(
        summary(&same).split(" (").next().unwrap(),
        "4 replayed, 4 agree, 0 diverge, 0 trapped"
    );

    // Another body: the GET connections diverge where the two answers first differ.
    let at = HELLO
        .bytes()
        .zip(HELLO_V2.bytes())
        .position(|(a, b)| a != b)
        .unwrap();
    let changed = replay(&dir, &guest("http_v2"), &[]);
    assert_eq!(changed.status.code(), Some(1), "{}", stdout(&changed));
    let out = stdout(&changed);
    let diverged: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("diverged at byte"))
        .collect();
    assert_eq!(
        diverged.len(),
        2,
        "the keep-alive and pipelined connections:\n{out}"
    );
    for line in diverged {
        assert!(
            line.contains(&format!("diverged at byte {at} of its output")),
            "{line}"
        );
        assert!(
            line.contains("Content-Length: 6") && line.contains("Content-Length: 9"),
            "{line}"
        );
    }
    assert!(summary(&changed).starts_with("4 replayed, 2 agree, 2 diverge, 0 trapped"));

    // Noise learnt from the recorded guest's own replay: there is none (the tape
    // gives it back its clocks and random bytes), so the change still shows.
    let noisy = replay(&dir, &guest("http_v2"), &["--noise-from", "http"]);
    assert!(
        summary(&noisy).starts_with("4 replayed, 2 agree, 2 diverge"),
        "{}",
        stdout(&noisy)
    );

    // And for CI, as JSON.
    let json = replay(&dir, &guest("http_v2"), &["--json"]);
    let document: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("one JSON document");
    assert_eq!(document["summary"]["diverge"], 2);
    let conns = document["tapes"][0]["connections"].as_array().unwrap();
    assert!(
        conns
            .iter()
            .any(|c| c["verdict"] == "diverge" && c["offset"] == at)
    );
}

#[test]
fn a_connection_the_shutdown_closes_replays_its_close() {
    // The http example closes its idle keep-alive connections when it hears the
    // shutdown: that call is on the tape, and the replay makes it too.
    let dir = record_dir("record-shutdown");
    let host = Host::start(&["--guest", "http", "--record", dir.to_str().unwrap()]);
    let mut idle = connect(&host);
    assert_eq!(get(&mut idle), "hello\n");
    stop(host);
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    let replayed = replay(&dir, "http", &[]);
    assert_clean(&replayed, "1 replayed, 1 agree");
}

#[test]
fn clocks_and_random_bytes_replay_exactly() {
    let dir = record_dir("record-clocks");
    let host = Host::start(&[
        "--guest",
        &guest("clock_random"),
        "--record",
        dir.to_str().unwrap(),
    ]);
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut stream = host.connect();
        for word in ["ping", "pong"] {
            stream.write_all(format!("{word}\n").as_bytes()).unwrap();
            lines.push(read_line(&mut stream));
        }
    }
    stop(host);
    // No two answers alike: what the guest was given differs every time.
    let randoms: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(randoms.len(), lines.len(), "{lines:?}");

    let replayed = replay(&dir, &guest("clock_random"), &[]);
    assert!(
        replayed.status.success(),
        "{}\n{}",
        stdout(&replayed),
        stderr(&replayed)
    );
    assert!(summary(&replayed).starts_with("2 replayed, 2 agree, 0 diverge, 0 trapped"));
    assert!(
        !stdout(&replayed).contains("does not hold"),
        "{}",
        stdout(&replayed)
    );
}

#[test]
fn a_trap_replays_to_its_panic_and_a_fixed_guest_shows_its_new_output() {
    // Sampling at 1 % skips the first connection: its trapping turn is kept anyway.
    // With an instance per connection, the instance (and its tape) ends with it.
    for (sample, isolation) in [("100", "shared"), ("1", "shared"), ("100", "connection")] {
        let dir = record_dir(&format!("record-trap-{sample}-{isolation}"));
        let host = Host::start(&[
            "--guest",
            &guest("panics"),
            "--record",
            dir.to_str().unwrap(),
            "--record-sample",
            sample,
            "--isolation",
            isolation,
        ]);
        let mut stream = host.connect();
        stream.write_all(b"hello\n").unwrap();
        assert_eq!(read_line(&mut stream), "hello");
        stream.write_all(b"now TRIGGER it\n").unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        host.wait_for_log("guest trapped", Duration::from_secs(10));
        stop(host);

        let tapes = tapes(&dir);
        assert_eq!(tapes.len(), 1, "{isolation} at {sample} %: {tapes:?}");
        let trap_tape = &tapes[0];
        assert!(
            trap_tape.to_str().unwrap().ends_with(".trap.tape"),
            "{trap_tape:?}"
        );

        let again = replay(trap_tape, &guest("panics"), &[]);
        assert_eq!(again.status.code(), Some(1));
        let (out, err) = (stdout(&again), stderr(&again));
        assert!(
            out.contains("guest trapped: unreachable executed (a panic"),
            "{out}"
        );
        assert!(out.contains("guest backtrace:"), "{out}");
        assert!(
            err.contains("triggered"),
            "the guest's own panic message:\n{err}"
        );
        assert!(summary(&again).contains(", 1 trapped"), "{out}");

        // The fixed guest (an echo that does not panic) answers the same input.
        let fixed = replay(trap_tape, "echo", &[]);
        let out = stdout(&fixed);
        assert!(out.contains("the replayed instance did not trap"), "{out}");
        let line = out
            .lines()
            .find(|l| l.contains("diverged at byte"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            line.contains("replayed \"") && line.contains("now TRIGGER it\\n"),
            "{line}"
        );
    }
}

#[test]
fn a_trap_after_its_tape_was_cut_gets_a_tape_of_its_own() {
    // A tape may take a quarter of --record-max-bytes (here 1 KiB): the echoes
    // fill it, it is cut, and the trap that follows is kept on a tape of its own.
    let dir = record_dir("record-cut-trap");
    let host = Host::start(&[
        "--guest",
        &guest("panics"),
        "--record",
        dir.to_str().unwrap(),
        "--record-max-bytes",
        "4KiB",
    ]);
    let mut stream = host.connect();
    for i in 0..60 {
        stream.write_all(format!("line {i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(&mut stream), format!("line {i}"));
    }
    stream.write_all(b"now TRIGGER it\n").unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    host.wait_for_log("guest trapped", Duration::from_secs(10));
    stop(host);
    let tapes = tapes(&dir);
    assert_eq!(tapes.len(), 2, "the cut tape and the trap's: {tapes:?}");
    let trap_tape = tapes
        .iter()
        .find(|t| t.to_str().unwrap().ends_with(".trap.tape"))
        .expect("a trap tape");
    let again = replay(trap_tape, &guest("panics"), &[]);
    assert!(
        summary(&again).contains(", 1 trapped"),
        "{}",
        stdout(&again)
    );
    let all = replay(&dir, &guest("panics"), &[]);
    assert!(
        stdout(&all).contains("incomplete (cut short: it reached a quarter"),
        "{}",
        stdout(&all)
    );
}

#[test]
fn an_answer_that_depends_on_an_earlier_connection_replays() {
    for (guest, flags) in [
        ("kv".to_string(), vec!["--store", "memory"]),
        (guest("kv_in_instance"), vec![]),
    ] {
        let dir = record_dir("record-kv");
        let mut args = vec!["--guest", guest.as_str(), "--record", dir.to_str().unwrap()];
        args.extend(flags);
        let host = Host::start(&args);
        let mut first = host.connect();
        first.write_all(b"SET color blue\n").unwrap();
        assert_eq!(read_line(&mut first), "OK");
        drop(first);
        let mut second = host.connect();
        second.write_all(b"GET color\n").unwrap();
        assert_eq!(read_line(&mut second), "VALUE blue");
        drop(second);
        stop(host);
        let replayed = replay(&dir, &guest, &[]);
        assert!(
            replayed.status.success(),
            "{guest}: {}\n{}",
            stdout(&replayed),
            stderr(&replayed)
        );
        assert!(
            summary(&replayed).starts_with("2 replayed, 2 agree, 0 diverge"),
            "{guest}: {}",
            stdout(&replayed)
        );
    }
}

#[test]
fn a_handoff_tape_starts_from_the_snapshot_and_the_connections_it_adopted() {
    // kv with its data in the instance: after a hot swap with --swap handoff, the
    // new generation's tape starts from the old one's snapshot, and a GET on the
    // same connection answers what was SET before the swap.
    let dir = record_dir("record-handoff");
    let kv = std::fs::read(test_guest("kv_in_instance")).unwrap();
    let (host, path) = common::serve_file(
        "record-handoff-guest",
        &kv,
        &["--swap", "handoff", "--record", dir.to_str().unwrap()],
    );
    let mut stream = host.connect();
    stream.write_all(b"SET color blue\n").unwrap();
    assert_eq!(read_line(&mut stream), "OK");
    common::install(
        &path,
        &common::with_custom_section(kv.clone(), b"generation 2"),
    );
    host.signal(libc::SIGHUP);
    common::wait_swapped_to(&host, 2);
    stream.write_all(b"GET color\n").unwrap();
    assert_eq!(read_line(&mut stream), "VALUE blue");
    drop(stream);
    stop(host);
    let tapes = tapes(&dir);
    assert_eq!(
        tapes.len(),
        2,
        "one tape per generation's instance: {tapes:?}"
    );
    let replayed = replay(&dir, path.to_str().unwrap(), &[]);
    assert!(
        replayed.status.success(),
        "{}\n{}",
        stdout(&replayed),
        stderr(&replayed)
    );
    // The connection is on both tapes: its first part, and its adopted rest.
    assert!(
        summary(&replayed).starts_with("2 replayed, 2 agree, 0 diverge"),
        "{}",
        stdout(&replayed)
    );
    // The second tape alone: the snapshot is what makes its GET answer.
    let second = replay(&tapes[1], path.to_str().unwrap(), &[]);
    assert!(
        second.status.success(),
        "{}\n{}",
        stdout(&second),
        stderr(&second)
    );
}

#[test]
fn sampling_and_the_size_cap_are_honoured() {
    let dir = record_dir("record-sample");
    let host = Host::start(&[
        "--guest",
        "echo",
        "--record",
        dir.to_str().unwrap(),
        "--record-sample",
        "25",
        "--admin",
        "127.0.0.1:0",
    ]);
    for i in 0..20 {
        let mut stream = host.connect();
        stream.write_all(format!("line {i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(&mut stream), format!("line {i}"));
    }
    host.wait_metric(
        "sandsock_record_connections_total",
        &[("outcome", "skipped")],
        |v| v == 15.0,
        Duration::from_secs(10),
    );
    assert_eq!(
        host.metric(
            "sandsock_record_connections_total",
            &[("outcome", "recorded")]
        ),
        5.0
    );
    stop(host);
    let replayed = replay(&dir, "echo", &[]);
    assert!(
        summary(&replayed).starts_with("5 replayed, 5 agree"),
        "{}",
        stdout(&replayed)
    );

    // An instance per connection: a tape per connection, the oldest removed past
    // the cap, and what is left within it.
    let dir = record_dir("record-cap");
    let cap = 4096;
    let host = Host::start(&[
        "--guest",
        "echo",
        "--isolation",
        "connection",
        "--record",
        dir.to_str().unwrap(),
        "--record-max-bytes",
        &cap.to_string(),
        "--admin",
        "127.0.0.1:0",
    ]);
    for i in 0..40 {
        let mut stream = host.connect();
        stream.write_all(format!("line {i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(&mut stream), format!("line {i}"));
    }
    host.wait_metric(
        "sandsock_record_tapes_total",
        &[("event", "removed")],
        |v| v > 0.0,
        Duration::from_secs(10),
    );
    stop(host);
    let left = tapes(&dir);
    let total: u64 = left
        .iter()
        .map(|t| std::fs::metadata(t).unwrap().len())
        .sum();
    assert!(total <= cap, "{total} bytes in {} tapes", left.len());
    assert!(left.len() < 40 && !left.is_empty());
    // The newest are kept: the last connection's line is on a tape left.
    let replayed = replay(&dir, "echo", &["--json"]);
    let document: serde_json::Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(document["summary"]["diverge"], 0);
    let last = left.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    assert!(
        bytes.windows(7).any(|w| w == b"line 39"),
        "the newest tape holds the last line"
    );
}

#[test]
fn a_writer_that_falls_behind_never_delays_the_loop() {
    let dir = record_dir("record-slow");
    // The writer sleeps 50 ms per turn and may hold 1 KiB: a few dozen turns in,
    // a new turn finds it full, and recording stops rather than the loop.
    let host = Host::start(&[
        "--guest",
        "echo",
        "--record",
        dir.to_str().unwrap(),
        "--record-slow-writer",
        "50ms",
        "--record-queue",
        "1KiB",
        "--admin",
        "127.0.0.1:0",
    ]);
    // 300 round trips would take 15 s if each waited for its turn's write.
    let mut stream = BufReader::new(host.connect());
    for i in 0..300 {
        stream
            .get_mut()
            .write_all(format!("line {i}\n").as_bytes())
            .unwrap();
        assert_eq!(read_line(stream.get_mut()), format!("line {i}"));
    }
    host.wait_metric(
        "sandsock_record_connections_total",
        &[("outcome", "cut")],
        |v| v >= 1.0,
        Duration::from_secs(10),
    );
    stop(host);
    let replayed = replay(&dir, "echo", &[]);
    let out = stdout(&replayed);
    assert!(
        out.contains("incomplete (cut short: the writer fell behind"),
        "{out}"
    );
    // What was written is still a tape that replays.
    assert!(
        summary(&replayed).starts_with("1 replayed, 1 agree"),
        "{out}"
    );
}

#[test]
fn a_cut_or_damaged_tape_is_one_clear_error() {
    let dir = record_dir("record-damage");
    let host = Host::start(&["--guest", "echo", "--record", dir.to_str().unwrap()]);
    let mut stream = host.connect();
    stream.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut stream), "hello");
    drop(stream);
    stop(host);
    let tape = tapes(&dir).remove(0);
    let bytes = std::fs::read(&tape).unwrap();

    let cut = scratch("record-damage-cut").join("cut.tape");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let damaged = scratch("record-damage-flip").join("damaged.tape");
    let mut flipped = bytes.clone();
    // In the last frame's payload (its end's reason): the checksum tells.
    let inside = flipped.len() - 8;
    flipped[inside] ^= 0x40;
    std::fs::write(&damaged, &flipped).unwrap();
    for (path, says) in [(&cut, "cut short at byte"), (&damaged, "damaged at byte")] {
        let output = replay(path, "echo", &[]);
        assert_eq!(output.status.code(), Some(1));
        let err = stderr(&output);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].contains(path.to_str().unwrap()) && lines[0].contains(says),
            "{err}"
        );
    }
}

#[test]
fn an_unsafe_record_directory_is_refused() {
    let base = scratch("record-unsafe");
    let open = base.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = base.join("link");
    let real = base.join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // Someone else's: as root, a directory given to nobody; otherwise root's own.
    // SAFETY: geteuid has no preconditions.
    let theirs = if unsafe { libc::geteuid() } == 0 {
        let dir = base.join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        dir
    } else {
        PathBuf::from("/usr")
    };
    for (dir, says) in [
        (&open, "others can write it (mode 777)"),
        (&link, "it is a symbolic link"),
        (&theirs, "it is owned by uid"),
    ] {
        let output = run_host(&[
            "--guest",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--record",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(1));
        let err = stderr(&output);
        let line = err
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{err}"));
        assert!(
            line.contains("refusing the record directory") && line.contains(says),
            "{line}"
        );
    }
}
