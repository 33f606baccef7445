//! `built_for_1_0`: the handler of the `built_for_0_N` guests (see
//! `../old_contracts/answer.rs`) on contract 1.0 as released (`wit/1.0.0/`), which the host serves natively:
//! the bytes come in the events (`data`, `eof`) instead of from `read`. The
//! benchmark sets the adapters against it, the same answers with no adapter and no
//! reads.

wit_bindgen::generate!({
    path: "../../../wit/1.0.0",
    world: "stateful-handler",
});

use sandsock::net::io;

include!("../../old_contracts/answer.rs");

/// The kinds of event this guest acts on (the WIT's numbers).
const ACCEPTED: u8 = 0;
const DATA: u8 = 2;
const EOF: u8 = 3;
const WRITABLE: u8 = 4;
const HANGUP: u8 = 5;
const ADOPTED: u8 = 7;

impl Guest for BuiltFor {
    fn handle(events: Vec<Event>, input: Vec<u8>) {
        let http = HTTP.with(|http| *http);
        CONNS.with(|conns| {
            let conns = &mut *conns.borrow_mut();
            for event in events {
                let c = event.conn;
                match event.kind {
                    ACCEPTED | ADOPTED => {
                        conns.insert(c, Conn::default());
                    }
                    DATA => {
                        if let Some(conn) = conns.get_mut(&c) {
                            let start = event.start as usize;
                            let bytes = &input[start..start + event.len as usize];
                            conn.input.extend_from_slice(bytes);
                            answer(conns, c, http);
                        }
                    }
                    EOF => {
                        if let Some(conn) = conns.get_mut(&c) {
                            conn.closing = true;
                            answer(conns, c, http);
                        }
                    }
                    WRITABLE => answer(conns, c, http),
                    HANGUP => {
                        conns.remove(&c);
                    }
                    _ => {}
                }
            }
        });
    }
}

export_state!(refusable);
