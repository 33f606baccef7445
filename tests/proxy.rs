//! The `proxy` example and outbound connections: through to another host when
//! `--allow-connect` permits it, denied when it does not, half-close passed through.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{
    Host, pattern, read_line, read_until_closed, send_finish_and_read_all, start_with_log_level,
};

fn proxy_to(upstream: &Host, allow: bool) -> Host {
    let target = upstream.addr.to_string();
    let env = format!("UPSTREAM={target}");
    let mut args = vec!["--guest", "proxy", "--env", env.as_str()];
    if allow {
        args.extend(["--allow-connect", target.as_str()]);
    }
    Host::start(&args)
}

#[test]
fn the_proxy_forwards_both_ways_when_allowed() {
    let upstream = Host::start(&["--guest", "echo"]);
    let proxy = proxy_to(&upstream, true);
    let mut client = proxy.connect();
    for i in 0..10 {
        let line = format!("through the proxy {i}\n");
        client.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_line(&mut client), line.trim_end());
    }
}

#[test]
fn the_proxy_passes_half_close_and_large_payloads_through() {
    let upstream = Host::start(&["--guest", "echo"]);
    let proxy = proxy_to(&upstream, true);
    let mut client = proxy.connect();
    let payload = pattern(2 << 20, 11);
    // The FIN must reach the echo upstream, whose own FIN must come back.
    let echoed = send_finish_and_read_all(&mut client, &payload);
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the proxied bytes differ");
}

#[test]
fn the_proxy_is_denied_without_allow_connect() {
    // At debug level the upstream logs every connection it accepts.
    let upstream = start_with_log_level(&["--guest", "echo"], "debug");
    let proxy = proxy_to(&upstream, false);
    let mut client = proxy.connect();
    let _ = client.write_all(b"let me through\n");
    // The guest is told not-permitted and closes the client: nothing comes back.
    assert!(read_until_closed(&mut client).is_empty());
    proxy.wait_for_log("guest connect denied", Duration::from_secs(5));
    assert!(
        !upstream.log().contains("accepted"),
        "the upstream was reached:\n{}",
        upstream.log()
    );
}
