//! What the adapters of the older contracts share, as macros (each version's types
//! are its own, generated from its WIT): the conversion of today's events and answers
//! into a version's types, and the version's `io`, each call going to today's.
//!
//! A module that uses them has `today` (`crate::shared::wit`), `Today` (today's `io`
//! trait) and the version's `types` and `io` (its bindings) in scope, and an
//! `error(today::IoError) -> IoError` of its own or from `older_errors!`. The loop's
//! events and the `read` every 0.x has are the host's own (`crate::sockets::events`):
//! today's contract has no `read`, and hands the guest its bytes instead.

/// `error`, for a version whose `io-error` has today's cases (0.2.0 on).
macro_rules! older_errors {
    () => {
        /// Today's error in this version's type: the same case.
        fn error(error: today::IoError) -> types::IoError {
            use types::IoError;
            match error {
                today::IoError::Closed => IoError::Closed,
                today::IoError::Reset => IoError::Reset,
                today::IoError::UnknownConn => IoError::UnknownConn,
                today::IoError::NotPermitted => IoError::NotPermitted,
                today::IoError::LimitExceeded => IoError::LimitExceeded,
                today::IoError::Refused => IoError::Refused,
                today::IoError::Unreachable => IoError::Unreachable,
                today::IoError::InvalidAddress => IoError::InvalidAddress,
            }
        }
    };
}

/// `event`, `read_result` and `write_result`: the loop's events, a read's answer and
/// today's `write` answer in this version's types, which have the same cases (only
/// `io-error` differs between 0.x versions, through `error`).
macro_rules! older_types {
    () => {
        /// The loop's event in this version's type; none for what this version
        /// cannot hear (`Mail`: its guests make no store calls).
        pub fn event(event: &crate::sockets::events::Event) -> Option<types::Event> {
            use crate::sockets::events::Event as Loop;
            use types::{Event, HangupInfo};
            Some(match event {
                Loop::Accepted(c) => Event::Accepted(*c),
                Loop::Connected(c) => Event::Connected(*c),
                Loop::Readable(c) => Event::Readable(*c),
                Loop::Writable(c) => Event::Writable(*c),
                Loop::Hangup(info) => Event::Hangup(HangupInfo {
                    conn: info.conn,
                    error: error(info.error),
                }),
                Loop::Timer(id) => Event::Timer(*id),
                Loop::Adopted(c) => Event::Adopted(*c),
                Loop::Shutdown => Event::Shutdown,
                Loop::Mail => return None,
            })
        }

        fn read_result(result: crate::sockets::events::ReadResult) -> types::ReadResult {
            use crate::sockets::events::ReadResult as Loop;
            use types::ReadResult;
            match result {
                Loop::Data(bytes) => ReadResult::Data(bytes),
                Loop::WouldBlock => ReadResult::WouldBlock,
                Loop::Eof => ReadResult::Eof,
                Loop::Failed(e) => ReadResult::Failed(error(e)),
            }
        }

        fn write_result(result: today::WriteResult) -> types::WriteResult {
            use types::WriteResult;
            match result {
                today::WriteResult::Accepted(n) => WriteResult::Accepted(n),
                today::WriteResult::WouldBlock => WriteResult::WouldBlock,
                today::WriteResult::Failed(e) => WriteResult::Failed(error(e)),
            }
        }
    };
}

/// The version's `io` on [`GuestState`](super::super::imports::GuestState): what every
/// 0.x before 0.4.0 has (`close` and `shutdown-write` answering `unknown-conn`, a
/// 64-bit `set-timer` delay up to `max_timer_ms`), plus the calls given after it
/// (`tls` from 0.3.0).
macro_rules! older_io {
    (max_timer_ms: $max:expr, $($more:item)*) => {
        impl types::Host for GuestState {}

        impl io::Host for GuestState {
            fn read(&mut self, c: Conn, max: u32) -> types::ReadResult {
                read_result(GuestState::read(self, c, max))
            }

            fn write(&mut self, c: Conn, data: Vec<u8>) -> types::WriteResult {
                write_result(Today::write(self, c, data))
            }

            fn set_interest(&mut self, c: Conn, readable: bool, writable: bool) {
                Today::set_interest(self, c, readable, writable)
            }

            fn shutdown_write(&mut self, c: Conn) -> Result<(), types::IoError> {
                self.shutdown_write_answered(c).map_err(error)
            }

            fn close(&mut self, c: Conn) -> Result<(), types::IoError> {
                self.close_answered(c).map_err(error)
            }

            fn peer(&mut self, c: Conn) -> Option<String> {
                Today::peer(self, c)
            }

            fn set_timer(&mut self, id: u64, after_ms: u64) -> Result<(), types::IoError> {
                self.set_timer_within(id, after_ms, $max).map_err(error)
            }

            fn cancel_timer(&mut self, id: u64) {
                Today::cancel_timer(self, id)
            }

            fn connect(&mut self, addr: String) -> Result<Conn, types::IoError> {
                Today::connect(self, addr).map_err(error)
            }

            $($more)*
        }
    };
}
