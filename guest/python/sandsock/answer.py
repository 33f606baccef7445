"""``Answer``: how one store operation ended, as its ``store`` event said
(contract 1.1). The runtime makes them; ``sandsock.store`` says what asks for them."""

# The WIT's `outcome`, by position: what a `store` event's code says.
OUTCOMES = ("ok", "not-found", "conflict", "key-too-large", "value-too-large",
            "namespace-full", "not-a-number", "bad-name", "busy", "unavailable",
            "timed-out", "failed")


class Answer:
    """How one store operation ended, as its ``store`` event said."""

    __slots__ = ("outcome", "_number", "_data")

    def __init__(self, code, number, data):
        #: The WIT ``outcome`` name: ``'ok'``, ``'not-found'``, ``'conflict'``, or
        #: an error (``'namespace-full'``, ``'unavailable'``, ...).
        self.outcome = OUTCOMES[code] if code < len(OUTCOMES) else "failed"
        self._number = number
        self._data = data

    @property
    def ok(self):
        return self.outcome == "ok"

    @property
    def error(self):
        """The error's name, or None for ``ok``, ``not-found`` and ``conflict``."""
        return None if self.outcome in ("ok", "not-found", "conflict") else self.outcome

    @property
    def value(self):
        """``get`` (and each key of ``get_many``): the bytes, or None if missing."""
        return self._data if self.ok else None

    @property
    def number(self):
        """``increment``: the new number (an s64)."""
        n = self._number
        return n - (1 << 64) if n >= 1 << 63 else n

    @property
    def index(self):
        """``get_many``: the position of this answer's key in the keys asked."""
        return self._number

    @property
    def more(self):
        """``list_keys``: more keys follow (ask again after this page's last)."""
        return self.ok and self._number == 1

    def keys(self):
        """``list_keys``: this page's keys, in order."""
        keys, data, at = [], self._data if self.ok else b"", 0
        while at + 4 <= len(data):
            n = int.from_bytes(data[at:at + 4], "little")
            keys.append(bytes(data[at + 4:at + 4 + n]).decode())
            at += 4 + n
        return keys

    def __repr__(self):
        return f"Answer({self.outcome!r})"
