//! The dispatcher behind [`serve!`](crate::serve): raw events in, handler calls out.

use std::cell::RefCell;

use crate::handoff;
use crate::host::Host;
use crate::raw::{Event, hangup_error, kind};
use crate::{Answer, Conn, Handler, Io, OpId, Subscription};

/// A handler and the connection state it acts on.
#[derive(Debug)]
pub struct Runtime<H> {
    handler: H,
    io: Io,
}

impl<H: Handler> Runtime<H> {
    pub(crate) fn new(handler: H, host: Host) -> Self {
        Self {
            handler,
            io: Io::new(host),
        }
    }

    /// Dispatches one batch, event by event, in the order the host gave; `input`
    /// holds the bytes of its `data` events. A kind this SDK does not know (one a
    /// later 1.x added) is skipped.
    pub(crate) fn handle(&mut self, events: &[Event], input: &[u8]) {
        for event in events {
            let conn = Conn::from_raw(event.conn);
            match event.kind {
                kind::ACCEPTED => self.accepted(conn),
                kind::CONNECTED => self.connected(conn),
                kind::DATA => {
                    let start = event.start as usize;
                    match input.get(start..start + event.len as usize) {
                        Some(bytes) => self.data(conn, bytes),
                        None => continue, // not from a host that keeps the contract
                    }
                }
                kind::EOF => self.eof(conn),
                kind::WRITABLE => self.writable(conn),
                kind::HANGUP => self.io.forget(conn, Some(hangup_error(event.code))),
                kind::ADOPTED => self.adopted(conn),
                kind::TIMER => self.handler.on_timer(&mut self.io, event.id),
                kind::SHUTDOWN => self.handler.on_shutdown(&mut self.io),
                kind::STORE | kind::MESSAGE => {
                    let start = event.start as usize;
                    let Some(bytes) = input.get(start..start + event.len as usize) else {
                        continue; // not from a host that keeps the contract
                    };
                    if event.kind == kind::STORE {
                        let answer = Answer::new(event.code, event.value, bytes);
                        self.handler
                            .on_store(&mut self.io, OpId::from_raw(event.id), answer);
                    } else {
                        let subscription = Subscription::from_raw(event.id);
                        self.handler.on_message(&mut self.io, subscription, bytes);
                    }
                }
                kind::LOST => {
                    let subscription = Subscription::from_raw(event.id);
                    self.handler
                        .on_lost(&mut self.io, subscription, event.value);
                }
                _ => continue,
            }
            // What waited may resume, and an `on_close` may resume more: until quiet.
            while self.deliver_held() | self.deliver_closes() {}
        }
        self.handler.on_batch_end(&mut self.io);
        while self.deliver_held() | self.deliver_closes() {}
    }

    fn accepted(&mut self, conn: Conn) {
        if self.io.accept(conn) {
            self.handler.on_accept(&mut self.io, conn);
        }
    }

    /// A connection handed over at a hot swap: the handler hears it, then what the
    /// earlier generation left queued goes out, ahead of what the handler wrote in
    /// `on_adopted`.
    fn adopted(&mut self, conn: Conn) {
        if self.io.adopt(conn) {
            self.handler.on_adopted(&mut self.io, conn);
            self.writable(conn);
        }
    }

    /// The `state.snapshot` export: the handler's bytes and the SDK's connection
    /// state, in the layout `handoff` describes.
    pub(crate) fn snapshot(&mut self) -> Vec<u8> {
        let handler = self.handler.snapshot(&mut self.io);
        self.deliver_closes();
        handoff::encode(&handler, &self.io)
    }

    /// The `state.restore` export. An empty snapshot (from a generation that kept
    /// nothing) restores nothing; one that cannot be read is refused whole, with the
    /// reason for the host to log, so that a bad snapshot never traps the instance
    /// that just took over the connections (they start afresh). The handler's own
    /// part is taken up only if the SDK's part was, and its refusal is passed on.
    pub(crate) fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let result = match handoff::decode(state) {
            Ok(restored) => {
                self.io.restore_conns(restored.conns);
                if restored.handler.is_empty() {
                    Ok(())
                } else {
                    self.handler
                        .restore(&mut self.io, restored.handler)
                        .map_err(|error| format!("the handler refused its state: {error}"))
                }
            }
            Err(error) => Err(format!(
                "sandsock-sdk could not read the snapshot ({} bytes): {error}; the \
                 connections handed over start afresh",
                state.len()
            )),
        };
        self.deliver_closes();
        result
    }

    /// An outbound connection completed: the handler hears it, then what was
    /// written before (and in `on_connected`) goes out.
    fn connected(&mut self, conn: Conn) {
        if self.io.connected(conn) {
            self.handler.on_connected(&mut self.io, conn);
            self.writable(conn);
        }
    }

    /// Bytes the host read for `conn`: the handler's, unless reading is paused
    /// (the host stops reading once told, but this batch was made before), in
    /// which case they wait in the SDK until it resumes.
    fn data(&mut self, conn: Conn, bytes: &[u8]) {
        if self.io.takes_input(conn) {
            self.handler.on_data(&mut self.io, conn, bytes);
        } else {
            self.io.hold(conn, bytes);
        }
    }

    /// The peer's end-of-stream: the handler hears it after every byte before it,
    /// so it too waits while reading is paused.
    fn eof(&mut self, conn: Conn) {
        if self.io.takes_input(conn) {
            self.io.mark_eof(conn);
            self.handler.on_eof(&mut self.io, conn);
        } else {
            self.io.hold_eof(conn);
        }
    }

    /// Hands the handler what waited for reading to resume, on every connection
    /// where it has; true if there was any.
    fn deliver_held(&mut self) -> bool {
        let mut delivered = false;
        while let Some((conn, held)) = self.io.next_resumed() {
            delivered = true;
            if !held.bytes.is_empty() {
                self.handler.on_data(&mut self.io, conn, &held.bytes);
            }
            if held.eof {
                self.eof(conn);
            }
        }
        delivered
    }

    fn writable(&mut self, conn: Conn) {
        if self.io.flush(conn) {
            self.handler.on_writable(&mut self.io, conn);
        }
    }

    /// Calls `on_close` for every connection that ended, including those that end
    /// while `on_close` runs (a handler that closes others from there).
    /// True if there was any.
    fn deliver_closes(&mut self) -> bool {
        let mut delivered = false;
        while let Some((conn, reason)) = self.io.next_ended() {
            delivered = true;
            self.io.set_ending(Some((conn, reason)));
            self.handler.on_close(&mut self.io, conn);
            self.io.set_ending(None);
        }
        delivered
    }
}

#[cfg(test)]
impl<H> Runtime<H> {
    pub(crate) fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    pub(crate) fn io(&mut self) -> &mut Io {
        &mut self.io
    }
}

/// Where [`serve!`](crate::serve) keeps the guest's one runtime: created on the
/// first `handle` call, so the handler's constructor runs inside the guest, after
/// instantiation, and lives as long as the instance.
#[derive(Debug)]
pub struct Slot<H>(RefCell<Option<Runtime<H>>>);

impl<H: Handler> Slot<H> {
    /// An empty slot, for a `const` thread-local initialiser.
    pub const fn new() -> Self {
        Self(RefCell::new(None))
    }

    /// Runs one batch, creating the runtime with `init` on first use.
    pub fn handle(&self, init: impl FnOnce() -> H, events: Vec<Event>, input: Vec<u8>) {
        self.with(init, |runtime| runtime.handle(&events, &input));
    }

    /// The `state.snapshot` export, creating the runtime with `init` if no batch
    /// came before.
    pub fn snapshot(&self, init: impl FnOnce() -> H) -> Vec<u8> {
        self.with(init, Runtime::snapshot)
    }

    /// The `state.restore` export: called on a new instance, before its first
    /// batch, so it usually creates the runtime with `init`.
    pub fn restore(&self, init: impl FnOnce() -> H, state: Vec<u8>) -> Result<(), String> {
        self.with(init, |runtime| runtime.restore(&state))
    }

    fn with<T>(&self, init: impl FnOnce() -> H, f: impl FnOnce(&mut Runtime<H>) -> T) -> T {
        // The host never calls the guest re-entrantly (imports do not call back),
        // so this borrow cannot fail.
        let mut runtime = self.0.borrow_mut();
        f(runtime.get_or_insert_with(|| Runtime::new(init(), Host::default())))
    }
}

impl<H: Handler> Default for Slot<H> {
    fn default() -> Self {
        Self::new()
    }
}
