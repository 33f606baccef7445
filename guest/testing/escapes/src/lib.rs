//! `escapes`: echoes until a chunk contains `TRIGGER`, then tries to reach
//! outside its sandbox with ordinary `std` calls and reports what it got.
//!
//! It exists to prove the host's sandbox defaults: no preopened directories, no
//! sockets, no name lookup, and no environment or arguments beyond what the host
//! was told to pass (`--env`). The reply is one line per attempt, then `done`:
//!
//! ```text
//! read: denied (<error>)       std::fs::read("/etc/passwd")
//! write: denied (<error>)      std::fs::write("/tmp/sandsock-escape-probe", ..)
//! list: denied (<error>)       std::fs::read_dir("/")
//! connect: denied (<error>)    std::net::TcpStream::connect("127.0.0.1:80")
//! resolve: denied (<error>)    ("localhost", 80).to_socket_addrs()
//! env: denied (empty)          the names in std::env::vars()
//! args: denied (empty)         std::env::args()
//! cwd: denied (<error>)        std::env::current_dir()
//! done
//! ```
//!
//! An attempt that succeeds with something reads `NAME: ALLOWED (<what>)`, or
//! `NAME: ALLOWED [a, b]` when what it got is a list (`env` lists variable names
//! only, never values); one that succeeds with nothing (an empty list) reads
//! `NAME: denied (empty)`. A probe file that does get written is left in place,
//! as evidence.

use std::fmt::Write as _;
use std::net::{TcpStream, ToSocketAddrs};

use sandsock_sdk::{Conn, Handler, Io};

/// The file the `write` attempt creates, if it can.
const PROBE_FILE: &str = "/tmp/sandsock-escape-probe";

#[derive(Default)]
struct Escapes;

impl Handler for Escapes {
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        if triggered(data) {
            io.write(conn, attempt_everything().as_bytes());
        } else {
            io.write(conn, data);
        }
    }
}

/// What one attempt got: a description of what it reached, or why it did not.
type Outcome = Result<String, String>;

fn attempt_everything() -> String {
    let attempts: [(&str, Outcome); 8] = [
        (
            "read",
            std::fs::read("/etc/passwd")
                .map(|bytes| format!("({} bytes of /etc/passwd)", bytes.len()))
                .map_err(|error| error.to_string()),
        ),
        (
            "write",
            std::fs::write(PROBE_FILE, b"sandsock escape probe\n")
                .map(|()| format!("(wrote {PROBE_FILE})"))
                .map_err(|error| error.to_string()),
        ),
        ("list", list_root()),
        (
            "connect",
            TcpStream::connect("127.0.0.1:80")
                .map(|stream| match stream.peer_addr() {
                    Ok(peer) => format!("(connected to {peer})"),
                    Err(_) => "(connected to 127.0.0.1:80)".to_owned(),
                })
                .map_err(|error| error.to_string()),
        ),
        (
            "resolve",
            ("localhost", 80)
                .to_socket_addrs()
                .map_err(|error| error.to_string())
                .and_then(|addrs| list(addrs.map(|addr| addr.to_string()))),
        ),
        (
            "env",
            list(std::env::vars_os().map(|(name, _)| lossy(&name))),
        ),
        ("args", list(std::env::args_os().map(|arg| lossy(&arg)))),
        (
            "cwd",
            std::env::current_dir()
                .map(|dir| format!("({})", dir.display()))
                .map_err(|error| error.to_string()),
        ),
    ];
    let mut report = String::new();
    for (name, outcome) in attempts {
        // Writing to a `String` cannot fail.
        let _ = match outcome {
            Ok(got) => writeln!(report, "{name}: ALLOWED {got}"),
            Err(why) => writeln!(report, "{name}: denied ({why})"),
        };
    }
    report.push_str("done\n");
    report
}

/// The names in `/`, if the guest can see any.
fn list_root() -> Outcome {
    let entries = std::fs::read_dir("/").map_err(|error| error.to_string())?;
    let names: Result<Vec<String>, _> = entries
        .map(|entry| entry.map(|entry| lossy(&entry.file_name())))
        .collect();
    list(names.map_err(|error| error.to_string())?)
}

/// `[a, b]`, or `empty` (a denial) for no items.
fn list(items: impl IntoIterator<Item = String>) -> Outcome {
    let items: Vec<String> = items.into_iter().collect();
    if items.is_empty() {
        Err("empty".to_owned())
    } else {
        Ok(format!("[{}]", items.join(", ")))
    }
}

fn lossy(text: &std::ffi::OsStr) -> String {
    text.to_string_lossy().into_owned()
}

/// Whether a chunk holds the word `TRIGGER` (a short write arrives in one chunk).
fn triggered(data: &[u8]) -> bool {
    data.windows(7).any(|window| window == b"TRIGGER")
}

sandsock_sdk::serve!(Escapes);
