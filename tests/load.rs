//! `host load` against the real host: every request checked, the tallies exact, and a
//! failing run failing for the reason it should.

mod common;

use common::{Host, run_host};

/// The report's lines that say how a run of `planned` requests went, exactly.
fn assert_tally(report: &str, ok: u64, planned: u64, errors: u64) {
    let ok_line = format!("requests ok:    {ok} of {planned}\n");
    let errors_line = format!("errors:         {errors}\n");
    assert!(report.contains(&ok_line), "want {ok_line:?} in:\n{report}");
    assert!(
        report.contains(&errors_line),
        "want {errors_line:?} in:\n{report}"
    );
}

/// Runs `host load` with 50 connections and 10,000 requests; it must succeed.
fn load(host: &Host, extra: &[&str]) -> String {
    let addr = host.addr.to_string();
    let mut args = vec!["load", addr.as_str(), "-c", "50", "-n", "10000", "--quiet"];
    args.extend_from_slice(extra);
    let out = run_host(&args);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "load failed: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

#[test]
fn load_against_http_completes_ten_thousand_requests_without_error() {
    let host = Host::start(&["--guest", "http"]);
    let report = load(&host, &["--http"]);
    assert_tally(&report, 10_000, 10_000, 0);
}

#[test]
fn load_against_echo_completes_ten_thousand_requests_without_error() {
    let host = Host::start(&["--guest", "echo"]);
    let report = load(&host, &[]);
    assert_tally(&report, 10_000, 10_000, 0);
}

#[test]
fn load_with_a_connection_per_request_against_http() {
    let host = Host::start(&["--guest", "http"]);
    let report = load(&host, &["--http", "--close"]);
    assert_tally(&report, 10_000, 10_000, 0);
}

#[test]
fn load_reports_failure_against_the_wrong_protocol() {
    // Echo does not speak HTTP: it sends the request back, which is no response head,
    // so every request must count as an error, and the run must say so (exit 1, where
    // a usage error would be 2).
    let host = Host::start(&["--guest", "echo"]);
    let addr = host.addr.to_string();
    let out = run_host(&[
        "load",
        &addr,
        "--http",
        "-c",
        "2",
        "-n",
        "10",
        "--quiet",
        "--timeout",
        "5",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_tally(&report, 0, 10, 10);
    assert!(report.contains("bad response head"), "{report}");
}
