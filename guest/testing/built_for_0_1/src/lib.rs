//! `built_for_0_1`: a handler built against `sandsock:net@0.1.0`, the contract as it
//! was before 0.2.0 (`wit/handler.wit` here is that version, verbatim).
//!
//! A host speaking a later version must refuse it at `host check` and at load, with
//! one line that names both versions, rather than wasmtime's "expected variant of N
//! cases".
//! It echoes, raw, should a host ever take it.

wit_bindgen::generate!({
    path: "wit",
    world: "handler",
});

use sandsock::net::io;
use sandsock::net::types::ReadResult;

struct BuiltFor01;

impl Guest for BuiltFor01 {
    fn handle(events: Vec<Event>) {
        for event in events {
            if let Event::Readable(conn) = event
                && let ReadResult::Data(bytes) = io::read(conn, 65536)
            {
                let _ = io::write(conn, &bytes);
            }
        }
    }
}

export!(BuiltFor01);
