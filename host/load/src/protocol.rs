//! [`Protocol`]: the request every client sends, and how each answer is checked: echo
//! byte for byte, or an HTTP 200 with exactly its `Content-Length` of body.

use crate::LoadArgs;

/// Most headers an HTTP response head may have.
const MAX_HEADERS: usize = 64;

/// The request every connection sends, built once, and how its answer is checked.
pub(crate) struct Protocol {
    pub(crate) request: Box<[u8]>,
    http: bool,
}

impl Protocol {
    pub(crate) fn new(args: &LoadArgs) -> Self {
        let request = if args.http {
            let connection = if args.close {
                "Connection: close\r\n"
            } else {
                ""
            };
            format!("GET / HTTP/1.1\r\nHost: {}\r\n{connection}\r\n", args.addr).into_bytes()
        } else {
            let mut line = args.payload.clone().into_bytes();
            line.push(b'\n');
            line
        };
        Self {
            request: request.into_boxed_slice(),
            http: args.http,
        }
    }

    /// The state of a response nothing of which has arrived yet.
    pub(crate) fn fresh_state(&self) -> ResponseState {
        if self.http {
            ResponseState::HttpHead
        } else {
            ResponseState::Echo { matched: 0 }
        }
    }

    /// Checks the next bytes of a response against what is expected. `data` starts where the
    /// previous call's `consumed` ended; it may hold a response's middle, its end, or its end
    /// followed by more (the caller decides what extra bytes mean).
    pub(crate) fn feed(&self, state: &mut ResponseState, data: &[u8]) -> Feed {
        if self.http {
            feed_http(state, data)
        } else {
            feed_echo(&self.request, state, data)
        }
    }
}

/// How far a response has been checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseState {
    /// Echo mode: this many bytes of the line came back right.
    Echo { matched: usize },
    /// HTTP mode: the head is not whole yet.
    HttpHead,
    /// HTTP mode: the head was a 200; this many body bytes are still due.
    HttpBody { remaining: u64, reusable: bool },
}

/// What feeding received bytes to [`Protocol::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// Not complete yet; the first `consumed` bytes are used up, the rest must be fed again
    /// with more (an HTTP head still in pieces).
    Partial { consumed: usize },
    /// Complete and correct after `consumed` bytes; `reusable` tells whether the server
    /// keeps the connection open for another request.
    Complete { consumed: usize, reusable: bool },
    /// Wrong, with the reason.
    Invalid(String),
}

/// Echo mode: the received bytes must be the next bytes of `expected`.
fn feed_echo(expected: &[u8], state: &mut ResponseState, data: &[u8]) -> Feed {
    let ResponseState::Echo { matched } = state else {
        return Feed::Invalid("echo check in an HTTP state".into());
    };
    let due = &expected[*matched..];
    let take = due.len().min(data.len());
    if let Some(at) = due.iter().zip(data).position(|(want, got)| want != got) {
        return Feed::Invalid(format!(
            "echo differs at byte {} of {}: expected '{}', got '{}' (read \"{}\")",
            *matched + at,
            expected.len(),
            due[at].escape_ascii(),
            data[at].escape_ascii(),
            data[..data.len().min(64)].escape_ascii()
        ));
    }
    *matched += take;
    if *matched == expected.len() {
        Feed::Complete {
            consumed: take,
            reusable: true,
        }
    } else {
        Feed::Partial { consumed: take }
    }
}

/// HTTP mode: a head (kept until it is whole), then `Content-Length` body bytes.
fn feed_http(state: &mut ResponseState, data: &[u8]) -> Feed {
    let (head_len, body) = match *state {
        ResponseState::HttpBody { .. } => (0, data),
        ResponseState::Echo { .. } => return Feed::Invalid("HTTP check in an echo state".into()),
        ResponseState::HttpHead => match parse_head(data) {
            Ok(None) => return Feed::Partial { consumed: 0 },
            Ok(Some(head)) => {
                *state = ResponseState::HttpBody {
                    remaining: head.content_length,
                    reusable: head.keep_alive,
                };
                (head.len, &data[head.len..])
            }
            Err(message) => return Feed::Invalid(message),
        },
    };
    let ResponseState::HttpBody {
        remaining,
        reusable,
    } = state
    else {
        unreachable!("the state was set to HttpBody above");
    };
    let take = usize::try_from(*remaining).map_or(body.len(), |due| due.min(body.len()));
    *remaining -= take as u64;
    let consumed = head_len + take;
    if *remaining == 0 {
        Feed::Complete {
            consumed,
            reusable: *reusable,
        }
    } else {
        Feed::Partial { consumed }
    }
}

/// A whole, acceptable HTTP response head.
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    content_length: u64,
    /// Whether the server keeps the connection open after this response.
    keep_alive: bool,
}

/// Parses a response head: `Ok(None)` while it is incomplete, `Err` unless it is a 200
/// with a `Content-Length` (chunked bodies are not supported).
fn parse_head(data: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => {
            return Err(format!(
                "bad response head ({err}): \"{}\"",
                data[..data.len().min(64)].escape_ascii()
            ));
        }
    };
    let code = response.code.unwrap_or(0);
    if code != 200 {
        return Err(format!(
            "status {code} {}, expected 200",
            response.reason.unwrap_or("")
        ));
    }
    let mut content_length = None;
    let mut keep_alive = response.version == Some(1);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = parse_content_length(header.value)?;
            if content_length.is_some_and(|seen| seen != value) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(
                "Transfer-Encoding responses are not supported; need Content-Length".into(),
            );
        } else if header.name.eq_ignore_ascii_case("connection") {
            if has_token(header.value, b"close") {
                keep_alive = false;
            } else if has_token(header.value, b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let content_length = content_length.ok_or("response has no Content-Length")?;
    Ok(Some(Head {
        len,
        content_length,
        keep_alive,
    }))
}

fn parse_content_length(value: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| format!("bad Content-Length \"{}\"", value.escape_ascii()))
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn protocol(http: bool, payload: &str) -> Protocol {
        let args = LoadArgs {
            addr: "127.0.0.1:8080".parse().unwrap(),
            connections: 1,
            requests: 1,
            http,
            payload: payload.into(),
            close: false,
            timeout_secs: 1,
            quiet: true,
            tls_ca: None,
            tls_server_name: String::new(),
        };
        Protocol::new(&args)
    }

    #[test]
    fn echo_request_is_the_payload_line() {
        assert_eq!(&*protocol(false, "ping").request, b"ping\n");
    }

    #[test]
    fn http_request_names_the_host_and_close() {
        let mut args = LoadArgs {
            addr: "127.0.0.1:8080".parse().unwrap(),
            connections: 1,
            requests: 1,
            http: true,
            payload: String::new(),
            close: true,
            timeout_secs: 1,
            quiet: true,
            tls_ca: None,
            tls_server_name: String::new(),
        };
        assert_eq!(
            &*Protocol::new(&args).request,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
        );
        args.close = false;
        assert_eq!(
            &*Protocol::new(&args).request,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
    }

    #[test]
    fn coalesced_responses_are_fed_one_at_a_time() {
        let p = protocol(false, "ping");
        let data = b"ping\nping\n";
        for start in [0, 5] {
            let mut state = ResponseState::Echo { matched: 0 };
            assert_eq!(
                p.feed(&mut state, &data[start..]),
                Feed::Complete {
                    consumed: 5,
                    reusable: true
                }
            );
        }
        let p = protocol(true, "");
        let ok = crate::inbox::tests::OK;
        let both = [ok, ok].concat();
        for start in [0, ok.len()] {
            let mut state = p.fresh_state();
            assert_eq!(
                p.feed(&mut state, &both[start..]),
                Feed::Complete {
                    consumed: ok.len(),
                    reusable: true
                }
            );
        }
    }
}
