// The handler of the `built_for_0_N` guests, included by each after its bindings
// (`wit_bindgen::generate!` on that version's WIT, kept in the repository's
// `wit/0.N.0/`): it uses only what every 0.x contract has (`read`, `write`,
// `set-interest`, `close`), and `close` takes `close`'s answer whether the version
// has one or not.
//
// With `MODE=http` in its environment (`--env MODE=http`) it answers HTTP with the
// very code of the `http` example (`examples/http/src/http.rs`), byte for byte what a
// guest built for today's contract answers, so that a canary between them agrees;
// otherwise it echoes, and answers a line `COUNT` with the number of lines it has
// seen, a number its `state` keeps across a handoff (each crate's `lib.rs` exports
// `state` in its version's words with `export_state!`). Raw calls, no
// SDK: the SDK speaks today's contract only. What it does with the bytes it read is
// `answer.rs`, which `built_for_1_0` shares.

use sandsock::net::io;
use sandsock::net::types::ReadResult;

include!("answer.rs");

impl Guest for BuiltFor {
    fn handle(events: Vec<Event>) {
        let http = HTTP.with(|http| *http);
        CONNS.with(|conns| {
            let conns = &mut *conns.borrow_mut();
            for event in events {
                match event {
                    Event::Accepted(c) | Event::Adopted(c) => {
                        conns.insert(c, Conn::default());
                        // An adopted connection may have input the host held for it.
                        serve(conns, c, http);
                    }
                    Event::Readable(c) | Event::Writable(c) => serve(conns, c, http),
                    Event::Hangup(info) => {
                        conns.remove(&info.conn);
                    }
                    _ => {}
                }
            }
        });
    }
}

/// Reads what there is, answers it, and writes what it can.
fn serve(conns: &mut HashMap<u64, Conn>, c: u64, http: bool) {
    let Some(conn) = conns.get_mut(&c) else {
        return;
    };
    while !conn.closing {
        match io::read(c, 65536) {
            ReadResult::Data(bytes) => conn.input.extend_from_slice(&bytes),
            ReadResult::WouldBlock => break,
            ReadResult::Eof => conn.closing = true,
            ReadResult::Failed(_) => {
                conns.remove(&c);
                close(c);
                return;
            }
        }
    }
    answer(conns, c, http);
}
