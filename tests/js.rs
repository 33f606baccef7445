//! Guests written in JavaScript (`guest/js`): the SDK's own unit tests in Node, and
//! the examples built into components and served by the real host. The first test to
//! run builds them (installing the pinned toolchain from npm into a private directory
//! under cargo's target directory).

mod common;

use common::languages::{
    check_echo_backpressure, check_echo_on_200_connections, check_exception_is_a_contained_trap,
    check_http_conformance, check_kv_across_workers, load_http, run_ok, serve,
};

#[test]
fn the_sdk_unit_tests_pass_in_node() {
    let report = run_ok("node", &["--test", "guest/js/test/"]);
    // The TAP summary: tests ran, and every one of them passed.
    let count = |key: &str| -> usize {
        let prefix = format!("# {key} ");
        let mut values = report
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()));
        let value = values
            .next()
            .unwrap_or_else(|| panic!("no `{prefix}` line in the report:\n{report}"));
        assert!(values.next().is_none(), "two `{prefix}` lines:\n{report}");
        value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("`{prefix}{value}`: {e}\n{report}"))
    };
    let (tests, pass) = (count("tests"), count("pass"));
    assert!(tests > 0, "no tests ran:\n{report}");
    assert_eq!(pass, tests, "{pass} of {tests} tests passed:\n{report}");
    assert_eq!(count("fail"), 0, "{report}");
}

#[test]
fn echo_round_trips_on_200_concurrent_connections() {
    let host = serve("js", "echo", &[]);
    check_echo_on_200_connections(&host);
    check_echo_backpressure(&host);
}

#[test]
fn http_keeps_alive_pipelines_reads_byte_by_byte_and_refuses_garbage() {
    let host = serve("js", "http", &[]);
    check_http_conformance(&host);
    load_http(&host, 20_000, 120);
}

#[test]
fn a_throw_in_a_handler_is_a_trap_the_host_contains() {
    let host = serve("js", "throws", &[]);
    check_exception_is_a_contained_trap(&host);
    // The exception's message and stack reach the log.
    assert!(
        host.log().contains("the throws guest was told to throw"),
        "{}",
        host.log()
    );
}

/// The JavaScript kv keeps its data in the host's store (contract 1.1).
#[test]
fn kv_stores_in_the_host_and_answers_across_workers() {
    let host = serve("js", "kv", &["--workers", "2"]);
    check_kv_across_workers(&host);
}
