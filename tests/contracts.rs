//! Every released contract keeps working: components built for 0.1.0, 0.2.0, 0.3.0,
//! 0.4.0 and 1.0.0 (`guest/testing/built_for_N_M`, from the WIT kept in `wit/N.M.0/`) pass
//! `host check`, which names their version, serve echo and HTTP, and are swapped to
//! and from a component built for today's contract with `--swap drain`, `handoff` and
//! `canary`; a component of a version the host does not know is refused with one line
//! naming it and the versions served.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use common::{
    Host, connect, count, example, fresh_body, get, http_v2, install, run_host, serve_file,
    test_guest, wait_swapped_to, with_custom_section,
};

/// The released versions before today's, with their test guests.
const OLD: [(&str, &str); 5] = [
    ("0.1.0", "built_for_0_1"),
    ("0.2.0", "built_for_0_2"),
    ("0.3.0", "built_for_0_3"),
    ("0.4.0", "built_for_0_4"),
    ("1.0.0", "built_for_1_0"),
];

/// What the log says when a canary promotes its candidate.
const PROMOTED: &str = "; promoted (shadow calls took";

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(test_guest(name)).unwrap()
}

#[test]
fn host_check_names_the_version_and_how_it_is_served() {
    for (version, name) in OLD {
        let out = run_host(&["check", test_guest(name).to_str().unwrap()]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        // 1.0 is linked to 1.1's bindings: no adapter between.
        let how = if version.starts_with("1.") {
            "served natively"
        } else {
            "served through the adapter"
        };
        assert!(
            said.contains(&format!("`sandsock:net/handler@{version}` world, {how}")),
            "{said}"
        );
    }
    for name in ["http_v2", "http", "built_for_1_0", "partial_read"] {
        let path = test_guest(name);
        let out = run_host(&["check", path.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&out.stdout);
        let built_for = if path.ends_with("partial_read.wasm") {
            "`sandsock:net/handler@0.4.0` world, served through the adapter"
        } else if path.ends_with("built_for_1_0.wasm") {
            "`sandsock:net/handler@1.0.0` world, served natively"
        } else {
            "`sandsock:net/handler@1.1.0` world, served natively"
        };
        assert!(said.contains(built_for), "{}: {said}", path.display());
    }
}

/// The 0.1 guest with its contract's names rewritten to `version` (the same length,
/// so the binary stays valid): a component built for a version no host released.
fn built_for(version: &str) -> Vec<u8> {
    let mut wasm = bytes("built_for_0_1");
    let (from, to) = (b"sandsock:net/".as_slice(), "@0.1.0");
    assert_eq!(to.len(), version.len() + 1);
    let mut at = 0;
    let mut found = 0;
    while let Some(offset) = wasm[at..].windows(from.len()).position(|w| w == from) {
        let start = at + offset;
        let end = start + wasm[start..].iter().position(|&b| b == b'@').unwrap();
        if wasm[end..].starts_with(to.as_bytes()) {
            wasm[end + 1..end + to.len()].copy_from_slice(version.as_bytes());
            found += 1;
        }
        at = end;
    }
    assert!(found > 0, "no contract names in the 0.1 guest");
    wasm
}

#[test]
fn a_component_of_an_unknown_version_is_refused_naming_both() {
    let dir = common::scratch("contracts-unknown");
    for version in ["0.9.0", "2.0.0"] {
        let path = dir.join(format!("built-for-{version}.wasm"));
        std::fs::write(&path, built_for(version)).unwrap();
        let path = path.to_str().unwrap();
        for args in [
            vec!["check", path],
            vec!["--guest", path, "--listen", "127.0.0.1:0"],
        ] {
            let out = run_host(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "one line: {stderr}");
            let said = errors[0];
            assert!(
                said.contains(&format!("built for sandsock:net@{version}"))
                    && said.contains("0.1.0, 0.2.0, 0.3.0, 0.4.0, 1.0.0 and 1.1.0")
                    && said.contains(&format!("built-for-{version}.wasm")),
                "{said}"
            );
        }
    }
}

/// One echo line, and its answer.
fn line(client: &mut BufReader<std::net::TcpStream>, line: &str) -> String {
    client.get_mut().write_all(line.as_bytes()).unwrap();
    let mut back = String::new();
    client.read_line(&mut back).unwrap();
    back
}

#[test]
fn old_components_serve_echo_and_http() {
    for (version, name) in OLD {
        let path = test_guest(name);
        let http = Host::start(&["--guest", path.to_str().unwrap(), "--env", "MODE=http"]);
        let mut client = connect(&http);
        for _ in 0..3 {
            assert_eq!(get(&mut client), "hello\n", "{version}: keep-alive");
        }
        drop(http);

        let echo = Host::start(&["--guest", path.to_str().unwrap()]);
        let mut client = BufReader::new(echo.connect());
        for sent in ["one\n", "two\n"] {
            assert_eq!(line(&mut client, sent), sent, "{version}: echo");
        }
        client
            .get_mut()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "{version}: closed after the peer's end: {rest:?}"
        );
    }
}

/// Swaps from the `old` guest to one built for today's contract and back, with
/// `mode`, checking who answers an open connection and a new one each time, and the
/// contract the serving generation's metric names.
fn there_and_back(version: &str, name: &str, mode: &str) {
    let old = bytes(name);
    let flags = [
        "--env",
        "MODE=http",
        "--swap",
        mode,
        "--admin",
        "127.0.0.1:0",
    ];
    let (host, path) = serve_file(&format!("contracts-{mode}-{version}"), &old, &flags);
    let serving = |contract: &str| {
        let labels = [("contract", contract)];
        assert_eq!(
            host.metric("sandsock_generation_info", &labels),
            1.0,
            "{version} {mode}"
        );
    };
    serving(version);
    let mut open = connect(&host);
    assert_eq!(get(&mut open), "hello\n");

    install(&path, &http_v2());
    host.signal(libc::SIGHUP);
    wait_swapped_to(&host, 2);
    assert_eq!(
        fresh_body(&host),
        "hello v2\n",
        "{version} {mode}: to today's"
    );
    let expected = if mode == "handoff" {
        "hello v2\n"
    } else {
        "hello\n"
    };
    assert_eq!(
        get(&mut open),
        expected,
        "{version} {mode}: the open connection"
    );
    serving("1.1.0");

    install(&path, &old);
    host.signal(libc::SIGHUP);
    wait_swapped_to(&host, 3);
    assert_eq!(fresh_body(&host), "hello\n", "{version} {mode}: and back");
    serving(version);
    let live = host.metric("sandsock_generations", &[("contract", version)]);
    assert!(
        live >= 1.0,
        "{version} {mode}: generations by contract: {live}"
    );
}

#[test]
fn old_components_are_drained_to_and_from_today() {
    for (version, name) in OLD {
        there_and_back(version, name, "drain");
    }
}

#[test]
fn old_components_hand_off_to_and_from_today() {
    for (version, name) in OLD {
        there_and_back(version, name, "handoff");
    }
}

/// Each version's `state` (0.1's `restore`, which cannot refuse, as well as the later
/// ones) carries a guest's count across a handoff to a new build of the same guest.
#[test]
fn old_components_keep_their_state_across_a_handoff() {
    for (version, name) in OLD {
        let old = bytes(name);
        let flags = ["--swap", "handoff"];
        let (host, path) = serve_file(&format!("contracts-state-{version}"), &old, &flags);
        let mut client = BufReader::new(host.connect());
        assert_eq!(line(&mut client, "a\n"), "a\n");
        assert_eq!(line(&mut client, "b\n"), "b\n");
        install(&path, &with_custom_section(old, b"rebuilt"));
        host.signal(libc::SIGHUP);
        wait_swapped_to(&host, 2);
        assert_eq!(
            line(&mut client, "COUNT\n"),
            "3\n",
            "{version}: the count came along"
        );
        assert!(
            !host.log().contains("refused"),
            "{version}: no snapshot refused:\n{}",
            host.log()
        );
    }
}

/// Recycling renews an old guest's instance, its state carried over by its own
/// version's `snapshot` and `restore`.
#[test]
fn old_components_are_recycled_keeping_their_state() {
    for (version, name) in OLD {
        let path = test_guest(name);
        let host = Host::start(&["--guest", path.to_str().unwrap(), "--recycle-after", "5"]);
        let mut client = BufReader::new(host.connect());
        for i in 0..12 {
            assert_eq!(line(&mut client, &format!("{i}\n")), format!("{i}\n"));
        }
        assert_eq!(
            line(&mut client, "COUNT\n"),
            "13\n",
            "{version}: the count survived"
        );
        // The log reaches the test through a reader thread that may lag the answers.
        host.wait_for_more_log("(--recycle-after 5)", 1, Duration::from_secs(10));
    }
}

#[test]
fn old_components_are_canaried_to_and_from_today() {
    for (version, name) in OLD {
        let old = bytes(name);
        let flags = [
            "--env",
            "MODE=http",
            "--swap",
            "canary",
            "--canary-connections",
            "5",
        ];
        let (host, path) = serve_file(&format!("contracts-canary-{version}"), &old, &flags);
        for (candidate, generation) in [(example("http"), 2), (old, 3)] {
            let tried = count(&host, "canary: trying the new guest");
            install(&path, &candidate);
            host.signal(libc::SIGHUP);
            host.wait_for_more_log(
                "canary: trying the new guest",
                tried,
                Duration::from_secs(30),
            );
            let promoted = count(&host, PROMOTED);
            for _ in 0..8 {
                assert_eq!(fresh_body(&host), "hello\n", "{version}");
            }
            host.wait_for_more_log(PROMOTED, promoted, Duration::from_secs(30));
            wait_swapped_to(&host, generation);
        }
    }
}
