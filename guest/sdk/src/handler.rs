//! [`Handler`], the trait a guest implements.

use crate::{Answer, BadSnapshot, Conn, Io, OpId, Subscription};

/// What a guest does when something happens on its connections.
///
/// Every method has a default, so a guest implements only what it uses: an echo
/// server is one `on_data` that writes the bytes back. Each method gets the [`Io`]
/// to act with; whatever it writes or closes takes effect at once (or as soon as the
/// host can take it), and no method is ever called re-entrantly.
///
/// Export a handler with [`serve!`](crate::serve). It is `'static` because the
/// instance lives as long as the guest.
pub trait Handler: 'static {
    /// A new connection was accepted. Reading starts right after this returns.
    fn on_accept(&mut self, io: &mut Io, conn: Conn) {
        let _ = (io, conn);
    }

    /// An outbound connection opened with [`Io::connect`] completed.
    ///
    /// What was written to it before is sent right after this returns. If the
    /// connection cannot be made, this is not called; [`on_close`](Self::on_close)
    /// is, and [`Io::hangup_reason`] says why.
    fn on_connected(&mut self, io: &mut Io, conn: Conn) {
        let _ = (io, conn);
    }

    /// The peer sent bytes: one chunk of at most 64 KiB, as the host read it.
    ///
    /// A chunk boundary means nothing: a message can be split across chunks, and
    /// one chunk can hold several messages. The slice is the buffer the host
    /// filled; it is not copied, and it is gone when this returns.
    fn on_data(&mut self, io: &mut Io, conn: Conn, data: &[u8]) {
        let _ = (io, conn, data);
    }

    /// The peer shut down its write side, after everything it sent was delivered.
    ///
    /// The connection can still be written to (half-close). The default closes it,
    /// once everything written to it has been sent ([`Io::close`] is graceful),
    /// which is what a request/response server wants.
    fn on_eof(&mut self, io: &mut Io, conn: Conn) {
        io.close(conn);
    }

    /// Everything this guest wrote to `conn` has been handed to the host.
    ///
    /// Called when the SDK's queue for `conn` drains after the host pushed back (or
    /// after an outbound connection completed, if bytes waited for it), so
    /// a guest producing a large response can write a slice, wait for this, and
    /// write the next slice instead of queueing all of it. Not called after a write
    /// the host took at once, nor when a close or write shutdown was waiting for
    /// the queue to drain.
    fn on_writable(&mut self, io: &mut Io, conn: Conn) {
        let _ = (io, conn);
    }

    /// The connection is gone: the peer reset it, the socket failed, an outbound
    /// connection could not be made, or the guest closed it and the close
    /// completed.
    ///
    /// Called exactly once per connection, after which the handle refers to
    /// nothing; this is the place to drop per-connection state. That includes a
    /// connection handed over at a hot swap that ends before its
    /// [`on_adopted`](Self::on_adopted): [`restore`](Self::restore) may have
    /// brought back state for it.
    /// [`Io::hangup_reason`] says, from here, whether and how it failed.
    fn on_close(&mut self, io: &mut Io, conn: Conn) {
        let _ = (io, conn);
    }

    /// The timer `id`, armed with [`Io::set_timer`], fired.
    fn on_timer(&mut self, io: &mut Io, id: u64) {
        let _ = (io, id);
    }

    /// Every event of this call has been handled. The place to write what the
    /// handler gathered across them: one write per connection rather than one per
    /// event (each write the host takes at once is a send), as a server answering
    /// store operations one by one wants. The default does nothing.
    fn on_batch_end(&mut self, io: &mut Io) {
        let _ = io;
    }

    /// The store operation `op` ended: see [`Answer`] for what it says. Every
    /// operation is answered once (`get_many`: once per key), in a later call than
    /// the one that made it.
    fn on_store(&mut self, io: &mut Io, op: OpId, answer: Answer<'_>) {
        let _ = (io, op, answer);
    }

    /// A message on a topic this instance subscribed to.
    fn on_message(&mut self, io: &mut Io, subscription: Subscription, message: &[u8]) {
        let _ = (io, subscription, message);
    }

    /// `count` messages for `subscription` were dropped: this instance fell too far
    /// behind the publishers. The ones after them come as usual.
    fn on_lost(&mut self, io: &mut Io, subscription: Subscription, count: u64) {
        let _ = (io, subscription, count);
    }

    /// After a hot swap with `--swap handoff`: `conn`, which an earlier
    /// generation of this guest held, is now this one's.
    ///
    /// By now [`restore`](Self::restore) has run, and the SDK has taken up its own
    /// state of `conn`: what the old generation wrote that the host had not taken
    /// yet goes out right after this returns, before anything written from here
    /// on. The default treats the connection as new
    /// ([`on_accept`](Self::on_accept)), which suits a handler that keeps no state
    /// for it; one that restored some must not overwrite it here.
    fn on_adopted(&mut self, io: &mut Io, conn: Conn) {
        self.on_accept(io, conn)
    }

    /// Before a hot swap with `--swap handoff`: what this instance wants the next
    /// generation to [`restore`](Self::restore).
    ///
    /// The connections move to the new instance with what the host and the SDK
    /// hold for them (the SDK's queues and flags go into the snapshot next to these
    /// bytes); what the handler keeps per connection or across them (a store,
    /// unfinished requests) is lost unless it is in here. Start with a version
    /// byte of your own: the next generation may be another build.
    /// [`SnapshotWriter`](crate::SnapshotWriter) has the pieces. The default keeps
    /// nothing.
    ///
    /// Copy rather than move: nothing says this instance is done (a host can
    /// keep it serving if the new generation fails to start).
    fn snapshot(&mut self, io: &mut Io) -> Vec<u8> {
        let _ = io;
        Vec::new()
    }

    /// At a hot swap: takes up what the earlier generation's
    /// [`snapshot`](Self::snapshot) returned, before any
    /// [`on_adopted`](Self::on_adopted).
    ///
    /// Not called when that snapshot was empty or could not be read (a guest of
    /// another kind, a truncated one). `state` may come from another build of the
    /// guest: check it ([`SnapshotReader`](crate::SnapshotReader) answers errors,
    /// never panics), and on an error keep the fresh state and return the error,
    /// rather than trap, which would drop every connection just handed over: the
    /// host logs and counts it, and the connections arrive all the same. The
    /// connections are not this instance's until their `on_adopted`: [`Io`] calls
    /// on them do nothing here. The default ignores `state`.
    fn restore(&mut self, io: &mut Io, state: &[u8]) -> Result<(), BadSnapshot> {
        let _ = (io, state);
        Ok(())
    }

    /// The host is shutting down: no new connections will come.
    ///
    /// Finish what is in flight and close the connections (gracefully, with
    /// [`Io::close`]); the host closes whatever is left when its shutdown timeout
    /// runs out. Called once. The default does nothing, leaving every connection
    /// to that timeout.
    fn on_shutdown(&mut self, io: &mut Io) {
        let _ = io;
    }
}
