//! `host load` against the real host: 10,000 checked requests, no errors.

mod common;

use common::{Host, run_host};

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
    assert!(report.contains("10000"), "{report}");
}

#[test]
fn load_against_echo_completes_ten_thousand_requests_without_error() {
    let host = Host::start(&["--guest", "echo"]);
    let report = load(&host, &[]);
    assert!(report.contains("10000"), "{report}");
}

#[test]
fn load_with_a_connection_per_request_against_http() {
    let host = Host::start(&["--guest", "http"]);
    load(&host, &["--http", "--close"]);
}

#[test]
fn load_reports_failure_against_the_wrong_protocol() {
    // Echo does not speak HTTP: every request must count as an error.
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
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
