// What the `built_for_N` guests do with the bytes a connection sent, whatever
// contract brought them: answer HTTP (with `MODE=http`) or echo lines, then write
// what they can; and their `state`. Included after the version's bindings, which
// give `io` and `WriteResult` (the same in every contract); the version's `handle`
// comes after (`handler.rs` for 0.x, `built_for_1_0` for 1.0).

#[path = "../../examples/http/src/http.rs"]
#[allow(dead_code)]
mod http;

use std::cell::RefCell;
use std::collections::HashMap;

use sandsock::net::types::WriteResult;

/// What one connection has read and not answered, and has to write.
#[derive(Default)]
struct Conn {
    input: Vec<u8>,
    output: Vec<u8>,
    /// The peer finished, or an answer asked for the connection's end.
    closing: bool,
}

thread_local! {
    static CONNS: RefCell<HashMap<u64, Conn>> = RefCell::new(HashMap::new());
    static LINES: RefCell<u64> = const { RefCell::new(0) };
    static HTTP: bool = std::env::var("MODE").is_ok_and(|mode| mode == "http");
}

/// Answers what `c` has read, writes what it can, and closes it once it is done.
fn answer(conns: &mut HashMap<u64, Conn>, c: u64, http: bool) {
    let Some(conn) = conns.get_mut(&c) else {
        return;
    };
    if http {
        let answers = http::answer_all(&conn.input, &mut conn.output);
        conn.input.drain(..answers.consumed);
        conn.closing |= answers.close;
    } else {
        while let Some(end) = conn.input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = conn.input.drain(..=end).collect();
            let seen = LINES.with(|lines| {
                *lines.borrow_mut() += 1;
                *lines.borrow()
            });
            if line == b"COUNT\n" {
                conn.output.extend_from_slice(format!("{seen}\n").as_bytes());
            } else {
                conn.output.extend_from_slice(&line);
            }
        }
        if conn.closing {
            conn.output.append(&mut conn.input);
        }
    }
    while !conn.output.is_empty() {
        match io::write(c, &conn.output) {
            WriteResult::Accepted(n) => {
                conn.output.drain(..n as usize);
            }
            WriteResult::WouldBlock => break,
            WriteResult::Failed(_) => {
                conns.remove(&c);
                close(c);
                return;
            }
        }
    }
    if conn.output.is_empty() && conn.closing {
        conns.remove(&c);
        close(c);
    } else {
        io::set_interest(c, !conn.closing, !conn.output.is_empty());
    }
}

/// The guest; its `handle` is the contract version's own.
struct BuiltFor;

/// Closes `c`: from 0.1 to 0.3 `close` answers a result, from 0.4 nothing; `let _`
/// takes either.
#[allow(clippy::let_unit_value)]
fn close(c: u64) {
    let _ = io::close(c);
}

/// The lines seen, for `state.snapshot`.
fn snapshot() -> Vec<u8> {
    LINES.with(|lines| lines.borrow().to_le_bytes().to_vec())
}

/// Takes a snapshot's count over, or says why not.
fn restore(state: &[u8]) -> Result<(), String> {
    let count: [u8; 8] = state
        .try_into()
        .map_err(|_| format!("not a count: {} bytes", state.len()))?;
    LINES.with(|lines| *lines.borrow_mut() = u64::from_le_bytes(count));
    Ok(())
}

/// The `state` export in the words of the version's `restore`: `refusable` (0.2.0 on:
/// it answers a result) or `plain` (0.1.0: it answers nothing, and a snapshot it
/// cannot read leaves the count as it is).
macro_rules! export_state {
    (refusable) => {
        impl exports::sandsock::net::state::Guest for BuiltFor {
            fn snapshot() -> Vec<u8> {
                snapshot()
            }

            fn restore(state: Vec<u8>) -> Result<(), String> {
                restore(&state)
            }
        }
    };
    (plain) => {
        impl exports::sandsock::net::state::Guest for BuiltFor {
            fn snapshot() -> Vec<u8> {
                snapshot()
            }

            fn restore(state: Vec<u8>) {
                let _ = restore(&state);
            }
        }
    };
}

export!(BuiltFor);
