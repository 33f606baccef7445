//! `built_for_0_4`: a raw handler built against `sandsock:net@0.4.0` as released (its
//! WIT is the repository's `wit/0.4.0/`), which today's host serves through its
//! adapter for that version: it echoes (counting lines, a count its `state` keeps), or
//! with `MODE=http` answers HTTP as the `http` example does (see
//! `../old_contracts/handler.rs`). The benchmark sets it against the same handler on
//! 1.0 to show what the adapter costs.

wit_bindgen::generate!({
    path: "../../../wit/0.4.0",
    world: "stateful-handler",
});

include!("../../old_contracts/handler.rs");

export_state!(refusable);
