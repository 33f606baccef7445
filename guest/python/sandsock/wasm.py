"""The glue between the SDK and the component: the generated bindings
(``wit_world``, which exists only inside a componentize-py build) wrapped as the
host object ``Runtime`` drives, and ``serve``, which makes the export classes."""

from componentize_py_types import Err
from wit_world.imports import io, log as _wit_log, store, topics, types

from . import runtime


class WasmHost:
    """The real host: the ``io``, ``store`` and ``topics`` imports, and the binding
    classes ``Runtime`` tests results against."""

    write = staticmethod(io.write)
    set_interest = staticmethod(io.set_interest)
    shutdown_write = staticmethod(io.shutdown_write)
    close = staticmethod(io.close)
    peer = staticmethod(io.peer)
    tls = staticmethod(io.tls)
    set_timer = staticmethod(io.set_timer)
    cancel_timer = staticmethod(io.cancel_timer)
    connect = staticmethod(io.connect)
    store_open = staticmethod(store.open)
    store_get = staticmethod(store.get)
    store_set = staticmethod(store.set)
    store_delete = staticmethod(store.delete)
    store_exists = staticmethod(store.exists)
    store_list_keys = staticmethod(store.list_keys)
    store_increment = staticmethod(store.increment)
    store_compare_and_swap = staticmethod(store.compare_and_swap)
    store_get_many = staticmethod(store.get_many)
    store_set_many = staticmethod(store.set_many)
    store_delete_many = staticmethod(store.delete_many)
    subscribe = staticmethod(topics.subscribe)
    unsubscribe = staticmethod(topics.unsubscribe)
    publish = staticmethod(topics.publish)
    Err = Err

    WriteAccepted = types.WriteResult_Accepted
    WriteWouldBlock = types.WriteResult_WouldBlock


_LEVELS = {
    "error": _wit_log.Level.ERROR,
    "warn": _wit_log.Level.WARN,
    "info": _wit_log.Level.INFO,
    "debug": _wit_log.Level.DEBUG,
    "trace": _wit_log.Level.TRACE,
}


def _wit_sink(level, message):
    _wit_log.write(_LEVELS[level], message)


def serve(handler):
    """The export classes of the ``stateful-handler`` world for ``handler``:
    ``WitWorld`` (``handle``) and ``State`` (``snapshot``, ``restore``)."""
    runtime._log_sink = _wit_sink
    rt = runtime.Runtime(handler, WasmHost())
    handle = rt.handle

    class WitWorld:
        def handle(self, events, input):
            handle(events, input)

    class State:
        def snapshot(self):
            return rt.snapshot()

        def restore(self, state):
            refusal = rt.restore(state)
            if refusal is not None:
                raise Err(refusal)

    return WitWorld, State
