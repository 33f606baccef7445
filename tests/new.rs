//! `host new`: the project it writes builds with its own `build.sh` (from another
//! directory) and the host serves the result; an existing directory and a bad name
//! are one line and exit 1.

mod common;

use std::io::{BufReader, Write};
use std::path::Path;
use std::process::Command;

use common::{Host, fresh_body, host_bin, languages, scratch};

#[test]
fn host_new_makes_a_guest_that_builds_and_serves() {
    let dir = scratch("new");
    let new = |name: &str| {
        Command::new(host_bin())
            .args(["new", name])
            .current_dir(&dir)
            .output()
            .expect("run host new")
    };
    let made = new("hello-guest");
    assert!(made.status.success(), "{made:?}");
    assert!(String::from_utf8_lossy(&made.stdout).starts_with("made "));
    for (name, why) in [
        ("hello-guest", "exists already"),
        ("9lives", "is not a guest name"),
    ] {
        let refused = new(name);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{said}");
        assert!(said.contains(why) && said.lines().count() == 1, "{said}");
    }

    // Its own script, from another directory; a target directory kept between runs.
    let build = Command::new("bash")
        .arg(dir.join("hello-guest/build.sh"))
        .current_dir(std::env::temp_dir())
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-guest"),
        )
        .output()
        .expect("run build.sh");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = dir.join("hello-guest/hello-guest.wasm");
    let host = Host::start(&["--guest", wasm.to_str().unwrap()]);
    assert_eq!(fresh_body(&host), "hello\n");
}

/// `host new NAME --lang python|js`: the project builds with its own `build.sh` from
/// another directory (its toolchain in the tests' shared private directory, so that it
/// is installed once) and the host serves the result, keep-alive and pipelined.
fn a_project_in(lang: &str) {
    let dir = scratch(&format!("new-{lang}"));
    let name = format!("hello-{lang}");
    let made = Command::new(host_bin())
        .args(["new", &name, "--lang", lang])
        .current_dir(&dir)
        .output()
        .expect("run host new");
    assert!(made.status.success(), "{made:?}");
    let build = Command::new("bash")
        .arg(dir.join(&name).join("build.sh"))
        .current_dir(std::env::temp_dir())
        .env("SANDSOCK_TOOLS", languages::tools_dir())
        .output()
        .expect("run build.sh");
    assert!(
        build.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = dir.join(&name).join(format!("{name}.wasm"));
    let host = Host::start(&["--guest", wasm.to_str().unwrap()]);
    assert_eq!(fresh_body(&host), "hello\n");
    let mut client = BufReader::new(host.connect());
    client
        .get_mut()
        .write_all(&b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(3))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(languages::read_response(&mut client).1, "hello\n");
    }
}

#[test]
fn host_new_lang_python_makes_a_guest_that_builds_and_serves() {
    a_project_in("python");
}

#[test]
fn host_new_lang_js_makes_a_guest_that_builds_and_serves() {
    a_project_in("js");
}
