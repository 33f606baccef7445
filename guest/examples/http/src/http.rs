//! The HTTP/1.1 logic of the `http` example, with no I/O: request bytes in,
//! response bytes out.
//!
//! Every `GET` is answered `200 OK` with the body `hello\n` (or another body, with
//! the `_with` functions: the hot-swap tests' second generation says `hello v2\n`),
//! every `HEAD` with the same head and no body, any other method with `405`. Connections are kept alive
//! as HTTP/1.1 says (HTTP/1.0 only with `Connection: keep-alive`), pipelined
//! requests are answered in order, and a request body announced by
//! `Content-Length` is skipped.
//!
//! This file depends on `httparse` and `std` only, because the host's native
//! baseline benchmark includes this very file with `#[path]`: the wasm guest and
//! the native loop then run the same HTTP code, and the benchmark measures the
//! sandbox rather than two implementations.
//!
//! Nothing here allocates per request beyond growing the caller's output buffer:
//! headers are parsed into a stack array, and responses are assembled from static
//! pieces.

use httparse::{EMPTY_HEADER, Request, Status};

/// Longest request head (request line and headers) accepted.
///
/// A client that sends more without finishing its head gets `431` instead of
/// making the server buffer whatever it sends.
const MAX_HEAD: usize = 16 * 1024;

/// Most header fields accepted in one request; more get `431`. Also the size of
/// the stack array they are parsed into.
const MAX_HEADERS: usize = 32;

/// Largest request body accepted (and skipped); more gets `413`.
///
/// The body is skipped only once all of it has arrived, so this bounds what a
/// connection buffers: at most `MAX_HEAD + MAX_BODY` bytes.
const MAX_BODY: usize = 64 * 1024;

/// The body of every successful `GET`, unless a `_with` function is given another.
pub const HELLO: &[u8] = b"hello\n";

/// What [`answer`] made of the start of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// One complete request was read and its response appended to the output.
    Answered {
        /// Bytes of input the request took (head and body). The next request, if
        /// any, starts right after them.
        consumed: usize,
        /// The connection closes once the response is sent: the request asked for
        /// it, or it is HTTP/1.0 without `keep-alive`. The response says so with
        /// `Connection: close`.
        close: bool,
    },
    /// The input holds no complete request yet: nothing was appended. Call again
    /// with the same bytes and more behind them.
    Incomplete,
    /// The request is malformed or refused. An error response with
    /// `Connection: close` was appended; send it and close the connection, ignoring
    /// the rest of the input (after a bad request there is no telling where the next
    /// one would start).
    Rejected,
}

/// What [`answer_all`] made of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answers {
    /// Bytes of input taken by the requests answered. The rest is the start of an
    /// incomplete request: keep it and call again when more arrives.
    pub consumed: usize,
    /// Close the connection once the responses are sent; ignore the rest of the
    /// input.
    pub close: bool,
    /// The last request was refused ([`Outcome::Rejected`]): the rest of it may
    /// still be on its way, and closing before it arrives would have the kernel
    /// answer it with a reset that can destroy the refusal.
    pub rejected: bool,
}

/// Answers the request at the start of `input`, appending its response to `out`.
pub fn answer(input: &[u8], out: &mut Vec<u8>) -> Outcome {
    answer_one(input, out, false, HELLO)
}

/// Like [`answer`], but the response says `Connection: close` whatever the request
/// asked, and an `Answered` outcome has `close` set: for the last request of a
/// connection, when the server is shutting down.
pub fn answer_last(input: &[u8], out: &mut Vec<u8>) -> Outcome {
    answer_last_with(input, out, HELLO)
}

/// Like [`answer_last`], with `body` instead of [`HELLO`] for a `GET`.
pub fn answer_last_with(input: &[u8], out: &mut Vec<u8>, body: &[u8]) -> Outcome {
    answer_one(input, out, true, body)
}

/// Answers one request; `last` forces `Connection: close`, and a `GET` gets `body`.
fn answer_one(input: &[u8], out: &mut Vec<u8>, last: bool, body: &[u8]) -> Outcome {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut request = Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(Status::Complete(_)) => return reject(out, &HEAD_TOO_LARGE),
        Ok(Status::Partial) if input.len() > MAX_HEAD => return reject(out, &HEAD_TOO_LARGE),
        Ok(Status::Partial) => return Outcome::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return reject(out, &HEAD_TOO_LARGE),
        Err(_) => return reject(out, &BAD_REQUEST),
    };
    let head = match Head::read(&request) {
        Ok(head) => head,
        Err(refusal) => return reject(out, refusal),
    };
    if head.content_length > MAX_BODY {
        return reject(out, &BODY_TOO_LARGE);
    }
    let consumed = head_len + head.content_length;
    if input.len() < consumed {
        return Outcome::Incomplete;
    }

    let close = last || head.closes();
    let connection = if close {
        Connection::Close
    } else if head.http10 {
        // An HTTP/1.0 client keeps the connection only if told it may.
        Connection::KeepAlive
    } else {
        Connection::Default
    };
    let ok = Response { body, ..OK };
    match request.method {
        Some("GET") => respond(out, &ok, connection, Body::Send),
        Some("HEAD") => respond(out, &ok, connection, Body::Omit),
        _ => respond(out, &METHOD_NOT_ALLOWED, connection, Body::Send),
    }
    Outcome::Answered { consumed, close }
}

/// Answers every complete request at the start of `input`, in order, appending the
/// responses to `out`: all the pipelined requests a read brought in, in one go.
pub fn answer_all(input: &[u8], out: &mut Vec<u8>) -> Answers {
    answer_all_with(input, out, HELLO)
}

/// Like [`answer_all`], with `body` instead of [`HELLO`] for each `GET`.
pub fn answer_all_with(input: &[u8], out: &mut Vec<u8>, body: &[u8]) -> Answers {
    let mut consumed = 0;
    while consumed < input.len() {
        match answer_one(&input[consumed..], out, false, body) {
            Outcome::Answered { consumed: n, close } => {
                consumed += n;
                if close {
                    return Answers {
                        consumed,
                        close,
                        rejected: false,
                    };
                }
            }
            Outcome::Incomplete => break,
            Outcome::Rejected => {
                return Answers {
                    consumed,
                    close: true,
                    rejected: true,
                };
            }
        }
    }
    Answers {
        consumed,
        close: false,
        rejected: false,
    }
}

/// What the response needs to know about a request's head.
struct Head {
    http10: bool,
    /// `Connection: close` was sent.
    close_requested: bool,
    /// `Connection: keep-alive` was sent.
    keep_alive_requested: bool,
    content_length: usize,
}

impl Head {
    fn read(request: &Request<'_, '_>) -> Result<Self, &'static Response<'static>> {
        let mut head = Head {
            http10: request.version == Some(0),
            close_requested: false,
            keep_alive_requested: false,
            content_length: 0,
        };
        let mut content_length = None;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let length = parse_content_length(header.value).ok_or(&BAD_REQUEST)?;
                // Two different lengths make the framing ambiguous: the classic
                // request-smuggling setup. Refuse rather than pick one.
                if content_length.is_some_and(|known| known != length) {
                    return Err(&BAD_REQUEST);
                }
                content_length = Some(length);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                // A chunked body cannot be skipped without decoding it.
                return Err(&NOT_IMPLEMENTED);
            } else if header.name.eq_ignore_ascii_case("connection") {
                for option in header.value.split(|&byte| byte == b',') {
                    let option = option.trim_ascii();
                    head.close_requested |= option.eq_ignore_ascii_case(b"close");
                    head.keep_alive_requested |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        head.content_length = content_length.unwrap_or(0);
        Ok(head)
    }

    /// Whether the connection ends after this request's response.
    fn closes(&self) -> bool {
        self.close_requested || (self.http10 && !self.keep_alive_requested)
    }
}

/// Parses a `Content-Length` value: decimal digits only (no sign, no spaces
/// inside), saturating at `usize::MAX` so a huge value is "too large" rather than
/// "malformed".
fn parse_content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0usize, |length, &digit| {
        length
            .saturating_mul(10)
            .saturating_add(usize::from(digit - b'0'))
    }))
}

/// A response this server sends: a status line and a `text/plain` body.
struct Response<'a> {
    status: &'static [u8],
    /// Header lines beyond the framing ones, each ending in `\r\n`.
    extra_headers: &'static [u8],
    body: &'a [u8],
}

const OK: Response<'static> = Response {
    status: b"200 OK",
    extra_headers: b"",
    body: HELLO,
};
const METHOD_NOT_ALLOWED: Response<'static> = Response {
    status: b"405 Method Not Allowed",
    extra_headers: b"Allow: GET, HEAD\r\n",
    body: b"method not allowed\n",
};
const BAD_REQUEST: Response<'static> = Response {
    status: b"400 Bad Request",
    extra_headers: b"",
    body: b"bad request\n",
};
const BODY_TOO_LARGE: Response<'static> = Response {
    status: b"413 Content Too Large",
    extra_headers: b"",
    body: b"request body too large\n",
};
const HEAD_TOO_LARGE: Response<'static> = Response {
    status: b"431 Request Header Fields Too Large",
    extra_headers: b"",
    body: b"request header fields too large\n",
};
const NOT_IMPLEMENTED: Response<'static> = Response {
    status: b"501 Not Implemented",
    extra_headers: b"",
    body: b"transfer-encoding not supported\n",
};

/// The `Connection` header a response carries.
#[derive(Clone, Copy)]
enum Connection {
    /// None: HTTP/1.1 keeps the connection by default.
    Default,
    KeepAlive,
    Close,
}

/// Whether the body goes out (`HEAD` gets the head alone).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Send,
    Omit,
}

fn reject(out: &mut Vec<u8>, response: &Response<'_>) -> Outcome {
    respond(out, response, Connection::Close, Body::Send);
    Outcome::Rejected
}

fn respond(out: &mut Vec<u8>, response: &Response<'_>, connection: Connection, body: Body) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(response.status);
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    push_decimal(out, response.body.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(match connection {
        Connection::Default => b"",
        Connection::KeepAlive => b"Connection: keep-alive\r\n",
        Connection::Close => b"Connection: close\r\n",
    });
    out.extend_from_slice(response.extra_headers);
    out.extend_from_slice(b"\r\n");
    if body == Body::Send {
        out.extend_from_slice(response.body);
    }
}

/// Appends `n` in decimal, through a stack buffer rather than a formatter.
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_RESPONSE: &str =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";

    fn answer_str(input: &str) -> (Outcome, String) {
        let mut out = Vec::new();
        let outcome = answer(input.as_bytes(), &mut out);
        (
            outcome,
            String::from_utf8(out).expect("responses are ASCII"),
        )
    }

    fn answer_all_str(input: &str) -> (Answers, String) {
        let mut out = Vec::new();
        let answers = answer_all(input.as_bytes(), &mut out);
        (
            answers,
            String::from_utf8(out).expect("responses are ASCII"),
        )
    }

    fn answered(consumed: usize, close: bool) -> Outcome {
        Outcome::Answered { consumed, close }
    }

    #[test]
    fn get_is_answered_hello_and_kept_alive() {
        let request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (outcome, out) = answer_str(request);
        assert_eq!(outcome, answered(request.len(), false));
        assert_eq!(out, HELLO_RESPONSE);
    }

    #[test]
    fn head_gets_the_head_without_the_body() {
        let (_, out) = answer_str("HEAD /x HTTP/1.1\r\n\r\n");
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n"
        );
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let (outcome, out) = answer_str("DELETE / HTTP/1.1\r\n\r\n");
        assert_eq!(outcome, answered(21, false));
        assert!(
            out.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nAllow: GET, HEAD\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nmethod not allowed\n"), "{out}");
    }

    #[test]
    fn connection_close_is_honoured_and_echoed() {
        let (outcome, out) = answer_str("GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n");
        assert!(matches!(outcome, Outcome::Answered { close: true, .. }));
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    }

    #[test]
    fn http10_closes_unless_keep_alive_is_asked_for() {
        let (outcome, out) = answer_str("GET / HTTP/1.0\r\n\r\n");
        assert!(matches!(outcome, Outcome::Answered { close: true, .. }));
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");

        let (outcome, out) = answer_str("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(matches!(outcome, Outcome::Answered { close: false, .. }));
        assert!(out.contains("\r\nConnection: keep-alive\r\n"), "{out}");
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let input =
            "GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /d HT";
        let (answers, out) = answer_all_str(input);
        assert_eq!(answers.consumed, input.len() - "GET /d HT".len());
        assert!(!answers.close);
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3);
        assert_eq!(out.matches("hello\n").count(), 2, "HEAD has no body");
    }

    #[test]
    fn pipelining_stops_at_a_close() {
        let input = "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (answers, out) = answer_all_str(input);
        assert!(answers.close);
        assert_eq!(
            answers.consumed,
            input.find("GET / HTTP/1.1\r\n\r\n").unwrap()
        );
        assert_eq!(out.matches("HTTP/1.1").count(), 1);
    }

    #[test]
    fn a_request_split_anywhere_is_incomplete_until_whole() {
        let request = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
        for end in 0..request.len() {
            let (outcome, out) = answer_str(&request[..end]);
            assert_eq!(outcome, Outcome::Incomplete, "after {end} bytes");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn a_body_is_waited_for_and_skipped() {
        let head = "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        let (outcome, _) = answer_str(&format!("{head}abc"));
        assert_eq!(outcome, Outcome::Incomplete);
        let (answers, out) = answer_all_str(&format!("{head}abcdeGET / HTTP/1.1\r\n\r\n"));
        assert_eq!(answers.consumed, head.len() + 5 + 18);
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2);
    }

    #[test]
    fn repeated_equal_lengths_pass_and_differing_ones_are_refused() {
        let same = "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert!(matches!(answer_str(same).0, Outcome::Answered { .. }));
        let differing = "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy";
        let (outcome, out) = answer_str(differing);
        assert_eq!(outcome, Outcome::Rejected);
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    }

    #[test]
    fn a_bad_content_length_is_refused() {
        for value in ["-1", "1 2", "0x10", ""] {
            let request = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            let (outcome, out) = answer_str(&request);
            assert_eq!(outcome, Outcome::Rejected, "{value:?}");
            assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        }
    }

    #[test]
    fn a_large_body_is_refused() {
        let (outcome, out) =
            answer_str("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(outcome, Outcome::Rejected);
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    }

    #[test]
    fn transfer_encoding_is_not_implemented() {
        let (outcome, out) = answer_str("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(outcome, Outcome::Rejected);
        assert!(out.starts_with("HTTP/1.1 501 Not Implemented\r\n"), "{out}");
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    }

    #[test]
    fn garbage_is_a_bad_request() {
        let (outcome, out) = answer_str("\x16\x03\x01 hello\r\n\r\n");
        assert_eq!(outcome, Outcome::Rejected);
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    }

    #[test]
    fn a_head_that_grows_past_the_limit_is_refused() {
        let unfinished = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(MAX_HEAD));
        let (outcome, out) = answer_str(&unfinished);
        assert_eq!(outcome, Outcome::Rejected);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");

        let (outcome, _) = answer_str(&format!("{unfinished}\r\n\r\n"));
        assert_eq!(outcome, Outcome::Rejected, "complete but too large");

        let (outcome, _) = answer_str(&unfinished[..MAX_HEAD]);
        assert_eq!(outcome, Outcome::Incomplete, "at the limit, still waiting");
    }

    #[test]
    fn too_many_headers_are_refused() {
        let mut request = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            request.push_str(&format!("X-{i}: y\r\n"));
        }
        request.push_str("\r\n");
        let (outcome, out) = answer_str(&request);
        assert_eq!(outcome, Outcome::Rejected);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }

    #[test]
    fn empty_input_answers_nothing() {
        assert_eq!(
            answer_all_str(""),
            (
                Answers {
                    consumed: 0,
                    close: false,
                    rejected: false
                },
                String::new()
            )
        );
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 65536, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn the_last_request_is_answered_with_connection_close() {
        let mut out = Vec::new();
        let request = "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let outcome = answer_last(request.as_bytes(), &mut out);
        assert_eq!(outcome, answered(request.len() / 2, true));
        assert_eq!(
            String::from_utf8(out).expect("responses are ASCII"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\
             Connection: close\r\n\r\nhello\n"
        );
        let mut out = Vec::new();
        assert_eq!(answer_last(b"GET / HT", &mut out), Outcome::Incomplete);
        assert!(out.is_empty());
    }

    #[test]
    fn another_body_is_sent_with_its_own_length() {
        let mut out = Vec::new();
        let input = b"GET / HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\n";
        let answers = answer_all_with(input, &mut out, b"hello v2\n");
        assert_eq!(answers.consumed, input.len());
        assert_eq!(
            String::from_utf8(out).expect("responses are ASCII"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nhello v2\n\
             HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\n"
        );
        let mut out = Vec::new();
        answer_last_with(b"GET / HTTP/1.1\r\n\r\n", &mut out, b"v2");
        assert!(out.ends_with(b"Connection: close\r\n\r\nv2"));
    }
}
