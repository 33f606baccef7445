"""The pieces a snapshot is written and read with: ``SnapshotWriter``,
``SnapshotReader``, and ``BadSnapshot`` for one that does not read. The SDK's own
layout (``_encode`` and ``_decode``) is in ``runtime.py``, beside the connections it
describes."""


class BadSnapshot(ValueError):
    """A snapshot cannot be read. Raise it from ``Handler.restore`` to refuse one."""


class SnapshotWriter:
    """Little-endian pieces for a snapshot: ``u8``, ``u32``, ``u64``, ``bytes``
    (a u64 length, then the bytes), ``str`` (UTF-8, as ``bytes``)."""

    def __init__(self):
        self._parts = []

    def u8(self, n):
        self._parts.append(int(n).to_bytes(1, "little"))
        return self

    def u32(self, n):
        self._parts.append(int(n).to_bytes(4, "little"))
        return self

    def u64(self, n):
        self._parts.append(int(n).to_bytes(8, "little"))
        return self

    def bytes(self, data):
        self.u64(len(data))
        self._parts.append(bytes(data))
        return self

    def str(self, text):
        return self.bytes(text.encode())

    def getvalue(self):
        return b"".join(self._parts)


class SnapshotReader:
    """Reads what ``SnapshotWriter`` wrote; raises ``BadSnapshot``, never anything
    else, on bytes that do not read so. Call ``finish()`` at the end."""

    def __init__(self, data):
        self._data = bytes(data)
        self._pos = 0

    def _take(self, n):
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise BadSnapshot("truncated")
        piece = self._data[self._pos:end]
        self._pos = end
        return piece

    def u8(self):
        return self._take(1)[0]

    def u32(self):
        return int.from_bytes(self._take(4), "little")

    def u64(self):
        return int.from_bytes(self._take(8), "little")

    def bytes(self):
        return self._take(self.u64())

    def str(self):
        try:
            return self.bytes().decode()
        except UnicodeDecodeError:
            raise BadSnapshot("not UTF-8") from None

    def finish(self):
        if self._pos != len(self._data):
            raise BadSnapshot("trailing bytes")
