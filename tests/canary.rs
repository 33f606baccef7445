//! `--swap canary`: a new guest first runs as a shadow beside the serving one, on
//! the same input; it is promoted only once enough connections got the same answers
//! from it, and rejected at the first divergence, trap or timeout, with no client
//! noticing either way.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::{
    Host, example, fresh_body, install, serve_file, test_guest, wait_swapped_to,
    with_custom_section,
};

/// What the log says when a canary promotes its candidate.
const PROMOTED: &str = "; promoted (shadow calls took";

fn guest(name: &str) -> Vec<u8> {
    std::fs::read(test_guest(name)).unwrap()
}

/// Serves `serving` with `--swap canary --canary-connections N` and `flags`, then
/// installs `candidate` over it and sends SIGHUP; returns once the canary started.
fn canary(name: &str, serving: &[u8], candidate: &[u8], n: u32, flags: &[&str]) -> Host {
    let n = n.to_string();
    let mut args = vec!["--swap", "canary", "--canary-connections", n.as_str()];
    args.extend_from_slice(flags);
    let (host, path) = serve_file(name, serving, &args);
    install(&path, candidate);
    host.signal(libc::SIGHUP);
    host.wait_for_log("canary: trying the new guest", Duration::from_secs(30));
    host
}

/// One echo connection: each line sent, its echo read, then the client's end and
/// the server's.
fn echo_session(host: &Host, lines: &[&str]) {
    let mut client = BufReader::new(host.connect());
    for line in lines {
        client
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let mut back = String::new();
        client.read_line(&mut back).unwrap();
        assert_eq!(back, format!("{line}\n"), "the serving generation answers");
    }
    client
        .get_mut()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

/// Waits for the verdict: the log line that starts with `needle`.
fn verdict(host: &Host, needle: &str) -> String {
    host.wait_for_log(needle, Duration::from_secs(30));
    host.log()
        .lines()
        .find(|line| line.contains(needle))
        .unwrap()
        .to_owned()
}

#[test]
fn the_same_code_is_promoted_after_n_connections_and_clients_see_nothing_change() {
    let http = example("http");
    let host = canary(
        "canary-same",
        &http,
        &with_custom_section(http.clone(), b"v2"),
        20,
        &["--admin", "127.0.0.1:0"],
    );
    // Connections that prove nothing (a health check's connect and close) do not
    // count.
    for _ in 0..30 {
        drop(host.connect());
    }
    for _ in 0..19 {
        assert_eq!(fresh_body(&host), "hello\n");
    }
    assert!(
        !host.log().contains(PROMOTED),
        "promoted before 20:\n{}",
        host.log()
    );
    for _ in 0..5 {
        assert_eq!(fresh_body(&host), "hello\n");
    }
    let line = verdict(&host, PROMOTED);
    assert!(line.contains("on 20 connection(s)"), "{line}");
    wait_swapped_to(&host, 2);
    assert_eq!(fresh_body(&host), "hello\n");
    assert!(host.metric("sandsock_canary_connections_compared_total", &[]) >= 20.0);
    assert_eq!(host.metric("sandsock_canary_promotions_total", &[]), 1.0);
    assert_eq!(host.metric("sandsock_canary_divergences_total", &[]), 0.0);
}

#[test]
fn a_different_body_is_rejected_with_the_offset_and_both_snippets() {
    let host = canary(
        "canary-body",
        &example("http"),
        &guest("http_v2"),
        20,
        &["--admin", "127.0.0.1:0"],
    );
    // Every client gets the serving generation's answer, before and after.
    for _ in 0..5 {
        assert_eq!(fresh_body(&host), "hello\n");
    }
    let line = verdict(&host, "canary rejected");
    // `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ` is 59
    // bytes: the lengths (6 and 9) are the first difference.
    assert!(line.contains("diverged at byte 59 of its output"), "{line}");
    assert!(line.contains("Content-Length: 6"), "{line}");
    assert!(line.contains("Content-Length: 9"), "{line}");
    for _ in 0..5 {
        assert_eq!(fresh_body(&host), "hello\n");
    }
    assert!(
        !host.log().contains("swap to generation 2"),
        "{}",
        host.log()
    );
    assert_eq!(host.metric("sandsock_canary_rejections_total", &[]), 1.0);
    assert_eq!(host.metric("sandsock_canary_divergences_total", &[]), 1.0);
}

/// Candidates that trap, loop or grow past their memory on `TRIGGER`: rejected,
/// the client that sent it answered by the serving generation, which never
/// restarted.
#[test]
fn a_candidate_that_traps_loops_or_grows_is_rejected_and_no_client_is_affected() {
    for (candidate, why) in [
        ("panics", "unreachable"),
        ("loops_forever", "timeout"),
        ("grows_memory", "out of memory"),
    ] {
        let host = canary(
            &format!("canary-{candidate}"),
            &example("echo"),
            &guest(candidate),
            50,
            &["--max-memory", "16MiB"],
        );
        echo_session(&host, &["warm up", "once more"]);
        echo_session(&host, &["TRIGGER", "still served"]);
        let line = verdict(&host, "canary rejected");
        assert!(
            line.contains("the candidate trapped") && line.contains(why),
            "{candidate}: {line}"
        );
        echo_session(&host, &["after the verdict"]);
        let log = host.log();
        assert!(
            !log.contains("guest trapped"),
            "{candidate}: the serving generation trapped:\n{log}"
        );
        assert!(!log.contains("swap to generation 2"), "{candidate}:\n{log}");
    }
}

#[test]
fn a_candidate_that_closes_early_or_writes_more_diverges() {
    for (candidate, why) in [
        ("closes_early", "diverged"),
        ("writes_more", "diverged at byte 4 of its output"),
    ] {
        let host = canary(
            &format!("canary-{candidate}"),
            &example("echo"),
            &guest(candidate),
            50,
            &[],
        );
        echo_session(&host, &["one", "two"]);
        let line = verdict(&host, "canary rejected");
        assert!(line.contains(why), "{candidate}: {line}");
    }
}

/// 50 keep-alive connections under `host load` plus new connections, through a
/// canary and a promotion: no request fails.
#[test]
fn under_load_a_canary_and_a_promotion_fail_no_request() {
    let http = example("http");
    let host = canary(
        "canary-load",
        &http,
        &with_custom_section(http.clone(), b"under load"),
        100,
        &[],
    );
    std::thread::scope(|scope| {
        // Every answer checked, no error.
        let load = scope.spawn(|| common::languages::load_http(&host, 200_000, 120));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !host.log().contains(PROMOTED) {
            assert!(Instant::now() < deadline, "no verdict:\n{}", host.log());
            assert_eq!(fresh_body(&host), "hello\n");
        }
        wait_swapped_to(&host, 2);
        load.join().unwrap();
    });
    let line = verdict(&host, PROMOTED);
    eprintln!("{line}");
}

/// A guest that writes a timestamp differs from itself on every run: noise learning
/// masks it, and without it the same code is rejected.
#[test]
fn a_timestamp_is_noise_with_learning_on_and_a_divergence_with_it_off() {
    let stamps = guest("stamps");
    let candidate = with_custom_section(stamps.clone(), b"again");
    let host = canary("canary-noise-on", &stamps, &candidate, 10, &[]);
    for _ in 0..12 {
        stamped_session(&host);
    }
    verdict(&host, PROMOTED);

    let host = canary(
        "canary-noise-off",
        &stamps,
        &candidate,
        10,
        &["--canary-noise", "off"],
    );
    stamped_session(&host);
    let line = verdict(&host, "canary rejected");
    assert!(line.contains("diverged at byte"), "{line}");
}

/// One line to the `stamps` guest, its answer checked for the echo after the stamp.
fn stamped_session(host: &Host) {
    let mut client = BufReader::new(host.connect());
    client.get_mut().write_all(b"ping\n").unwrap();
    let mut back = String::new();
    client.read_line(&mut back).unwrap();
    assert!(back.ends_with(" ping\n") && back.len() == 26, "{back:?}");
    client
        .get_mut()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
}

/// Another protocol: the kv example against itself with one reply changed (the
/// same length, patched in the component's data).
#[test]
fn the_kv_example_with_a_changed_reply_is_rejected() {
    let kv = example("kv");
    let needle = b"NOT_FOUND\n";
    let at = kv
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the reply in kv's data");
    let mut changed = kv.clone();
    changed[at..at + needle.len()].copy_from_slice(b"NOT_THERE\n");
    let (host, path) = serve_file(
        "canary-kv",
        &kv,
        &["--swap", "canary", "--canary-connections", "10"],
    );
    // A value stored before the trial: the shadows start from the serving
    // instance's snapshot, so they know it too.
    let mut before = BufReader::new(host.connect());
    before.get_mut().write_all(b"SET a 1\n").unwrap();
    let mut line = String::new();
    before.read_line(&mut line).unwrap();
    assert_eq!(line, "OK\n");
    install(&path, &changed);
    host.signal(libc::SIGHUP);
    host.wait_for_log("canary: trying the new guest", Duration::from_secs(30));
    // A session: each request answered by the serving generation, then the ends.
    let session = |requests: &[(&str, &str)]| line_session(&host, requests);
    session(&[("GET a\n", "VALUE 1\n"), ("SET c 3\n", "OK\n")]);
    host.wait_for_log("canary: 1 connection(s) compared", Duration::from_secs(10));
    session(&[("GET b\n", "NOT_FOUND\n")]);
    let line = verdict(&host, "canary rejected");
    assert!(
        line.contains("NOT_FOUND") && line.contains("NOT_THERE"),
        "{line}"
    );
    // The loop goes on, and the serving generation with its state: an answer from
    // it on a new connection and on the one from before the trial.
    session(&[("GET c\n", "VALUE 3\n")]);
    before.get_mut().write_all(b"GET a\n").unwrap();
    let mut line = String::new();
    before.read_line(&mut line).unwrap();
    assert_eq!(line, "VALUE 1\n", "the connection from before the trial");
}

#[test]
fn a_canary_with_an_instance_per_connection_is_refused_in_one_line() {
    let out = common::run_host(&["--swap", "canary", "--isolation", "connection"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("--swap canary works with --isolation shared only")
            && said.lines().count() == 1,
        "{said}"
    );
}

/// With two workers each tries the candidate on its own connections; the count is
/// theirs together and one verdict holds for both: both promote after 20
/// connections in all (about 10 each: neither would alone), and both reject once
/// one saw a divergence (the other sees no more connections).
#[test]
fn two_workers_reach_one_verdict() {
    let http = example("http");
    let host = canary(
        "canary-workers-same",
        &http,
        &with_custom_section(http.clone(), b"two workers"),
        20,
        &["--workers", "2"],
    );
    for _ in 0..20 {
        assert_eq!(fresh_body(&host), "hello\n");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::count(&host, "swap to generation 2 ") < 2 {
        assert!(
            Instant::now() < deadline,
            "not promoted in both:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let host = canary(
        "canary-workers-body",
        &http,
        &guest("http_v2"),
        20,
        &["--workers", "2"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::count(&host, "canary rejected") == 0 {
        assert!(Instant::now() < deadline, "not rejected:\n{}", host.log());
        assert_eq!(fresh_body(&host), "hello\n");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::count(&host, "canary rejected") < 2 {
        assert!(
            Instant::now() < deadline,
            "not rejected in both:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !host.log().contains("swap to generation 2"),
        "{}",
        host.log()
    );
}

/// A line session: each request answered by the serving generation as given,
/// then the client's end and the server's.
fn line_session(host: &Host, requests: &[(&str, &str)]) {
    let mut client = BufReader::new(host.connect());
    for (request, answer) in requests {
        client.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        client.read_line(&mut line).unwrap();
        assert_eq!(&line, answer, "the serving generation answers");
    }
    client
        .get_mut()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
}

/// A store session with the `stores_then_panics` guest: a `SET` and a `GET` of the
/// client's own key, and a `GET` of the key stored before the trial.
fn store_session(host: &Host, client_id: usize) {
    let (set, get) = (
        format!("SET k{client_id} v{client_id}\n"),
        format!("GET k{client_id}\n"),
    );
    let value = format!("VALUE v{client_id}\n");
    let requests = [
        (set.as_str(), "OK\n"),
        (get.as_str(), value.as_str()),
        ("GET before\n", "VALUE old\n"),
    ];
    line_session(host, &requests);
}

/// The store (contract 1.1): a candidate that answers clients alike but stores
/// other values is rejected, having changed nothing in the store; one that stores
/// the same is promoted.
#[test]
fn store_writes_are_compared_and_a_shadow_never_changes_the_store() {
    let serving = std::fs::read(test_guest("stores_then_panics")).unwrap();
    let tag = b"<tag:1>";
    let at = serving
        .windows(tag.len())
        .position(|w| w == tag)
        .expect("the tag in the guest's data");
    let mut other_values = serving.clone();
    other_values[at..at + tag.len()].copy_from_slice(b"<tag:2>");

    for (name, candidate, promoted) in [
        ("other-values", other_values, false),
        (
            "same-values",
            with_custom_section(serving.clone(), b"rebuilt"),
            true,
        ),
    ] {
        let (host, path) = serve_file(
            &format!("canary-store-{name}"),
            &serving,
            &["--swap", "canary", "--canary-connections", "5"],
        );
        let mut before = BufReader::new(host.connect());
        before.get_mut().write_all(b"SET before old\n").unwrap();
        let mut line = String::new();
        before.read_line(&mut line).unwrap();
        assert_eq!(line, "OK\n");
        install(&path, &candidate);
        host.signal(libc::SIGHUP);
        host.wait_for_log("canary: trying the new guest", Duration::from_secs(30));
        for client_id in 0..8 {
            store_session(&host, client_id);
            if host.log().contains("canary rejected") || host.log().contains(PROMOTED) {
                break;
            }
        }
        if promoted {
            verdict(&host, PROMOTED);
        } else {
            let line = verdict(&host, "canary rejected");
            assert!(
                line.contains("store operations differ") && line.contains("set t/k0"),
                "{line}"
            );
            // The candidate's writes went to its overlay: the store holds what the
            // serving generation stored, in its own tag (answered without it).
            let mut check = BufReader::new(host.connect());
            check.get_mut().write_all(b"GET k0\n").unwrap();
            let mut line = String::new();
            check.read_line(&mut line).unwrap();
            assert_eq!(line, "VALUE v0\n", "not the candidate's `<tag:2>v0`");
        }
    }
}
