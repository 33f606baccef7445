"""The SDK's logic: connections, buffered writes, the event dispatcher, snapshots.

Nothing here imports the generated bindings (``wit_world``): the host's calls come
through a *host* object (see ``sandsock.wasm.WasmHost`` for the real one and
``tests/fakehost.py`` for a scripted one), so all of this runs in plain CPython.

How a ``handle`` call goes (see ``Runtime.handle``; contract 1.0):

1. Each event is dispatched in the order the host gave. The host read each
   readable connection before the call (at most 64 KiB per connection, 256 KiB per
   call) and its bytes come in a ``data`` event: they go to ``on_data``, or, if
   the handler paused reading (the host learns that at the end of the call), wait
   in the SDK until it resumes. The SDK makes no read.
2. ``Conn.write`` only appends to the connection's queue. At the end of the call
   each connection written to is flushed with one host ``write`` of everything
   it queued (componentize-py copies every ``bytes`` handed to an import and
   never frees the copy, so few large writes leak far less than many small ones).
   What the host does not take stays queued, write interest goes on, and the
   rest is sent on ``writable``. Past ``HIGH_WATER`` queued bytes the connection
   is not read until its queue drains below ``LOW_WATER``.
3. ``on_close`` runs exactly once per connection, after the event that ended it
   (or the end-of-call flush that completed a graceful close).

Exceptions raised by handler code are never caught here: they leave ``handle``,
the guest traps, and the host contains it.
"""

import sys
from collections import deque

from .answer import Answer
from .snapshot import BadSnapshot, SnapshotReader, SnapshotWriter

# Queued bytes past which a connection is not read (an echo whose client never
# reads would otherwise queue everything it sends), and below which it is again.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# The most handed to one host ``write``: a write the host refuses (would-block)
# or takes only partly still costs a copy of all of it (see above).
WRITE_CHUNK = 64 * 1024
# The host's longest timer.
MAX_TIMER_MS = 86_400_000

# What to do once a connection's queue is sent.
_NOTIFY, _SHUTDOWN, _CLOSE = 0, 1, 2

# The kinds of event of contract 1.1 (the WIT's numbers; 9 to 11 since 1.1).
(_ACCEPTED, _CONNECTED, _DATA, _EOF, _WRITABLE, _HANGUP, _TIMER, _ADOPTED,
 _SHUTDOWN_EVENT, _STORE, _MESSAGE, _LOST) = range(12)
# The io-error names, by position: what a hangup event's code says.
_ERRORS = ("closed", "reset", "unknown-conn", "not-permitted", "limit-exceeded",
           "refused", "unreachable", "invalid-address")

_active = None  # the Runtime that module-level calls (set_timer, connect) act on


class IoError(Exception):
    """A host call failed: ``reason`` is the WIT ``io-error`` name, such as
    ``'not-permitted'``, ``'limit-exceeded'`` or ``'invalid-address'``."""

    def __init__(self, reason, what=""):
        super().__init__(f"{what}: {reason}" if what else reason)
        self.reason = reason


def _reason_name(error):
    """The WIT name of an ``io-error`` value (an enum member, or a string in tests)."""
    if isinstance(error, str):
        return error
    return error.name.lower().replace("_", "-")


class Handler:
    """What a guest does when something happens. Every method has a default, so
    override only what you use. Create it at module level and pass it to
    ``sandsock.serve``; its ``__init__`` runs when the component is *built*
    (componentize-py pre-initialises the module), so it must not do I/O."""

    def on_accept(self, conn):
        """A new connection was accepted; reading starts after this returns."""

    def on_connected(self, conn):
        """An outbound connection made with ``sandsock.connect`` completed. What was
        written to it before goes out right after this returns."""

    def on_data(self, conn, data):
        """``data`` (``bytes``, never empty) arrived on ``conn``, after whatever was
        given back with ``conn.unread``. Chunk boundaries mean nothing."""

    def on_eof(self, conn):
        """The peer shut down its write side. The default closes the connection once
        everything written to it is sent."""
        conn.close()

    def on_writable(self, conn):
        """Everything queued for ``conn`` was handed to the host after the host had
        pushed back (or, with ``conn.set_interest(writable=True)``, there is room)."""

    def on_close(self, conn, reason):
        """``conn`` is gone; exactly once per connection. ``reason`` is None when the
        guest closed it, else the ``io-error`` name (``'reset'``, ``'refused'``,
        ``'unreachable'``, ...)."""

    def on_timer(self, timer_id):
        """The timer ``timer_id`` armed with ``sandsock.set_timer`` fired."""

    def on_shutdown(self):
        """The host is shutting down: finish what is in flight and close."""

    def on_store(self, op, answer):
        """The store operation ``op`` (an id a ``Bucket`` method returned) ended:
        ``answer`` is a ``sandsock.Answer``. Once per operation (``get_many``: once
        per key), in a later call than the one that made it."""

    def on_message(self, subscription, message):
        """``message`` (bytes) was published on the topic of ``subscription``."""

    def on_lost(self, subscription, count):
        """``count`` messages of ``subscription`` were dropped: this instance fell
        too far behind the publishers."""

    def on_adopted(self, conn):
        """After a hot swap (``--swap handoff``): ``conn`` is now this instance's.
        The SDK's state of it (queued bytes, pauses, held input) came with it. The
        default treats it as new."""
        self.on_accept(conn)

    def snapshot(self):
        """Bytes for the next generation's ``restore`` (start with a version byte)."""
        return b""

    def restore(self, data):
        """Take up what an earlier generation's ``snapshot`` returned (never called
        with empty bytes). Refuse it by returning a string saying why, or by raising
        ``BadSnapshot``; the swap goes on with fresh state."""


class Conn:
    """One connection. Only the SDK creates these; one object per connection, so
    identity and ``==`` agree. Calls on a connection that is gone do nothing."""

    __slots__ = (
        "id", "data", "_rt", "_q", "_qlen", "_held", "_open", "_dirty", "_blocked",
        "_told_r", "_told_w", "_eof", "_bp", "_auto", "_paused", "_want_w",
        "_connecting", "_after", "_shut", "_failed", "_waiting", "_waiting_eof",
    )

    def __init__(self, rt, handle, connecting=False):
        self.id = handle
        #: The handler's own per-connection state.
        self.data = {}
        self._rt = rt
        self._q = []          # bytes written, not yet taken by the host, oldest first
        self._qlen = 0
        self._held = b""      # input given back with unread()
        self._open = True
        self._dirty = False   # on the runtime's list for the end-of-call flush
        self._blocked = False  # the host pushed back; wait for `writable`
        self._told_r, self._told_w = True, False  # what the host starts with
        self._eof = False
        self._bp = False      # paused by HIGH_WATER
        self._auto = True     # HIGH_WATER pauses reading
        self._paused = False  # paused by the handler
        self._want_w = False  # on_writable whenever there is room
        self._connecting = connecting
        self._after = _NOTIFY
        self._shut = False
        self._failed = False
        self._waiting = b""   # input the host read before it heard reading paused
        self._waiting_eof = False  # and the end-of-stream after it

    def __repr__(self):
        return f"Conn#{self.id}"

    # -- the handler's calls ------------------------------------------------

    def write(self, data):
        """Queue ``data`` (any bytes-like) to be sent after everything before it.
        Dropped after ``close``/``shutdown_write`` or once the connection is gone."""
        if not data or not self._open or self._after or self._shut or self._failed:
            return
        if type(data) is not bytes:
            data = bytes(data)  # io.write takes bytes only; a str is a TypeError
        self._q.append(data)
        self._qlen += len(data)
        self._update_bp()
        self._mark()

    def close(self):
        """Close once everything written is handed to the host (reading stops now).
        ``on_close(conn, None)`` follows."""
        if not self._open:
            return
        if not self._qlen or self._failed:
            self._rt._finish_close(self, None)
        else:
            self._after = _CLOSE
            self._mark()

    def abort(self):
        """Close now. What is queued is offered to the host once, without waiting
        (so ``write(b"ERR\\n"); abort()`` sends the line unless the host pushes
        back); what it does not take is dropped. For a peer that stopped reading.
        A pending ``close``/``shutdown_write`` is dropped too: this closes now."""
        if not self._open:
            return
        if not (self._blocked or self._connecting or self._failed):
            self._after = _NOTIFY
            self._rt._flush(self)  # may end the connection (a write failure)
        if self._open:
            self._rt._finish_close(self, None)

    def shutdown_write(self):
        """Send end-of-stream once everything written is sent; reading goes on."""
        if not self._open or self._after or self._shut or self._failed:
            return
        if not self._qlen and not self._connecting:
            self._rt._shutdown_now(self)
        else:
            self._after = _SHUTDOWN
            self._mark()

    def pause_reading(self):
        """Stop reading until ``resume_reading`` (bytes wait in the host and kernel)."""
        if self._open and not self._paused:
            self._paused = True
            self._mark()

    def resume_reading(self):
        if self._open and self._paused:
            self._paused = False
            self._mark()

    def set_interest(self, readable=True, writable=False):
        """``readable=False`` pauses reading; ``writable=True`` asks for
        ``on_writable`` whenever the connection can take more, even with nothing
        queued (turn it off when done, or it is heard in every batch)."""
        if self._open:
            self._paused = not readable
            self._want_w = bool(writable)
            self._mark()

    def set_auto_pause(self, enabled):
        """Whether this connection's own queue past HIGH_WATER pauses its reading
        (on by default; turn off for a proxy's sides and pause explicitly)."""
        if self._open:
            self._auto = bool(enabled)
            self._update_bp()
            self._mark()

    def unread(self, data):
        """Give bytes back: they come first in the next ``on_data`` (for a parser
        that needs more input). Replaces what was held; kept across a hot swap.
        Bounding it is the caller's job."""
        self._held = bytes(data)

    @property
    def held(self):
        """The bytes given back with ``unread``, not delivered again yet."""
        return self._held

    @property
    def queued(self):
        """Bytes written that the host has not taken yet (0 once gone)."""
        return self._qlen

    @property
    def open(self):
        """True until the connection is closed or failed (``on_close`` is due)."""
        return self._open

    @property
    def closing(self):
        """``close`` was called and waits for the queue to drain."""
        return self._open and self._after == _CLOSE

    @property
    def peer(self):
        """The peer's ``ip:port``, or None once gone."""
        return self._rt._host.peer(self.id) if self._open else None

    @property
    def tls(self):
        """The TLS facts (``.version``, ``.server_name``, ``.alpn``), or None for
        plaintext."""
        return self._rt._host.tls(self.id) if self._open else None

    # -- internals ----------------------------------------------------------

    def _mark(self):
        if not self._dirty:
            self._dirty = True
            self._rt._dirty.append(self)

    def _wants_read(self):
        return not (self._eof or self._bp or self._paused or self._failed
                    or self._after == _CLOSE)

    def _wanted(self):
        """The interest the host should have: (readable, writable)."""
        return self._wants_read(), (
            not self._connecting and not self._failed
            and (self._qlen > 0 or (self._want_w and not self._after and not self._shut)))

    def _update_bp(self):
        if not self._auto:
            self._bp = False
        elif self._qlen >= HIGH_WATER:
            self._bp = True
        elif self._qlen <= LOW_WATER:
            self._bp = False

    def _sync(self):
        r, w = self._wanted()
        if r != self._told_r or w != self._told_w:
            self._rt._host.set_interest(self.id, r, w)
            self._told_r, self._told_w = r, w


class Runtime:
    """A handler and its connections, driven by a host object."""

    def __init__(self, handler, host):
        global _active
        self.handler = handler
        self._host = host
        self._conns = {}       # handle -> Conn
        self._adopting = {}    # handle -> Conn restored from a snapshot, not adopted yet
        self._dirty = []       # Conns to flush at the end of the call
        self._ended = deque()  # (Conn, reason) whose on_close is due
        self._held_back = []   # Conns with input waiting for reading to resume
        _active = self

    # -- the exports --------------------------------------------------------

    def handle(self, events, input):
        """The ``handle`` export: ``events`` (records with ``kind``, ``code``,
        ``conn``, ``id``, ``value``, ``start``, ``len``) and ``input``, the bytes of their ``data``
        events back to back. A kind this SDK does not know (a later 1.x's) is
        skipped."""
        global _active
        _active = self
        handler = self.handler
        conns = self._conns
        for event in events:
            kind = event.kind
            if kind == _DATA:
                conn = conns.get(event.conn)
                if conn is None:
                    continue
                start = event.start
                data = input[start:start + event.len]
                if conn._waiting or conn._waiting_eof or not conn._wants_read():
                    self._hold_back(conn, data, False)
                else:
                    if conn._held:
                        data = conn._held + data
                        conn._held = b""
                    handler.on_data(conn, data)
            elif kind == _WRITABLE:
                conn = conns.get(event.conn)
                if conn is not None:
                    self._writable(conn)
            elif kind == _ACCEPTED:
                handle = event.conn
                if handle not in conns:
                    conn = conns[handle] = Conn(self, handle)
                    handler.on_accept(conn)
            elif kind == _EOF:
                conn = conns.get(event.conn)
                if conn is None:
                    continue
                if conn._waiting or conn._waiting_eof or not conn._wants_read():
                    self._hold_back(conn, b"", True)
                else:
                    self._eof(conn)
            elif kind == _HANGUP:
                code = event.code
                self._forget(event.conn, _ERRORS[code] if code < len(_ERRORS) else "reset")
            elif kind == _TIMER:
                handler.on_timer(event.id)
            elif kind == _CONNECTED:
                conn = conns.get(event.conn)
                if conn is not None and conn._connecting:
                    conn._connecting = False
                    handler.on_connected(conn)
                    self._writable(conn, waited=True)
            elif kind == _ADOPTED:
                self._adopt(event.conn)
            elif kind == _SHUTDOWN_EVENT:
                handler.on_shutdown()
            elif kind == _STORE:
                data = input[event.start:event.start + event.len]
                handler.on_store(event.id, Answer(event.code, event.value, data))
            elif kind == _MESSAGE:
                handler.on_message(event.id, input[event.start:event.start + event.len])
            elif kind == _LOST:
                handler.on_lost(event.id, event.value)
            else:
                continue
            # What waited may resume, and an on_close may resume more: until quiet.
            while (self._held_back and self._resume()) or self._ended:
                self._deliver_closes()
        self._finish()

    def snapshot(self):
        """The ``state.snapshot`` export: the handler's bytes and the SDK's state."""
        global _active
        _active = self
        mine = self.handler.snapshot() or b""
        self._finish()
        return _encode(bytes(mine), list(self._conns.values()) + list(self._adopting.values()))

    def restore(self, state):
        """The ``state.restore`` export: None, or why the snapshot was refused."""
        global _active
        _active = self
        if not state:
            return None
        try:
            mine, conns = _decode(bytes(state), self)
        except BadSnapshot as error:
            return (f"sandsock (python) could not read the snapshot ({len(state)} bytes): "
                    f"{error}; the connections handed over start afresh")
        for conn in conns:
            if conn.id not in self._conns:
                self._adopting[conn.id] = conn
        refusal = None
        if mine:
            try:
                refusal = self.handler.restore(mine)
            except BadSnapshot as error:
                refusal = str(error) or "refused"
        self._finish()
        if refusal is not None:
            return f"the handler refused its state: {refusal}"
        return None

    # -- module-level calls -------------------------------------------------

    def set_timer(self, timer_id, after_ms):
        after_ms = int(after_ms)
        if after_ms < 0:
            raise ValueError("a timer's delay cannot be negative")
        if after_ms > MAX_TIMER_MS:
            raise IoError("limit-exceeded", "set_timer")
        try:
            self._host.set_timer(timer_id, after_ms)
        except self._host.Err as error:
            raise IoError(_reason_name(error.value), "set_timer") from None

    def cancel_timer(self, timer_id):
        self._host.cancel_timer(timer_id)

    def connect(self, addr):
        try:
            handle = self._host.connect(addr)
        except self._host.Err as error:
            raise IoError(_reason_name(error.value), f"connect {addr}") from None
        conn = self._conns[handle] = Conn(self, handle, connecting=True)
        return conn

    def conns(self):
        return list(self._conns.values())

    # -- internals ----------------------------------------------------------

    def _finish(self):
        """The end of a call: flush what was written, do what waited for it, and
        deliver the closes that caused (their handlers may write again); and hand
        over input held while a queue was past HIGH_WATER if the flush drained it
        (no event would come for it: the host never heard of the pause)."""
        while True:
            while self._dirty or self._ended:
                dirty, self._dirty = self._dirty, []
                for conn in dirty:
                    conn._dirty = False
                    if conn._open:
                        if not conn._blocked:
                            self._flush(conn)
                        if conn._open:
                            conn._sync()
                self._deliver_closes()
            if not (self._held_back and self._resume()):
                return

    def _flush(self, conn):
        """Hands the host as much of the queue as it takes, then does what waited
        for the queue; True if the handler should hear ``on_writable``."""
        if conn._connecting or conn._failed:
            return False
        if conn._qlen:
            write = self._host.write
            Accepted = self._host.WriteAccepted
            data = b"".join(conn._q)  # one item: that very object, no copy
            pos, size = 0, len(data)
            while pos < size:
                piece = data[pos:pos + WRITE_CHUNK]  # the whole of it: no copy either
                result = write(conn.id, piece)
                if type(result) is Accepted:
                    pos += result.value
                    if result.value < len(piece):
                        break
                elif type(result) is self._host.WriteWouldBlock:
                    break
                else:
                    self._io_failed(conn, result.value)
                    return False
            if pos < size:
                rest = data[pos:]
                conn._q = [rest]
                conn._qlen = len(rest)
                conn._blocked = True
                conn._update_bp()
                return False
            conn._q = []
            conn._qlen = 0
            conn._update_bp()
            return self._drained(conn)
        if conn._after:
            return self._drained(conn)
        return conn._want_w and not conn._shut

    def _drained(self, conn):
        after, conn._after = conn._after, _NOTIFY
        if after == _CLOSE:
            self._finish_close(conn, None)
            return False
        if after == _SHUTDOWN:
            self._shutdown_now(conn)
            return False
        return True

    def _eof(self, conn):
        conn._eof = True
        conn._mark()
        self.handler.on_eof(conn)

    def _hold_back(self, conn, data, eof):
        """Input that came while reading was paused: kept, in order, until it
        resumes."""
        if not (conn._waiting or conn._waiting_eof):
            self._held_back.append(conn)
        if data:
            conn._waiting += data
        conn._waiting_eof = conn._waiting_eof or eof

    def _resume(self):
        """Hands over what waited, on each connection whose reading resumed (also
        one a handler resumes meanwhile); True if it handed anything over."""
        delivered = False
        while True:
            ready = [c for c in self._held_back if not c._open or c._wants_read()]
            if not ready:
                return delivered
            self._held_back = [c for c in self._held_back if c._open and not c._wants_read()]
            for conn in ready:
                if not conn._open:
                    continue
                delivered = True
                data, conn._waiting = conn._waiting, b""
                eof, conn._waiting_eof = conn._waiting_eof, False
                if data:
                    if conn._held:
                        data = conn._held + data
                        conn._held = b""
                    self.handler.on_data(conn, data)
                if eof and conn._open:
                    if conn._wants_read() and not conn._waiting:
                        self._eof(conn)
                    else:
                        self._hold_back(conn, b"", True)

    def _writable(self, conn, waited=False):
        """A ``writable`` event (or a completed connect, or an adoption, where bytes
        may have waited): flush, and tell the handler if its queue drained after
        the host had pushed back, or if it asked for room. Nothing for a
        connection the handler closed (in ``on_connected`` or ``on_adopted``)."""
        if not conn._open:
            return
        waited = waited or conn._blocked
        conn._blocked = False
        notify = self._flush(conn)
        if conn._open:
            conn._sync()
        if notify and (waited or conn._want_w):
            self.handler.on_writable(conn)

    def _adopt(self, handle):
        if handle in self._conns:
            return
        conn = self._adopting.pop(handle, None) or Conn(self, handle)
        self._conns[handle] = conn
        # The host kept the old generation's interest: say ours, whatever it is.
        r, w = conn._wanted()
        self._host.set_interest(handle, r, w)
        conn._told_r, conn._told_w = r, w
        if conn._waiting or conn._waiting_eof:
            self._held_back.append(conn)
        self.handler.on_adopted(conn)
        self._writable(conn, waited=True)

    def _shutdown_now(self, conn):
        self._host.shutdown_write(conn.id)
        conn._shut = True
        conn._mark()

    def _finish_close(self, conn, reason):
        self._host.close(conn.id)  # unknown handles are ignored by the host
        self._forget(conn.id, reason)

    def _forget(self, handle, reason):
        conn = self._conns.pop(handle, None) or self._adopting.pop(handle, None)
        if conn is not None and conn._open:
            conn._open = False
            conn._q = []
            conn._qlen = 0
            conn._after = _NOTIFY
            conn._want_w = False
            self._ended.append((conn, reason))

    def _deliver_closes(self):
        ended = self._ended
        on_close = self.handler.on_close
        while ended:
            conn, reason = ended.popleft()
            on_close(conn, reason)

    def _mark_failed(self, conn):
        conn._failed = True
        conn._q = []
        conn._qlen = 0
        conn._after = _NOTIFY
        conn._bp = False
        conn._mark()

    def _io_failed(self, conn, error):
        """A host ``write`` failed. (``closed``, a write after
        ``shutdown-write``, cannot happen: ``write`` drops what comes after it.)"""
        reason = _reason_name(error)
        if reason == "reset":
            self._mark_failed(conn)  # the host's hangup follows
        elif reason == "unknown-conn":
            self._forget(conn.id, reason)
        else:
            self._finish_close(conn, reason)


# -- snapshots --------------------------------------------------------------

# The SDK's layout, version 2 (not the Rust SDK's: a swap between the two is
# refused cleanly). Integers little-endian; `bytes` is a u64 length, then bytes.
#
#   magic    4 bytes  "SSPY"
#   version  u8       2, or 1 when nothing waits (both are read: 1 is 2 with
#                     nothing waiting), so that a build before 1.0 reads it
#   handler  bytes    Handler.snapshot(), opaque here
#   count    u64      connections that follow
#   per connection:
#     handle u64
#     flags  u8       bit 0 eof, 1 backpressure, 2 auto-pause, 3 paused,
#                     4 connecting, 5 write side shut, 6 failed, 7 write interest
#     after  u8       once the queue is sent: 0 nothing, 1 shutdown-write, 2 close
#     queue  bytes    written, not yet taken by the host
#     held   bytes    input given back with Conn.unread
#     waiting bytes   input read while reading was paused (from 2)
#     waiting_eof u8  1 if the end-of-stream came after it (from 2)
MAGIC = b"SSPY"
VERSION = 2


def _encode(handler_bytes, conns):
    # Version 1 while nothing waits, so that a build before 1.0 can still take the
    # snapshot up (a rollback loses no state then).
    version = VERSION if any(c._waiting or c._waiting_eof for c in conns) else 1
    w = SnapshotWriter()
    w._parts.append(MAGIC)
    w.u8(version).bytes(handler_bytes).u64(len(conns))
    for c in conns:
        flags = 0
        for bit, on in enumerate((c._eof, c._bp, c._auto, c._paused, c._connecting,
                                  c._shut, c._failed, c._want_w)):
            if on:
                flags |= 1 << bit
        w.u64(c.id).u8(flags).u8(c._after)
        w.bytes(b"".join(c._q)).bytes(c._held)
        if version >= 2:
            w.bytes(c._waiting).u8(c._waiting_eof)
    return w.getvalue()


def _decode(data, rt):
    r = SnapshotReader(data)
    if r._take(4) != MAGIC:
        raise BadSnapshot("not a sandsock python SDK snapshot")
    version = r.u8()
    if version not in (1, VERSION):
        raise BadSnapshot("unknown snapshot version")
    mine = r.bytes()
    conns = []
    seen = set()
    for _ in range(r.u64()):
        handle = r.u64()
        if handle in seen:
            raise BadSnapshot("a connection appears twice")
        seen.add(handle)
        flags, after = r.u8(), r.u8()
        if after > _CLOSE:
            raise BadSnapshot("unknown pending action")
        conn = Conn(rt, handle)
        (conn._eof, conn._bp, conn._auto, conn._paused, conn._connecting,
         conn._shut, conn._failed, conn._want_w) = (bool(flags >> i & 1) for i in range(8))
        conn._after = after
        queue = r.bytes()
        if queue:
            conn._q = [queue]
            conn._qlen = len(queue)
        conn._held = r.bytes()
        if version >= 2:
            conn._waiting = r.bytes()
            waiting_eof = r.u8()
            if waiting_eof > 1:
                raise BadSnapshot("unknown end-of-stream flag")
            conn._waiting_eof = bool(waiting_eof)
        conns.append(conn)
    r.finish()
    return mine, conns


# -- logging ----------------------------------------------------------------

def _stderr_sink(level, message):
    print(f"[{level}] {message}", file=sys.stderr)


_log_sink = _stderr_sink  # the wasm glue replaces it with the WIT `log` interface


class _Log:
    """``sandsock.log.info("...")``: lines for the host's log, tagged with the
    guest's name (cut at 4 KiB, held to the guest's log budget)."""

    def error(self, message):
        _log_sink("error", str(message))

    def warn(self, message):
        _log_sink("warn", str(message))

    def info(self, message):
        _log_sink("info", str(message))

    def debug(self, message):
        _log_sink("debug", str(message))

    def trace(self, message):
        _log_sink("trace", str(message))


log = _Log()
