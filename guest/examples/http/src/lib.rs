//! `http`: an HTTP/1.1 server that answers every `GET` with `hello\n`.
//!
//! The HTTP itself is in `http.rs`, which does no I/O (the host's native baseline
//! benchmark includes that same file); `handler.rs` connects it to the
//! connections, and keeps unfinished requests across a hot swap. The test guest
//! `testing/http_v2` includes both files and serves another body.

// Public so that all of its API counts as used: the host's baseline calls
// `answer_all`, this guest the `_with` functions.
pub mod http;

mod handler;

sandsock_sdk::serve!(handler::Hello, handler::Hello::new(http::HELLO));
