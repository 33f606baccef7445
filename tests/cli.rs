//! The command line: `host check`, `host examples`, and the clear one-line errors for
//! bad input.

mod common;

use std::net::TcpListener;

use common::{run_host, scratch as scratch_dir, test_guest};

fn stderr_of(args: &[&str]) -> (bool, String) {
    let out = run_host(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last line of stderr: the error line (logs may come before it).
fn error_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or("")
}

#[test]
fn check_accepts_every_built_in_example() {
    let dir = scratch_dir("examples");
    let out = run_host(&["examples", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success());
    for name in ["http", "echo", "kv", "chat"] {
        let path = dir.join(format!("{name}.wasm"));
        let out = run_host(&["check", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("ok: "), "{stdout}");
        assert!(stdout.contains("sandsock:net/handler"), "{stdout}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn examples_lists_the_built_in_guests() {
    let out = run_host(&["examples"]);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    for name in ["http", "echo", "kv", "chat"] {
        assert!(listing.lines().any(|l| l.starts_with(name)), "{listing}");
    }
}

#[test]
fn check_rejects_a_text_file() {
    let dir = scratch_dir("text");
    let path = dir.join("notes.wasm");
    std::fs::write(&path, "just some text\n").unwrap();
    let (ok, stderr) = stderr_of(&["check", path.to_str().unwrap()]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(
        line.contains("notes.wasm") && line.contains("not a WebAssembly file"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_rejects_a_core_module() {
    let dir = scratch_dir("core");
    let path = dir.join("core.wasm");
    // The smallest valid core module: magic and version 1, no sections.
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let (ok, stderr) = stderr_of(&["check", path.to_str().unwrap()]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(
        line.contains("core.wasm") && line.contains("core WebAssembly module"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_rejects_a_component_of_another_world_naming_what_is_missing() {
    let path = test_guest("other_world");
    let (ok, stderr) = stderr_of(&["check", path.to_str().unwrap()]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(line.contains("other_world.wasm"), "{stderr}");
    assert!(line.contains("does not export `handle`"), "{stderr}");
    assert!(
        line.contains("run"),
        "it should say what it exports instead: {stderr}"
    );
}

/// The smallest component that uses the component model's async ABI, as
/// `wat::parse_str` makes it from:
///
/// ```wat
/// (component
///   (core func $cancel (canon task.cancel))
///   (core module $m (import "" "cancel" (func)))
///   (core instance (instantiate $m (with "" (instance (export "cancel" (func $cancel)))))))
/// ```
///
/// (Bytes, not the `wat` crate: as a dev-dependency it changes the features of
/// crates wasmtime shares, and the test build would no longer share the run build.)
const ASYNC_ABI_COMPONENT: [u8; 110] = [
    0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x08, 0x02, 0x01, 0x05, 0x01, 0x26, 0x00, 0x61,
    0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x02, 0x0b, 0x01, 0x00,
    0x06, 0x63, 0x61, 0x6e, 0x63, 0x65, 0x6c, 0x00, 0x00, 0x00, 0x09, 0x04, 0x6e, 0x61, 0x6d, 0x65,
    0x00, 0x02, 0x01, 0x6d, 0x02, 0x12, 0x02, 0x01, 0x01, 0x06, 0x63, 0x61, 0x6e, 0x63, 0x65, 0x6c,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x12, 0x00, 0x00, 0x24, 0x0e, 0x63, 0x6f, 0x6d, 0x70, 0x6f,
    0x6e, 0x65, 0x6e, 0x74, 0x2d, 0x6e, 0x61, 0x6d, 0x65, 0x01, 0x0b, 0x00, 0x00, 0x01, 0x00, 0x06,
    0x63, 0x61, 0x6e, 0x63, 0x65, 0x6c, 0x01, 0x06, 0x00, 0x11, 0x01, 0x00, 0x01, 0x6d,
];

/// A component built for the async ABI (componentize-qjs without `--sync`, say) is
/// refused with one line that says how to rebuild it, not with wasmtime's
/// "`task.cancel` requires the component model async feature".
#[test]
fn an_async_abi_component_is_refused_with_how_to_rebuild_it() {
    let path = common::scratch("async-abi").join("async.wasm");
    std::fs::write(&path, ASYNC_ABI_COMPONENT).unwrap();
    for args in [
        vec!["check", path.to_str().unwrap()],
        vec!["--guest", path.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    ] {
        let (ok, stderr) = stderr_of(&args);
        assert!(!ok);
        let line = error_line(&stderr);
        assert!(
            line.contains("async.wasm: built for the component model's async ABI")
                && line.contains("`task.cancel`")
                && line.contains("rebuild it synchronously"),
            "{stderr}"
        );
    }
}

#[test]
fn a_missing_guest_file_exits_non_zero_with_a_clear_message() {
    let (ok, stderr) = stderr_of(&[
        "--guest",
        "/nonexistent/handler.wasm",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        error_line(&stderr).contains("guest file not found: /nonexistent/handler.wasm"),
        "{stderr}"
    );
    let (ok, stderr) = stderr_of(&["--guest", "no-such-example", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(
        error_line(&stderr).contains("not a built-in guest"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_exits_non_zero_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, stderr) = stderr_of(&["--guest", "echo", "--listen", &addr]);
    assert!(!ok);
    let line = error_line(&stderr);
    assert!(
        line.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(line.to_lowercase().contains("in use"), "{stderr}");
}

#[test]
fn an_unparsable_address_exits_non_zero_naming_it() {
    let (ok, stderr) = stderr_of(&["--listen", "not-an-address"]);
    assert!(!ok);
    assert!(stderr.contains("not-an-address"), "{stderr}");
}

/// The stderr of `host ARGS`, which must fail with exit code 1 and end in one
/// `error:` line (log lines may come before it, never another error line); answers
/// that line.
fn the_error_line(args: &[&str]) -> String {
    let out = run_host(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "host {args:?}:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line for {args:?}:\n{stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(errors[0]),
        "the error line comes last:\n{stderr}"
    );
    assert!(errors[0].starts_with("error: "), "{stderr}");
    errors[0].to_string()
}

#[test]
fn a_mistyped_flag_is_one_line_with_a_hint() {
    let line = the_error_line(&["--port", "8080"]);
    assert!(
        line.contains("--port") && line.contains("--listen"),
        "{line}"
    );
    let line = the_error_line(&["--lisen", "127.0.0.1:1"]);
    assert!(line.contains("did you mean --listen"), "{line}");
    let line = the_error_line(&["check"]);
    assert!(line.contains("<PATH>"), "{line}");
}

#[test]
fn a_port_out_of_range_is_named() {
    let line = the_error_line(&["--listen", "127.0.0.1:70000"]);
    assert!(line.contains("port 70000 is out of range"), "{line}");
}

#[test]
fn the_same_address_twice_is_named_before_any_bind() {
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = free.to_string();
    let line = the_error_line(&["--guest", "echo", "--listen", &addr, "--listen", &addr]);
    assert!(
        line.contains(&format!("--listen {addr} is given twice")),
        "{line}"
    );
    let line = the_error_line(&["--guest", "echo", "--listen", &addr, "--admin", &addr]);
    assert!(line.contains("both --listen and --admin"), "{line}");
}

#[test]
fn a_memory_cap_below_what_the_guest_needs_names_the_flag_and_the_need() {
    let line = the_error_line(&["--guest", "echo", "--max-memory", "0"]);
    assert!(
        line.contains("--max-memory 0") && line.contains("needs") && line.contains("KiB"),
        "{line}"
    );
}

/// `-h` is a summary a reader can scan: one short line per flag, in groups;
/// `--help` keeps the long text.
#[test]
fn dash_h_is_a_summary_in_groups_and_dash_dash_help_the_long_text() {
    let short = run_host(&["-h"]);
    assert!(short.status.success());
    let short = String::from_utf8(short.stdout).unwrap();
    for line in short.lines() {
        assert!(line.len() <= 110, "{} characters: {line}", line.len());
    }
    for group in [
        "Guest and listening:",
        "Sandbox limits:",
        "Swaps and canary:",
        "Compiled-component cache:",
        "State the host keeps:",
        "Operations:",
    ] {
        assert!(short.contains(group), "no group {group}:\n{short}");
    }
    assert!(short.lines().count() <= 70, "{short}");
    let long = run_host(&["--help"]);
    assert!(long.status.success());
    let long = String::from_utf8(long.stdout).unwrap();
    assert!(
        long.contains("a guest that leaks is renewed before it runs out"),
        "--help keeps the long text:\n{long}"
    );
}
