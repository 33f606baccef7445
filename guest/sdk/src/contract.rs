//! The io contract, `wit/io-cases.json`, run against the fake host: the SDK's
//! tests are only worth what the fake they run against is, so the fake must
//! answer as every real host does. The table's `about` text defines its format.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::host::fake::FakeHost;
use crate::host::fake::ReadResult;
use crate::raw::types::{IoError, WriteResult};

/// In a `host new` project the SDK is vendored at NAME/vendor/sandsock-sdk and the
/// wit at NAME/wit: this path holds there too.
const TABLE: &str = include_str!("../../../wit/io-cases.json");

/// This implementation's name in the table's `capabilities` and `except`.
const NAME: &str = "rust-fake";

/// The handles the table calls `never` and `other`: the fake has no other
/// instances, so both are handles it never hands out.
const NEVER: u64 = u64::MAX;
const OTHER: u64 = u64::MAX - 1;

/// What `$listening` and `$closed` stand for: the fake connects to any `ip:port`.
const SOMEWHERE: &str = "127.0.0.1:9";

/// A case that went wrong, at its first step that did.
#[derive(Debug)]
struct Failure {
    case: String,
    step: usize,
    expected: String,
    got: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}, step {}: expected {}, got {}",
            self.case, self.step, self.expected, self.got
        )
    }
}

/// A step's answer differed from the table's: (expected, got).
type Mismatch = (String, String);

#[derive(Debug, Default)]
struct Report {
    ran: usize,
    skipped: Vec<String>,
    failures: Vec<Failure>,
}

/// Runs every case the fake can be asked, each against a fresh host from `new_host`.
fn run(new_host: impl Fn() -> FakeHost) -> Report {
    let table: Value = serde_json::from_str(TABLE).expect("io-cases.json is JSON");
    let can = &table["capabilities"][NAME];
    assert!(can.is_object(), "the table lists {NAME}'s capabilities");
    let cases = table["cases"].as_array().expect("the table has cases");
    let mut report = Report::default();
    for case in cases {
        let name = case["name"].as_str().expect("every case has a name");
        if skips(case, can) {
            report.skipped.push(name.to_owned());
            continue;
        }
        report.ran += 1;
        if let Err((step, (expected, got))) = run_case(case, new_host()) {
            report.failures.push(Failure {
                case: name.to_owned(),
                step,
                expected,
                got,
            });
        }
    }
    report
}

/// Whether the case asks what this implementation cannot do, or names it in `except`.
fn skips(case: &Value, can: &Value) -> bool {
    let steps = steps(case);
    let lacks = |what: &str| can[what] != true;
    let connects = |step: &Value| step["call"] == "connect" && step["expect"] == "ok";
    let mut rooms = case["conns"].as_object().into_iter().flatten();
    case["except"].get(NAME).is_some()
        || (lacks("events") && steps.iter().any(|step| step.get("turn").is_some()))
        || (lacks("room") && rooms.any(|(_, conn)| conn.get("room").is_some()))
        || (lacks("connect") && steps.iter().any(connects))
}

fn steps(case: &Value) -> &[Value] {
    case["steps"].as_array().expect("every case has steps")
}

/// Runs a case's steps in order; stops at the first that fails, with its index.
fn run_case(case: &Value, mut host: FakeHost) -> Result<(), (usize, Mismatch)> {
    if let Some(max) = case.get("max_timers") {
        host.max_timers = max.as_u64().expect("max_timers is a number") as usize;
    }
    host.allow_connect = case["allow_connect"] == true;
    let mut world = World {
        host,
        handles: HashMap::from([("never".to_owned(), NEVER), ("other".to_owned(), OTHER)]),
        rooms: HashMap::new(),
    };
    let conns = case["conns"].as_object().into_iter().flatten();
    for (handle, (name, conn)) in (1..).zip(conns) {
        let room = conn.get("room").map_or(usize::MAX, |room| {
            room.as_u64().expect("room is a number") as usize
        });
        world.host.add_conn(handle, room);
        world.rooms.insert(handle, room);
        world.handles.insert(name.clone(), handle);
    }
    for (index, step) in steps(case).iter().enumerate() {
        world.step(step).map_err(|mismatch| (index, mismatch))?;
    }
    Ok(())
}

/// The fake host of one case, and what the case's names stand for.
struct World {
    host: FakeHost,
    handles: HashMap<String, u64>,
    /// Each connection's room as handed out, which a `drain` gives back.
    rooms: HashMap<u64, usize>,
}

impl World {
    fn step(&mut self, step: &Value) -> Result<(), Mismatch> {
        if let Some(peer) = step.get("peer") {
            return self.peer_step(peer, step);
        }
        if let Some(call) = step.get("call").and_then(Value::as_str) {
            let got = self.call(call, step)?;
            return same(&step["expect"], got);
        }
        Err(("a step this runner knows".to_owned(), step.to_string()))
    }

    /// The other end of a connection: scripts what the fake reads, or checks what
    /// it was written.
    fn peer_step(&mut self, name: &Value, step: &Value) -> Result<(), Mismatch> {
        let handle = self.handle(name)?;
        let room = self.rooms.get(&handle).copied().unwrap_or(usize::MAX);
        let Some(conn) = self.host.conns.get_mut(&handle) else {
            return Err((format!("a connection {name}"), "none".to_owned()));
        };
        if let Some(bytes) = bytes(step, "send") {
            // Unread bytes join, as in a socket's buffer.
            match conn.reads.back_mut() {
                Some(ReadResult::Data(unread)) => unread.extend(bytes),
                _ => conn.reads.push_back(ReadResult::Data(bytes)),
            }
        } else if step["shutdown"] == true {
            conn.reads.push_back(ReadResult::Eof);
        } else if step["reset"] == true {
            conn.reads.push_back(ReadResult::Failed(IoError::Reset));
            conn.write_error = Some(IoError::Reset);
        } else if step["drain"] == true {
            conn.room = room;
        } else if let Some(received) = step.get("received") {
            let expected = json!({ "received": received, "eof": step["eof"] });
            let got = json!({
                "received": String::from_utf8_lossy(&conn.written),
                "eof": conn.shut_down || conn.closed,
            });
            return same(&expected, got);
        } else {
            return Err(("a peer step this runner knows".to_owned(), step.to_string()));
        }
        Ok(())
    }

    /// Makes a guest call; answers its result in the table's notation.
    fn call(&mut self, call: &str, step: &Value) -> Result<Value, Mismatch> {
        let got = match call {
            "read" => {
                let max = number(step, "max")? as u32;
                match self.host.read(self.handle(&step["conn"])?, max) {
                    ReadResult::Data(data) if step["expect"].get("data_len").is_some() => {
                        json!({ "data_len": data.len() })
                    }
                    ReadResult::Data(data) => json!({ "data": String::from_utf8_lossy(&data) }),
                    ReadResult::WouldBlock => json!("would-block"),
                    ReadResult::Eof => json!("eof"),
                    ReadResult::Failed(error) => json!({ "failed": name(error) }),
                }
            }
            "write" => {
                let data = bytes(step, "data").ok_or_else(|| missing("data or data_len"))?;
                match self.host.write(self.handle(&step["conn"])?, &data) {
                    WriteResult::Accepted(n) => json!({ "accepted": n }),
                    WriteResult::WouldBlock => json!("would-block"),
                    WriteResult::Failed(error) => json!({ "failed": name(error) }),
                }
            }
            "set-interest" => {
                let conn = self.handle(&step["conn"])?;
                let readable = step["readable"] == true;
                let writable = step["writable"] == true;
                self.host.set_interest(conn, readable, writable);
                Value::Null
            }
            "shutdown-write" => {
                self.host.shutdown_write(self.handle(&step["conn"])?);
                Value::Null
            }
            "close" => {
                self.host.close(self.handle(&step["conn"])?);
                Value::Null
            }
            "peer" => match self.host.peer(self.handle(&step["conn"])?) {
                Some(addr) if addr.parse::<SocketAddr>().is_ok() => json!("ip:port"),
                Some(other) => json!(other),
                None => Value::Null,
            },
            "tls" => match self.host.tls(self.handle(&step["conn"])?) {
                Some(info) => json!(format!("{info:?}")),
                None => Value::Null,
            },
            "set-timer" => {
                let after_ms = number(step, "after_ms")?;
                let after_ms = u32::try_from(after_ms).map_err(|_| missing("a u32 after_ms"))?;
                match self.host.set_timer(number(step, "id")?, after_ms) {
                    Ok(()) => json!("ok"),
                    Err(error) => json!({ "err": name(error) }),
                }
            }
            "cancel-timer" => {
                self.host.cancel_timer(number(step, "id")?);
                Value::Null
            }
            "connect" => {
                let addr = step["addr"].as_str().ok_or_else(|| missing("addr"))?;
                let addr = match addr {
                    "$listening" | "$closed" => SOMEWHERE,
                    addr => addr,
                };
                let bound = step["as"].as_str().ok_or_else(|| missing("as"))?;
                match self.host.connect(addr) {
                    Ok(conn) => {
                        self.handles.insert(bound.to_owned(), conn);
                        json!("ok")
                    }
                    Err(error) => json!({ "err": name(error) }),
                }
            }
            other => {
                return Err((
                    "a call this runner knows".to_owned(),
                    json!(other).to_string(),
                ));
            }
        };
        Ok(got)
    }

    /// The handle a name in the table stands for.
    fn handle(&self, name: &Value) -> Result<u64, Mismatch> {
        name.as_str()
            .and_then(|name| self.handles.get(name))
            .copied()
            .ok_or_else(|| (format!("a handle named {name}"), "none".to_owned()))
    }
}

fn same(expected: &Value, got: Value) -> Result<(), Mismatch> {
    if *expected == got {
        Ok(())
    } else {
        Err((expected.to_string(), got.to_string()))
    }
}

/// A step's bytes: `KEY` as text, or `KEY_len` bytes of 'x'.
fn bytes(step: &Value, key: &str) -> Option<Vec<u8>> {
    if let Some(text) = step[key].as_str() {
        return Some(text.as_bytes().to_vec());
    }
    let len = step[format!("{key}_len")].as_u64()?;
    Some(vec![b'x'; len as usize])
}

fn number(step: &Value, key: &str) -> Result<u64, Mismatch> {
    step[key].as_u64().ok_or_else(|| missing(key))
}

fn missing(what: &str) -> Mismatch {
    (format!("a step with {what}"), "none".to_owned())
}

/// An `io-error` as the wit spells it.
fn name(error: IoError) -> &'static str {
    match error {
        IoError::Closed => "closed",
        IoError::Reset => "reset",
        IoError::UnknownConn => "unknown-conn",
        IoError::NotPermitted => "not-permitted",
        IoError::LimitExceeded => "limit-exceeded",
        IoError::Refused => "refused",
        IoError::Unreachable => "unreachable",
        IoError::InvalidAddress => "invalid-address",
    }
}

#[test]
fn the_fake_host_keeps_the_io_contract() {
    let report = run(FakeHost::default);
    println!(
        "{} cases run, {} skipped: {:#?}",
        report.ran,
        report.skipped.len(),
        report.skipped
    );
    let failures: Vec<String> = report.failures.iter().map(Failure::to_string).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        report.ran,
        failures.join("\n")
    );
    assert!(report.ran >= 15, "only {} cases run", report.ran);
}

/// A runner that cannot fail proves nothing: with eof answered once, exactly
/// the case that reads it twice must fail.
#[test]
fn a_fake_host_that_breaks_the_contract_fails_it() {
    let report = run(|| FakeHost {
        eof_once: true,
        ..FakeHost::default()
    });
    let failed: Vec<&str> = report.failures.iter().map(|f| f.case.as_str()).collect();
    assert_eq!(
        failed,
        ["eof comes after every byte, and again after that"],
        "{:#?}",
        report.failures
    );
    assert_eq!(report.failures[0].step, 4);
    assert_eq!(report.failures[0].got, "\"would-block\"");
}
