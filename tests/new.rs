//! `host new`: the project it writes builds with its own `build.sh` (from another
//! directory) and the host serves the result; an existing directory and a bad name
//! are one line and exit 1.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Host, fresh_body, host_bin, scratch};

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
