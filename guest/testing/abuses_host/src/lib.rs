//! `abuses_host`: echoes until a chunk contains `TRIGGER`, then calls the raw
//! host interface with bad arguments and reports every answer.
//!
//! It exists to prove that no argument a guest can pass makes the host panic,
//! hang or misbehave: each call gets an answer the WIT allows. The reply to the
//! trigger is one line per call, `CALL=ANSWER`, then `done`:
//!
//! ```text
//! write(0)=failed(unknown-conn)
//! write(u64::MAX)=failed(unknown-conn)
//! write(self, 8MiB)=accepted(N)                  (or would-block)
//! write(unknown)=failed(unknown-conn)
//! tls(unknown)=none
//! shutdown-write(unknown)=returned              (ignored since contract 0.4.0)
//! close(unknown)=returned
//! set-interest(unknown)=returned
//! peer(unknown)=none
//! peer(self)=some(ADDR)                          (the client's address)
//! set-timer(u32::MAX)=failed(limit-exceeded)     (more than a day)
//! cancel-timer(unknown)=returned
//! connect(not an address)=failed(ERROR)
//! connect(127.0.0.1:1)=failed(not-permitted)     (ok without --allow-connect)
//! done
//! ```
//!
//! (the answers shown are the expected ones; the guest writes whatever it got).
//! `unknown` is the handle `1<<52`, which the host never hands out in a test.
//! The 8 MiB written to its own connection are newlines, so they reach the client
//! before the report as empty lines, which a line reader skips.
//!
//! Once that report has been handed to the host, a second scenario runs on the
//! triggering connection itself: the guest `close`s it twice and `write`s to it
//! after the close. Those answers cannot go back on a closed connection, so the
//! guest keeps them and sends them to the next connection that sends `REPORT`:
//!
//! ```text
//! close(self)=returned
//! close(again)=returned
//! write(after close)=failed(unknown-conn)
//! done
//! ```
//!
//! (`no close report yet` then `done` if no trigger has run the scenario.)

use std::collections::HashSet;
use std::fmt::Write as _;

use sandsock_sdk::raw::io;
use sandsock_sdk::raw::types::{IoError, WriteResult};
use sandsock_sdk::{Conn, Handler, Io};

/// A handle below 2^53 that the host never hands out in a test.
const UNKNOWN: u64 = 1 << 52;

/// How much the oversized write offers.
const BIG_WRITE: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct AbusesHost {
    /// Triggered connections whose report is still queued in the SDK: the close
    /// scenario runs on each once its queue is sent (`on_writable`).
    awaiting_close: HashSet<Conn>,
    /// The answers of the last close scenario, for the next `REPORT`.
    close_report: Option<String>,
}

impl Handler for AbusesHost {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if contains(data, b"REPORT") {
            let report = self
                .close_report
                .as_deref()
                .unwrap_or("no close report yet\n");
            io.write(conn, report.as_bytes());
            io.write(conn, b"done\n");
        } else if contains(data, b"TRIGGER") {
            io.write(conn, bad_calls(conn).as_bytes());
            if io.queued(conn) == 0 {
                self.close_twice(io, conn);
            } else {
                self.awaiting_close.insert(conn);
            }
        } else {
            io.write(conn, data);
        }
    }

    fn on_writable(&mut self, io: &mut Io, conn: Conn) {
        if self.awaiting_close.remove(&conn) {
            self.close_twice(io, conn);
        }
    }

    fn on_close(&mut self, _io: &mut Io, conn: Conn) {
        self.awaiting_close.remove(&conn);
    }
}

impl AbusesHost {
    /// Closes `conn` behind the SDK's back, twice, then writes to it.
    fn close_twice(&mut self, io: &mut Io, conn: Conn) {
        let mut report = Report::default();
        io::close(conn.raw());
        report.line("close(self)", "returned".to_owned());
        io::close(conn.raw());
        report.line("close(again)", "returned".to_owned());
        report.line(
            "write(after close)",
            written(&io::write(conn.raw(), b"after")),
        );
        self.close_report = Some(report.0);
        // Let the SDK forget the connection (its own `close` answer is ignored).
        io.abort(conn);
    }
}

/// Every bad call of the trigger, with its answer, in order.
fn bad_calls(conn: Conn) -> String {
    let own = conn.raw();
    let mut report = Report::default();
    report.line("write(0)", written(&io::write(0, b"x")));
    report.line("write(u64::MAX)", written(&io::write(u64::MAX, b"x")));
    report.line(
        "write(self, 8MiB)",
        written(&io::write(own, &vec![b'\n'; BIG_WRITE])),
    );
    report.line("write(unknown)", written(&io::write(UNKNOWN, b"x")));
    report.line(
        "tls(unknown)",
        io::tls(UNKNOWN).map_or_else(|| "none".to_owned(), |tls| format!("some({})", tls.version)),
    );
    io::shutdown_write(UNKNOWN);
    report.line("shutdown-write(unknown)", "returned".to_owned());
    io::close(UNKNOWN);
    report.line("close(unknown)", "returned".to_owned());
    io::set_interest(UNKNOWN, true, true);
    report.line("set-interest(unknown)", "returned".to_owned());
    report.line(
        "peer(unknown)",
        io::peer(UNKNOWN).map_or_else(|| "none".to_owned(), |peer| format!("some({peer})")),
    );
    report.line(
        "peer(self)",
        io::peer(own).map_or_else(|| "none".to_owned(), |peer| format!("some({peer})")),
    );
    report.line("set-timer(u32::MAX)", unit(io::set_timer(1, u32::MAX)));
    io::cancel_timer(u64::MAX - 1);
    report.line("cancel-timer(unknown)", "returned".to_owned());
    for addr in ["not an address", "127.0.0.1:1"] {
        report.line(&format!("connect({addr})"), connected(io::connect(addr)));
    }
    report.0.push_str("done\n");
    report.0
}

/// The reply being built: one `CALL=ANSWER` line per call.
#[derive(Default)]
struct Report(String);

impl Report {
    fn line(&mut self, call: &str, answer: String) {
        // Writing to a `String` cannot fail.
        let _ = writeln!(self.0, "{call}={answer}");
    }
}

fn written(answer: &WriteResult) -> String {
    match answer {
        WriteResult::Accepted(n) => format!("accepted({n})"),
        WriteResult::WouldBlock => "would-block".to_owned(),
        WriteResult::Failed(error) => failed(*error),
    }
}

fn unit(answer: Result<(), IoError>) -> String {
    answer.map_or_else(failed, |()| "ok".to_owned())
}

/// A `connect` that succeeds is reported `ok` and closed again at once: the
/// handle differs from run to run, and the connection is of no use here.
fn connected(answer: Result<u64, IoError>) -> String {
    match answer {
        Ok(conn) => {
            io::close(conn);
            "ok".to_owned()
        }
        Err(error) => failed(error),
    }
}

fn failed(error: IoError) -> String {
    format!("failed({})", error.name())
}

/// Whether a chunk holds `word` (a short write arrives in one chunk).
fn contains(data: &[u8], word: &[u8]) -> bool {
    data.windows(word.len()).any(|window| window == word)
}

sandsock_sdk::serve!(AbusesHost);
