"""The store and topics the host keeps (contract 1.1): state that outlives the
instance, shared by every worker of the host and every generation of the guest.

No call waits. A store operation returns its id (an int) at once, and its result
comes later, in ``Handler.on_store(op, answer)`` with that id: keep what you need
to go on (which connection asked) by the id. Operations of one instance take
effect in the order they were made. Topic messages come in
``Handler.on_message(subscription, message)``::

    import sandsock

    class Visits(sandsock.Handler):
        def __init__(self):
            self.asked = {}

        def on_accept(self, conn):
            op = sandsock.open_bucket("visits").increment("count", 1)
            self.asked[op] = conn

        def on_store(self, op, answer):
            conn = self.asked.pop(op, None)
            if conn is not None:
                conn.write(b"%d\\n" % answer.number if answer.ok else b"ERROR\\n")
                conn.close()

A refusal the host can tell at once (a bad bucket or topic name, too many
subscriptions) raises ``StoreError``; everything else about an operation is its
``Answer``.
"""

from . import runtime as _runtime
from .answer import OUTCOMES, Answer  # noqa: F401 (the store's answers, re-exported)

class StoreError(Exception):
    """The host refused a store or topic call: ``reason`` is the WIT ``outcome``
    name, such as ``'bad-name'`` or ``'busy'``."""

    def __init__(self, reason, what=""):
        super().__init__(f"{what}: {reason}" if what else reason)
        self.reason = reason


def _host():
    rt = _runtime._active
    if rt is None:
        raise RuntimeError("sandsock: no handler is being served")
    return rt._host


def _name(error):
    return _runtime._reason_name(error)


class Bucket:
    """A bucket of the guest's namespace, from ``open_bucket``. Every method
    returns the operation's id; its ``Answer`` comes in ``on_store``."""

    __slots__ = ("name", "_handle")

    def __init__(self, name, handle):
        self.name = name
        self._handle = handle

    def get(self, key):
        """The value of ``key``: ``ok`` with ``answer.value``, or ``not-found``."""
        return _host().store_get(self._handle, key)

    def set(self, key, value):
        """Sets ``key`` to ``value`` (bytes): ``ok`` once stored."""
        return _host().store_set(self._handle, key, bytes(value))

    def delete(self, key):
        """Removes ``key``: ``ok`` if it was there, ``not-found`` if not."""
        return _host().store_delete(self._handle, key)

    def exists(self, key):
        """``ok`` if ``key`` is there, ``not-found`` if not."""
        return _host().store_exists(self._handle, key)

    def list_keys(self, cursor=None):
        """A page of keys after ``cursor``: ``answer.keys()``, ``answer.more``."""
        return _host().store_list_keys(self._handle, cursor)

    def increment(self, key, delta):
        """Adds ``delta`` to the number ``key`` holds, atomically: ``answer.number``."""
        return _host().store_increment(self._handle, key, delta)

    def compare_and_swap(self, key, old, new):
        """Sets ``key`` to ``new`` if it holds ``old`` (None: if missing),
        atomically: ``ok``, or ``conflict``."""
        return _host().store_compare_and_swap(
            self._handle, key, None if old is None else bytes(old), bytes(new))

    def get_many(self, keys):
        """The values of ``keys``: one answer per key, in order (``answer.index``)."""
        return _host().store_get_many(self._handle, list(keys))

    def set_many(self, entries):
        """Sets every ``(key, value)``, all or none."""
        return _host().store_set_many(self._handle, [(k, bytes(v)) for k, v in entries])

    def delete_many(self, keys):
        """Removes every key, all or none."""
        return _host().store_delete_many(self._handle, list(keys))


def open_bucket(name):
    """The bucket ``name`` (letters, digits, ``-``, ``_``, ``.``) of the guest's
    namespace. Raises ``StoreError`` (``'bad-name'``, ``'busy'``)."""
    host = _host()
    try:
        return Bucket(name, host.store_open(name))
    except host.Err as error:
        raise StoreError(_name(error.value), f"open_bucket {name}") from None


def subscribe(topic):
    """Subscribes to ``topic``: its messages come in ``on_message`` with the id
    returned. Raises ``StoreError``."""
    host = _host()
    try:
        return host.subscribe(topic)
    except host.Err as error:
        raise StoreError(_name(error.value), f"subscribe {topic}") from None


def unsubscribe(subscription):
    """Ends a subscription (messages on their way may still come)."""
    _host().unsubscribe(subscription)


def publish(topic, message):
    """Publishes ``message`` (bytes) on ``topic`` to every subscriber of every
    worker, this instance's own subscriptions included. Raises ``StoreError``
    (``'value-too-large'``, ``'unavailable'``)."""
    host = _host()
    try:
        host.publish(topic, bytes(message))
    except host.Err as error:
        raise StoreError(_name(error.value), f"publish {topic}") from None
