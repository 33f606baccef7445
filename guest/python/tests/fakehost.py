"""A scripted host for the SDK's unit tests: the shape of ``sandsock.wasm.WasmHost``
with plain classes, answers set per connection, and every call recorded.

The tests write a batch in the host's words of readiness (``Readable(1)``,
``Hangup(HangupInfo(1, "reset"))``, ...); ``FakeHost.batch`` makes contract 1.0's
``handle`` arguments of it as the host does, reading each readable connection
that has read interest once, before the call (``TestRuntime`` does it for them)."""

import ipaddress
from collections import deque
from dataclasses import dataclass

MAX_READ = 64 * 1024        # what one read answers at most: the host's chunk
MAX_TIMER_MS = 86_400_000   # a timer's longest delay: a day


@dataclass
class ReadData:
    value: bytes


class ReadWouldBlock:
    pass


class ReadEof:
    pass


@dataclass
class ReadFailed:
    value: str


@dataclass
class WriteAccepted:
    value: int


class WriteWouldBlock:
    pass


@dataclass
class WriteFailed:
    value: str


@dataclass
class Err(Exception):
    value: str


@dataclass
class HangupInfo:
    conn: int
    error: str


@dataclass
class Accepted:
    value: int


@dataclass
class Connected:
    value: int


@dataclass
class Readable:
    value: int


@dataclass
class Writable:
    value: int


@dataclass
class Hangup:
    value: HangupInfo


@dataclass
class Timer:
    value: int


@dataclass
class Adopted:
    value: int


class Shutdown:
    pass


@dataclass
class Event:
    """Contract 1.0's event record, as componentize-py makes it."""
    kind: int
    code: int = 0
    conn: int = 0
    id: int = 0
    value: int = 0
    start: int = 0
    len: int = 0


# The kinds (the WIT's numbers) and io-error positions.
(ACCEPTED, CONNECTED, DATA, EOF, WRITABLE, HANGUP, TIMER, ADOPTED, SHUTDOWN, STORE,
 MESSAGE, LOST) = range(12)
ERRORS = ("closed", "reset", "unknown-conn", "not-permitted", "limit-exceeded",
          "refused", "unreachable", "invalid-address")


class FakeConn:
    """One connection as the host sees it. The peer's side is scripted with ``send``,
    ``send_eof`` and ``reset`` (or answers put in ``reads`` directly); what the
    guest did is recorded."""

    def __init__(self, peer="127.0.0.1:50000"):
        self.reads = deque()       # answers to read() in order, then would-block;
        #                            an eof or a failure stays: it answers every read after
        self.room = 1 << 30        # bytes write() still accepts
        self.write_error = None    # answer every write with this failure
        self.written = bytearray()  # everything accepted
        self.writes = []           # the size of every write call
        self.interest = (True, False)
        self.read_calls = []       # the max of every read call
        self.shut_down = False     # the guest's shutdown-write
        self.closed = False        # the guest's close: the handle is dead
        self.peer = peer

    def send(self, data):
        """The peer sends ``data``: one read's worth at most."""
        self.reads.append(ReadData(bytes(data)))

    def send_eof(self):
        """The peer shuts its write side: after what it sent, read answers eof."""
        self.reads.append(ReadEof())

    def reset(self):
        """The peer resets the connection: reads and writes fail with reset."""
        self.reads = deque([ReadFailed("reset")])
        self.write_error = "reset"


def ip_port(addr):
    """``addr`` written the host's way if it is an ``ip:port`` (an IPv6 address in
    brackets, no name), else None."""
    ip, colon, port = addr.rpartition(":")
    if not colon or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return None
    try:
        if ip.startswith("[") and ip.endswith("]"):
            return f"[{ipaddress.IPv6Address(ip[1:-1])}]:{int(port)}"
        return f"{ipaddress.IPv4Address(ip)}:{int(port)}"
    except ValueError:
        return None


class FakeStore:
    """The store and topics (contract 1.1), mixed into ``FakeHost``: a dict that
    answers each operation at once into ``answers``, which ``mail()`` turns into
    the ``store`` events the host would deliver in a later batch; topics record
    what was published and hand out subscriptions."""

    def _store_init(self):
        self.buckets, self.entries, self.answers = [], {}, []
        self.next_op = 0
        self.topics, self.published = [], []

    def _answer(self, code, value=0, data=b""):
        self.next_op += 1
        self.answers.append((self.next_op, code, value, data))
        return self.next_op

    def _key(self, bucket, key):
        return (self.buckets[bucket], key)

    def mail(self):
        """``handle``'s arguments for the answers so far, as ``store`` events."""
        records, input = [], bytearray()
        for op, code, value, data in self.answers:
            records.append(Event(STORE, code=code, id=op, value=value,
                                 start=len(input), len=len(data)))
            input += data
        self.answers = []
        return records, bytes(input)

    def store_open(self, name):
        if not name or "*" in name:
            raise Err("bad-name")
        if name not in self.buckets:
            self.buckets.append(name)
        return self.buckets.index(name)

    def store_get(self, bucket, key):
        value = self.entries.get(self._key(bucket, key))
        return self._answer(0, 0, value) if value is not None else self._answer(1)

    def store_set(self, bucket, key, value):
        assert type(value) is bytes, "store.set wants bytes exactly"
        self.entries[self._key(bucket, key)] = value
        return self._answer(0)

    def store_delete(self, bucket, key):
        found = self.entries.pop(self._key(bucket, key), None) is not None
        return self._answer(0 if found else 1)

    def store_increment(self, bucket, key, delta):
        now = int(self.entries.get(self._key(bucket, key), b"0")) + delta
        self.entries[self._key(bucket, key)] = str(now).encode()
        return self._answer(0, now % (1 << 64))

    def subscribe(self, topic):
        self.topics.append(topic)
        return len(self.topics)

    def unsubscribe(self, subscription):
        pass

    def publish(self, topic, message):
        assert type(message) is bytes, "topics.publish wants bytes exactly"
        self.published.append((topic, message))


class FakeHost(FakeStore):
    """The io interface of one guest instance (``wit/handler.wit``, as
    ``wit/io-cases.json`` says it behaves: ``tests/test_contract.py`` runs that
    table here). A connection exists once handed out: ``conn(handle)`` does it on
    first use (a test that scripts a connection means it to exist), and so does
    ``connect``. Calls on a handle never handed out, or closed, answer
    unknown-conn or nothing. Events are the tests' to deliver."""

    WriteAccepted, WriteWouldBlock = WriteAccepted, WriteWouldBlock
    Err = Err

    def __init__(self):
        self.conns = {}           # every handle handed out; closed ones stay, marked
        self.calls = []           # (name, args) of every call, in order
        self.timers = {}
        self.timer_limit = 10
        self.next_handle = 1000
        self.allow_connect = True  # the host's --allow-connect: here, anything
        self._store_init()

    def conn(self, handle):
        """The connection ``handle``, handed out now if it never was."""
        if handle not in self.conns:
            self.conns[handle] = FakeConn(peer=f"127.0.0.1:{40000 + handle % 20000}")
        return self.conns[handle]

    def _live(self, handle):
        fc = self.conns.get(handle)
        return fc if fc is not None and not fc.closed else None

    def batch(self, events):
        """``handle``'s arguments for a batch of readiness events, as the host makes
        them: a readable connection with read interest is read once (a whole
        chunk), its bytes becoming a ``data`` event and its end an ``eof``; a read
        that finds nothing or fails adds nothing (a failure's hangup comes
        later)."""
        records, input = [], bytearray()
        for event in events:
            t = type(event)
            if t is Readable:
                fc = self._live(event.value)
                if fc is None or not fc.interest[0]:
                    continue
                answer = self.read(event.value, MAX_READ)
                if type(answer) is ReadData:
                    records.append(Event(DATA, conn=event.value, start=len(input),
                                         len=len(answer.value)))
                    input += answer.value
                elif type(answer) is ReadEof:
                    records.append(Event(EOF, conn=event.value))
            elif t is Hangup:
                records.append(Event(HANGUP, code=ERRORS.index(event.value.error),
                                     conn=event.value.conn))
            elif t is Timer:
                records.append(Event(TIMER, id=event.value))
            elif t is Shutdown:
                records.append(Event(SHUTDOWN))
            else:
                kind = {Accepted: ACCEPTED, Connected: CONNECTED, Writable: WRITABLE,
                        Adopted: ADOPTED}[t]
                records.append(Event(kind, conn=event.value))
        return records, bytes(input)

    # -- the io interface ---------------------------------------------------

    def read(self, c, max):
        """The host's read of a connection for the guest (and the io table's
        ``read``)."""
        self.calls.append(("read", c))
        fc = self._live(c)
        if fc is None:
            return ReadFailed("unknown-conn")
        fc.read_calls.append(max)
        if not fc.reads:
            return ReadWouldBlock()
        answer = fc.reads[0]
        if isinstance(answer, (ReadEof, ReadFailed)):
            return answer  # sticky
        n = min(max, MAX_READ)
        if isinstance(answer, ReadData) and len(answer.value) > n:
            fc.reads[0] = ReadData(answer.value[n:])
            return ReadData(answer.value[:n])
        fc.reads.popleft()
        return answer

    def write(self, c, data):
        assert type(data) is bytes, "io.write wants bytes exactly"
        self.calls.append(("write", c))
        fc = self._live(c)
        if fc is None:
            return WriteFailed("unknown-conn")
        fc.writes.append(len(data))
        if fc.write_error:
            return WriteFailed(fc.write_error)
        if fc.shut_down:
            return WriteFailed("closed")
        n = min(fc.room, len(data))
        if n == 0 and data:
            return WriteWouldBlock()
        fc.room -= n
        fc.written += data[:n]
        return WriteAccepted(n)

    def set_interest(self, c, readable, writable):
        self.calls.append(("set_interest", c, readable, writable))
        fc = self._live(c)
        if fc is not None:
            fc.interest = (readable, writable)

    def shutdown_write(self, c):
        self.calls.append(("shutdown_write", c))
        fc = self._live(c)
        if fc is not None:
            fc.shut_down = True

    def close(self, c):
        self.calls.append(("close", c))
        fc = self._live(c)
        if fc is not None:
            fc.closed = True

    def peer(self, c):
        fc = self._live(c)
        return fc.peer if fc is not None else None

    def tls(self, c):
        return None

    def set_timer(self, id, after_ms):
        if len(self.timers) >= self.timer_limit and id not in self.timers:
            raise Err("limit-exceeded")
        if after_ms > MAX_TIMER_MS:
            raise Err("limit-exceeded")
        self.timers[id] = after_ms

    def cancel_timer(self, id):
        self.timers.pop(id, None)

    def connect(self, addr):
        target = ip_port(addr)
        if target is None:
            raise Err("invalid-address")
        if not self.allow_connect:
            raise Err("not-permitted")
        self.next_handle += 1
        self.conns[self.next_handle] = FakeConn(peer=target)
        return self.next_handle


class TestRuntime:
    """Makes ``Runtime.handle`` take a batch in the tests' words: ``handle(events)``
    runs ``host.batch(events)``. Mixed into the SDK's ``Runtime`` by
    ``test_runtime``."""

    def handle(self, events, input=None):
        if input is None:
            events, input = self._host.batch(events)
        super().handle(events, input)


def test_runtime(runtime_class):
    """``runtime_class`` with ``TestRuntime``'s ``handle``."""
    return type("TestRuntime", (TestRuntime, runtime_class), {})
