//! `built_for_0_1`: a raw handler built against `sandsock:net@0.1.0` as released (its
//! WIT is the repository's `wit/0.1.0/`), which today's host serves through its
//! adapter for that version: it echoes (counting lines, a count its `state` keeps), or
//! with `MODE=http` answers HTTP as the `http` example does (see
//! `../old_contracts/handler.rs`).

wit_bindgen::generate!({
    path: "../../../wit/0.1.0",
    world: "stateful-handler",
});

include!("../../old_contracts/handler.rs");

export_state!(plain);
