"""sandsock: write sandsock handler guests in Python.

A guest is a ``Handler`` subclass, served from the component's ``app`` module::

    import sandsock

    class Echo(sandsock.Handler):
        def on_data(self, conn, data):
            conn.write(data)

    WitWorld, State = sandsock.serve(Echo())

``serve`` returns the two classes componentize-py looks for in ``app``:
``WitWorld`` (the ``handle`` export) and ``State`` (the ``state`` interface of the
``stateful-handler`` world). The store and topics the host keeps (contract 1.1)
are ``open_bucket``, ``subscribe`` and ``publish``, answered in ``on_store`` and
``on_message`` (see ``sandsock.store``). See README.md for the whole API.
"""

from .runtime import (
    HIGH_WATER, LOW_WATER, WRITE_CHUNK, BadSnapshot, Conn, Handler, IoError,
    SnapshotReader, SnapshotWriter, log,
)
from . import runtime as _runtime
from .lines import LineHandler
from .store import (
    Answer, Bucket, StoreError, open_bucket, publish, subscribe, unsubscribe,
)

__all__ = [
    "Handler", "LineHandler", "Conn", "IoError", "BadSnapshot", "SnapshotWriter",
    "SnapshotReader", "serve", "set_timer", "cancel_timer", "connect", "conns",
    "close_all", "log", "HIGH_WATER", "LOW_WATER", "WRITE_CHUNK",
    "Answer", "Bucket", "StoreError", "open_bucket", "subscribe", "unsubscribe",
    "publish",
]


def serve(handler):
    """``WitWorld, State = sandsock.serve(MyHandler())`` at the top of ``app.py``."""
    from .wasm import serve as _serve  # the bindings exist only in a component build
    return _serve(handler)


def _rt():
    rt = _runtime._active
    if rt is None:
        raise RuntimeError("sandsock: no handler is being served")
    return rt


def set_timer(timer_id, after_ms):
    """Arm (or re-arm) the one-shot timer ``timer_id`` (an int below 2**64) to call
    ``on_timer(timer_id)`` after ``after_ms`` milliseconds (at most a day). Raises
    ``IoError('limit-exceeded')`` when the host's timer limit is reached."""
    _rt().set_timer(timer_id, after_ms)


def cancel_timer(timer_id):
    """Disarm ``timer_id``; nothing happens if it is not armed."""
    _rt().cancel_timer(timer_id)


def connect(addr):
    """Open an outbound TCP connection to ``addr`` (``ip:port``): a ``Conn`` at
    once, writable and closable; ``on_connected`` follows, or ``on_close`` with
    ``'refused'``/``'unreachable'``. Raises ``IoError`` (``'not-permitted'``
    without the host's ``--allow-connect``, ``'invalid-address'``)."""
    return _rt().connect(addr)


def conns():
    """The open connections (a new list)."""
    return _rt().conns()


def close_all():
    """Close every open connection gracefully (what ``on_shutdown`` usually does)."""
    for conn in _rt().conns():
        conn.close()
