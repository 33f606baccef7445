//! `built_for_0_4`: the handler of the `built_for_0_N` guests (see
//! `../old_contracts/handler.rs`) built against today's contract (`wit/handler.wit`,
//! 0.4.0), which the host serves natively: the same code as the older builds, so that
//! the benchmark can set what the adapters cost against no adapter at all.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "stateful-handler",
});

include!("../../old_contracts/handler.rs");

export_state!(refusable);
