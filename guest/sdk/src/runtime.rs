//! The dispatcher behind [`serve!`](crate::serve): raw events in, handler calls out.

use std::cell::RefCell;

use crate::handoff;
use crate::host::Host;
use crate::io::{READ_CHUNK, READS_PER_EVENT};
use crate::raw::Event;
use crate::raw::types::ReadResult;
use crate::{Conn, Handler, Io};

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

    /// Dispatches one batch, event by event, in the order the host gave.
    pub(crate) fn handle(&mut self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Accepted(handle) => self.accepted(Conn::from_raw(handle)),
                Event::Connected(handle) => self.connected(Conn::from_raw(handle)),
                Event::Readable(handle) => self.readable(Conn::from_raw(handle)),
                Event::Writable(handle) => self.writable(Conn::from_raw(handle)),
                Event::Hangup(info) => self.io.forget(Conn::from_raw(info.conn), Some(info.error)),
                Event::Adopted(handle) => self.adopted(Conn::from_raw(handle)),
                Event::Timer(id) => self.handler.on_timer(&mut self.io, id),
                Event::Shutdown => self.handler.on_shutdown(&mut self.io),
            }
            self.deliver_closes();
        }
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

    /// Reads until `would-block`, end-of-stream, a short read, or
    /// [`READS_PER_EVENT`] reads; stops early when the handler closed or paused the
    /// connection, or its writes pushed it into backpressure.
    ///
    /// A read shorter than asked for means the socket is drained for now; the read
    /// that would answer `would-block` is skipped, one host call less per request.
    /// Nothing is lost: readiness is level-triggered, so a connection with bytes
    /// left (or an end-of-stream queued) is reported `readable` again.
    fn readable(&mut self, conn: Conn) {
        for _ in 0..READS_PER_EVENT {
            if !self.io.wants_read(conn) {
                return;
            }
            match self.io.read(conn) {
                ReadResult::Data(bytes) => {
                    self.handler.on_data(&mut self.io, conn, &bytes);
                    if bytes.len() < READ_CHUNK as usize {
                        return;
                    }
                }
                ReadResult::WouldBlock => return,
                ReadResult::Eof => {
                    self.io.mark_eof(conn);
                    self.handler.on_eof(&mut self.io, conn);
                    return;
                }
                ReadResult::Failed(error) => {
                    self.io.read_failed(conn, error);
                    return;
                }
            }
        }
    }

    fn writable(&mut self, conn: Conn) {
        if self.io.flush(conn) {
            self.handler.on_writable(&mut self.io, conn);
        }
    }

    /// Calls `on_close` for every connection that ended, including those that end
    /// while `on_close` runs (a handler that closes others from there).
    fn deliver_closes(&mut self) {
        while let Some((conn, reason)) = self.io.next_ended() {
            self.io.set_ending(Some((conn, reason)));
            self.handler.on_close(&mut self.io, conn);
            self.io.set_ending(None);
        }
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
    pub fn handle(&self, init: impl FnOnce() -> H, events: Vec<Event>) {
        self.with(init, |runtime| runtime.handle(events));
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
