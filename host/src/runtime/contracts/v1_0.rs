//! Contract 1.x (1.0.0 and 1.1.0, today's), served natively: the loop's events
//! lowered into 1.x's flat records, each `Readable` connection read first, straight
//! into the call's `input` (one read per connection per call, so the guest makes no
//! `read` to learn what came and none to learn that nothing more did); and, since
//! 1.1, the store's answers and topic messages waiting for the instance, where the
//! loop's `Mail` event stands.

use super::super::imports::GuestState;
use crate::shared::limits::MAX_READ_CHUNK;
use crate::shared::wit::{self, IoError, kind};
use crate::sockets::events::{Event, Read};
use crate::store::{Delivery, Outcome, StoreError};

/// The input one call carries, about: when many connections have input at once, each
/// is read for at most an equal share of it (the rest is read for the next call:
/// they stay readable), so a turn with many busy connections hands a guest about this
/// much, and every connection gets some of every turn: none waits behind others.
pub const MAX_CALL_INPUT: usize = 256 * 1024;

/// The least one read asks for, however many connections share a call: a page,
/// room for a typical request whole. A call with more than `MAX_CALL_INPUT /
/// MIN_SHARE` readable connections carries more than `MAX_CALL_INPUT`.
pub const MIN_SHARE: usize = 4 * 1024;

/// One instance's batch in 1.0's types, kept between calls so that lowering one
/// allocates nothing once it has grown.
#[derive(Default)]
pub struct Lowered {
    /// This call's events.
    pub events: Vec<wit::Event>,
    /// `input[..used]` is this call's; the rest is room, zeroed once when it grew.
    /// The loop's own buffer, lent for the call ([`Lowered::lend`]): an instance
    /// holds none between calls.
    input: Vec<u8>,
    used: usize,
}

impl Lowered {
    /// Takes `input` (the loop's buffer) to lower the next call into. With an
    /// instance per connection, a buffer of each instance's own would be 64 KiB
    /// zeroed at its first read and held for as long as its connection.
    pub fn lend(&mut self, input: Vec<u8>) {
        self.input = input;
    }

    /// Gives the lent buffer back, after the call.
    pub fn give_back(&mut self) -> Vec<u8> {
        self.used = 0;
        std::mem::take(&mut self.input)
    }

    /// This call's input: every `data` event's bytes, back to back.
    pub fn input(&self) -> &[u8] {
        &self.input[..self.used]
    }

    /// Lowers `events`, reading each `Readable` connection through `state` into the
    /// input (see [`Lowered::read_ahead`]), each for at most its share of
    /// [`MAX_CALL_INPUT`].
    pub fn lower(&mut self, state: &mut GuestState, events: &[Event]) {
        self.events.clear();
        self.used = 0;
        let readable = events
            .iter()
            .filter(|event| matches!(event, Event::Readable(_) | Event::Accepted(_)))
            .count();
        let share = share(readable);
        for event in events {
            let lowered = match *event {
                Event::Readable(conn) => {
                    self.read_ahead(state, conn, share, false);
                    continue;
                }
                Event::Accepted(conn) => {
                    // What the client sent with its connect comes in the same call.
                    self.events.push(record(kind::ACCEPTED, conn));
                    self.read_ahead(state, conn, share, true);
                    continue;
                }
                Event::Connected(conn) => record(kind::CONNECTED, conn),
                Event::Writable(conn) => record(kind::WRITABLE, conn),
                Event::Hangup(info) => wit::Event {
                    code: position(info.error),
                    ..record(kind::HANGUP, info.conn)
                },
                Event::Timer(id) => wit::Event {
                    id,
                    ..record(kind::TIMER, 0)
                },
                Event::Adopted(conn) => record(kind::ADOPTED, conn),
                Event::Shutdown => record(kind::SHUTDOWN, 0),
                Event::Mail => {
                    self.mail(state);
                    continue;
                }
            };
            self.events.push(lowered);
        }
    }

    /// Lowers the answers and messages waiting for the instance, in the order they
    /// came, their bytes into the input: about [`MAX_CALL_INPUT`] of them per call.
    fn mail(&mut self, state: &mut GuestState) {
        state.collect_shadow_mail();
        let mut mail = std::mem::take(&mut state.store.mail);
        // About `MAX_CALL_INPUT` per call, as for reads: at least one delivery; what
        // is left waits, in order, for the next call (the handler asks for one).
        let mut deliveries = mail.drain(..);
        for delivery in deliveries.by_ref() {
            self.delivery(delivery);
            if self.used >= MAX_CALL_INPUT {
                break;
            }
        }
        let left: Vec<Delivery> = deliveries.collect();
        // Its memory goes back, for the next answers, with what is left in it.
        mail.extend(left);
        state.store.mail = mail;
    }

    /// One answer or message, as its event.
    fn delivery(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Done { op, outcome, .. } => self.outcome(op, outcome),
            Delivery::Message {
                subscription,
                bytes,
                ..
            } => {
                let message = wit::Event {
                    id: subscription,
                    ..record(kind::MESSAGE, 0)
                };
                self.push_with_bytes(message, &bytes);
            }
            Delivery::Lost {
                subscription,
                count,
                ..
            } => self.events.push(wit::Event {
                id: subscription,
                value: count,
                ..record(kind::LOST, 0)
            }),
        }
    }

    /// One operation's answer, as the WIT's `store` kind says (`get-many`: one
    /// event per key).
    fn outcome(&mut self, op: u64, outcome: Outcome) {
        let answer = |code: u32, value: u64| wit::Event {
            id: op,
            code,
            value,
            ..record(kind::STORE, 0)
        };
        match outcome {
            Outcome::Value(bytes) => self.push_with_bytes(answer(OK, 0), &bytes),
            Outcome::NotFound | Outcome::Exists(false) => self.events.push(answer(NOT_FOUND, 0)),
            Outcome::Done | Outcome::Exists(true) | Outcome::Swapped(true) => {
                self.events.push(answer(OK, 0));
            }
            Outcome::Swapped(false) => self.events.push(answer(CONFLICT, 0)),
            Outcome::Counter(n) => {
                let decimal = n.to_string();
                self.push_with_bytes(answer(OK, n as u64), decimal.as_bytes());
            }
            Outcome::Keys(keys, more) => {
                let mut page = Vec::with_capacity(keys.iter().map(|k| 4 + k.len()).sum());
                for key in &keys {
                    page.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    page.extend_from_slice(key.as_bytes());
                }
                self.push_with_bytes(answer(OK, u64::from(more)), &page);
            }
            Outcome::Values(values) => {
                for (i, value) in values.into_iter().enumerate() {
                    match value {
                        Some(bytes) => self.push_with_bytes(answer(OK, i as u64), &bytes),
                        None => self.events.push(answer(NOT_FOUND, i as u64)),
                    }
                }
            }
            Outcome::Failed(error) => self.events.push(answer(error_code(error), 0)),
        }
    }

    /// `event`, with `bytes` appended to the input as its `start` and `len`.
    fn push_with_bytes(&mut self, event: wit::Event, bytes: &[u8]) {
        let start = self.used;
        let end = start + bytes.len();
        if self.input.len() < end {
            self.input.resize(end, 0);
        }
        self.input[start..end].copy_from_slice(bytes);
        self.used = end;
        self.events.push(wit::Event {
            start: start as u32,
            len: bytes.len() as u32,
            ..event
        });
    }

    /// One read of up to `max` bytes (at most 64 KiB) of the readable connection
    /// `conn`, as the guest will hear it: bytes become a `data` event, the end of
    /// the stream an `eof`; a read that finds nothing, or fails (a `hangup`
    /// follows), adds no event. A read that fills `max` leaves the connection
    /// readable: the rest is read for the next call. `fresh`: `conn` was just
    /// accepted and has had no edge yet (see `Net::read_fresh`). Answers what the
    /// read found.
    pub fn read_ahead(
        &mut self,
        state: &mut GuestState,
        conn: u64,
        max: usize,
        fresh: bool,
    ) -> Read {
        let end = self.used + max.min(MAX_READ_CHUNK);
        if self.input.len() < end {
            self.input.resize(end, 0);
        }
        let buf = &mut self.input[self.used..end];
        let read = if fresh {
            state.read_fresh(conn, buf)
        } else {
            state.read_into(conn, buf)
        };
        match read {
            Read::Data(0) | Read::WouldBlock | Read::Failed(_) => {}
            Read::Data(n) => {
                self.events.push(wit::Event {
                    start: self.used as u32,
                    len: n as u32,
                    ..record(kind::DATA, conn)
                });
                self.used += n;
            }
            Read::Eof => self.events.push(record(kind::EOF, conn)),
        }
        read
    }
}

/// What each of `readable` connections may be read for in one call: an equal share
/// of [`MAX_CALL_INPUT`], between [`MIN_SHARE`] and a whole chunk.
fn share(readable: usize) -> usize {
    (MAX_CALL_INPUT / readable.max(1)).clamp(MIN_SHARE, MAX_READ_CHUNK)
}

/// An event of `kind` about `conn`, every other field 0.
fn record(kind: u8, conn: u64) -> wit::Event {
    wit::Event {
        kind,
        code: 0,
        conn,
        id: 0,
        value: 0,
        start: 0,
        len: 0,
    }
}

/// The `store` outcomes' positions in the WIT's `outcome`: its three answers, then
/// the errors in [`StoreError::ALL`] order.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CONFLICT: u32 = 2;

/// An error's position in the WIT's `outcome`.
pub fn error_code(error: StoreError) -> u32 {
    3 + error.index() as u32
}

/// An `io-error`'s position in the WIT's list, as a `hangup` carries it.
pub fn position(error: IoError) -> u32 {
    match error {
        IoError::Closed => 0,
        IoError::Reset => 1,
        IoError::UnknownConn => 2,
        IoError::NotPermitted => 3,
        IoError::LimitExceeded => 4,
        IoError::Refused => 5,
        IoError::Unreachable => 6,
        IoError::InvalidAddress => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_readable_connection_gets_a_share_of_the_call() {
        assert_eq!(share(0), MAX_READ_CHUNK);
        assert_eq!(share(1), MAX_READ_CHUNK);
        assert_eq!(share(4), MAX_READ_CHUNK);
        assert_eq!(share(8), 32 * 1024);
        assert_eq!(share(64), MIN_SHARE);
        assert_eq!(share(10_000), MIN_SHARE, "never less than a page");
        for readable in 1..=64 {
            assert!(share(readable) * readable <= MAX_CALL_INPUT);
        }
    }

    #[test]
    fn store_outcomes_are_their_positions_in_the_wit() {
        use crate::runtime::store_imports::outcome_of;
        use crate::shared::wit::StoreOutcome;
        assert_eq!(StoreOutcome::Ok as u32, OK);
        assert_eq!(StoreOutcome::NotFound as u32, NOT_FOUND);
        assert_eq!(StoreOutcome::Conflict as u32, CONFLICT);
        for error in StoreError::ALL {
            assert_eq!(outcome_of(error) as u32, error_code(error), "{error:?}");
        }
    }

    #[test]
    fn hangup_errors_are_their_positions_in_the_wit() {
        let order = [
            IoError::Closed,
            IoError::Reset,
            IoError::UnknownConn,
            IoError::NotPermitted,
            IoError::LimitExceeded,
            IoError::Refused,
            IoError::Unreachable,
            IoError::InvalidAddress,
        ];
        for (i, error) in order.into_iter().enumerate() {
            assert_eq!(position(error), i as u32, "{error:?}");
        }
    }
}
