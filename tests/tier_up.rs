//! Tier-up: a swap to code not in the compiled cache serves first what the baseline
//! compiler (Winch) made of it, then swaps by itself to the optimizing compiler's
//! code; code in the cache, or `--no-tier-up`, swaps once.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    Host, connect, count, example, fresh_body, get, http_v2, install, reloads_settled, scratch,
    test_guest, wait_swapped_to,
};

const V1: &str = "hello\n";
const V2: &str = "hello v2\n";

/// Serves the http example from a fresh file with `flags`; returns the host and the file.
fn serve(name: &str, flags: &[&str]) -> (Host, PathBuf) {
    let path = scratch(name).join("guest.wasm");
    install(&path, &example("http"));
    let mut args = vec!["--guest", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    (Host::start(&args), path)
}

#[test]
fn new_code_serves_as_baseline_code_then_tiers_up_by_itself() {
    for mode in ["drain", "handoff"] {
        let (host, path) = serve(&format!("tier-{mode}"), &["--no-cache", "--swap", mode]);
        let mut open = connect(&host);
        assert_eq!(get(&mut open), V1);
        install(&path, &http_v2());
        host.signal(libc::SIGHUP);
        wait_swapped_to(&host, 2);
        host.wait_for_log(
            "tier-up: generation 3 runs the optimized code of generation 2",
            Duration::from_secs(30),
        );
        let log = host.log();
        assert!(log.contains("compiled by the baseline compiler"), "{log}");
        assert!(
            log.contains("optimized code of the new guest compiled"),
            "{log}"
        );
        assert_eq!(
            fresh_body(&host),
            V2,
            "{mode}: new connections get the new code"
        );
        let expected = if mode == "drain" { V1 } else { V2 };
        assert_eq!(
            get(&mut open),
            expected,
            "{mode}: the connection open before"
        );
        if mode == "handoff" {
            host.wait_for_log("generation 2 dropped", Duration::from_secs(10));
        }
    }
}

#[test]
fn code_in_the_cache_or_no_tier_up_swaps_once() {
    let cache = scratch("tier-cache");
    let cache_arg = cache.to_str().unwrap();
    // A first host puts the optimized code of v2 in the cache (its tier-up does).
    {
        let (host, path) = serve("tier-warm", &["--cache-dir", cache_arg]);
        install(&path, &http_v2());
        host.signal(libc::SIGHUP);
        host.wait_for_log("tier-up: generation 3", Duration::from_secs(30));
    }
    let (host, path) = serve("tier-cached", &["--cache-dir", cache_arg]);
    install(&path, &http_v2());
    host.signal(libc::SIGHUP);
    wait_swapped_to(&host, 2);
    assert_eq!(fresh_body(&host), V2);
    assert!(
        host.log()
            .contains("new guest loaded compiled from the cache")
    );

    let (uncached, path) = serve("tier-off", &["--no-cache", "--no-tier-up"]);
    install(&path, &http_v2());
    uncached.signal(libc::SIGHUP);
    wait_swapped_to(&uncached, 2);
    assert_eq!(fresh_body(&uncached), V2);

    // Neither swaps again. Whether a tier-up follows is decided by the reload that
    // brought the code, before the loader takes the next trigger (its "new guest"
    // line says "compiled by the baseline compiler (Winch); optimizing" when one
    // does): once the log shows all the reloads so far led to, and none says so,
    // nothing more comes of them.
    for host in [&host, &uncached] {
        reloads_settled(host, |host| assert_eq!(fresh_body(host), V2));
    }
    for host in [&host, &uncached] {
        assert_eq!(count(host, "swap to generation"), 1, "{}", host.log());
        assert_eq!(count(host, "tier-up"), 0, "{}", host.log());
        assert_eq!(count(host, "baseline"), 0, "{}", host.log());
    }
}

/// A newer guest supersedes a tier-up still compiling: its optimized code is dropped,
/// not swapped in over the newer guest, and the newer guest does not wait for it. The
/// JavaScript guests are large (QuickJS), so the optimizing compile of the first
/// takes seconds, while the baseline compile of the second takes a fraction of it.
#[test]
fn a_newer_guest_supersedes_a_tier_up_still_compiling() {
    let echo = common::languages::guest("js", "echo");
    let http = common::languages::guest("js", "http");
    let (host, path) = serve("tier-superseded", &["--no-cache", "--watch"]);
    install(&path, &std::fs::read(&echo).unwrap());
    wait_swapped_to(&host, 2);
    assert!(
        host.log().contains("compiled by the baseline compiler"),
        "{}",
        host.log()
    );
    install(&path, &std::fs::read(&http).unwrap());
    wait_swapped_to(&host, 3);
    host.wait_for_log("tier-up dropped", Duration::from_secs(30));
    // The tier-up of the http guest itself still comes, and it is the one that swaps.
    host.wait_for_log("tier-up: generation 4", Duration::from_secs(60));
    let log = host.log();
    assert_eq!(count(&host, "tier-up dropped"), 1, "{log}");
    assert_eq!(count(&host, "tier-up: generation"), 1, "{log}");
    assert!(
        log.contains("tier-up: generation 4 runs the optimized code of generation 3"),
        "{log}"
    );
}

/// A newer file that is refused (not a component) does not cost the serving guest its
/// tier-up: the code held back while the newer one loaded goes over after all.
#[test]
fn a_refused_newer_file_leaves_the_tier_up_to_finish() {
    let echo = common::languages::guest("js", "echo");
    let (host, path) = serve("tier-kept", &["--no-cache", "--watch"]);
    install(&path, &std::fs::read(&echo).unwrap());
    wait_swapped_to(&host, 2);
    install(&path, b"not a component");
    host.wait_for_log("reload refused", Duration::from_secs(30));
    host.wait_for_log(
        "tier-up: generation 3 runs the optimized code of generation 2",
        Duration::from_secs(60),
    );
    assert_eq!(count(&host, "tier-up dropped"), 0, "{}", host.log());
}

/// A newer guest that loads but cannot start does not cost the serving guest its
/// optimized code: the tier-up it superseded starts again once the workers have
/// refused it. (A canary's rejection is the same outcome to the loader.)
#[test]
fn a_newer_guest_refused_at_start_gives_the_tier_up_back() {
    let echo = common::languages::guest("js", "echo");
    let flags = ["--no-cache", "--watch", "--max-memory", "8MiB"];
    let (host, path) = serve("tier-restarted", &flags);
    install(&path, &std::fs::read(&echo).unwrap());
    wait_swapped_to(&host, 2);
    install(
        &path,
        &std::fs::read(test_guest("too_big_to_start")).unwrap(),
    );
    host.wait_for_log("tier-up dropped", Duration::from_secs(30));
    host.wait_for_log("reload refused: generation", Duration::from_secs(30));
    host.wait_for_log("tier-up started again", Duration::from_secs(30));
    host.wait_for_log(
        "tier-up: generation 3 runs the optimized code of generation 2",
        Duration::from_secs(60),
    );
    assert_eq!(count(&host, "tier-up: generation"), 1, "{}", host.log());
}
