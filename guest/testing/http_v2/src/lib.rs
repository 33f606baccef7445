//! `http_v2`: the `http` example with another body, `hello v2\n`.
//!
//! The host's hot-swap tests alternate `http.wasm` and this guest and tell the
//! generations apart by the body of a `GET` alone, so everything else must be
//! the example's: its HTTP (`http.rs`) and its connection handling and snapshot
//! (`handler.rs`) are included by path rather than copied. A snapshot of either
//! generation restores into the other.

// Public so that all of its API counts as used, as in the example.
#[path = "../../../examples/http/src/http.rs"]
pub mod http;

#[path = "../../../examples/http/src/handler.rs"]
mod handler;

/// The body of every `GET`: 9 bytes, so `Content-Length: 9`.
const BODY: &[u8] = b"hello v2\n";

sandsock_sdk::serve!(handler::Hello, handler::Hello::new(BODY));
