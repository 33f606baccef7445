//! `host health`: asks a running host's admin listener whether it is alive (or, with
//! `--ready`, ready), for container health checks in images that have no HTTP client
//! (a distroless image has neither `curl` nor a shell).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How long the whole probe may take: connecting, then each read and write.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of an answer read: the endpoints' answers are a line or two.
const MAX_ANSWER: u64 = 4096;

/// Asks `GET /healthz` (or `/readyz`) of the admin listener at `admin`; `Ok` with its
/// one-line answer on `200`, an error naming the address and the status otherwise.
pub fn health(admin: SocketAddr, ready: bool) -> Result<String> {
    let path = if ready { "/readyz" } else { "/healthz" };
    let mut stream = TcpStream::connect_timeout(&admin, PROBE_TIMEOUT)
        .with_context(|| format!("cannot reach the admin listener at {admin}"))?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("cannot ask {admin}{path}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .with_context(|| format!("no answer from {admin}{path}"))?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let body_at = match response.parse(&answer) {
        Ok(httparse::Status::Complete(at)) => at,
        _ => bail!("{admin}{path} did not answer HTTP: is {admin} the admin listener?"),
    };
    let status = response.code.unwrap_or(0);
    let body = String::from_utf8_lossy(&answer[body_at..]);
    let body = body.trim();
    if status != 200 {
        bail!("{admin}{path} answered {status}: {body}");
    }
    Ok(format!("{admin}{path}: {body}"))
}
