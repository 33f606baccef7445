"""A scripted host for the SDK's unit tests: the shape of ``sandsock.wasm.WasmHost``
with plain classes, answers set per connection, and every call recorded."""

from collections import deque
from dataclasses import dataclass


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


class FakeConn:
    def __init__(self):
        self.reads = deque()       # answers to read(), then would-block
        self.room = 1 << 30        # bytes write() still accepts
        self.write_error = None    # answer every write with this failure
        self.written = bytearray()  # everything accepted
        self.writes = []           # the size of every write call
        self.interest = (True, False)
        self.read_calls = []       # the max of every read call
        self.shut_down = False
        self.closed = False


class FakeHost:
    ReadData, ReadEof, ReadFailed = ReadData, ReadEof, ReadFailed
    WriteAccepted, WriteWouldBlock = WriteAccepted, WriteWouldBlock
    Err = Err
    Accepted, Connected, Readable, Writable = Accepted, Connected, Readable, Writable
    Hangup, Timer, Adopted, Shutdown = Hangup, Timer, Adopted, Shutdown

    def __init__(self):
        self.conns = {}
        self.calls = []           # (name, args) of every call, in order
        self.timers = {}
        self.timer_limit = 10
        self.next_handle = 1000
        self.connect_error = None

    def conn(self, handle):
        return self.conns.setdefault(handle, FakeConn())

    # -- the io interface ---------------------------------------------------

    def read(self, c, max):
        self.calls.append(("read", c))
        fc = self.conn(c)
        fc.read_calls.append(max)
        if not fc.reads:
            return ReadWouldBlock()
        answer = fc.reads[0]
        if isinstance(answer, ReadData) and len(answer.value) > max:
            fc.reads[0] = ReadData(answer.value[max:])
            return ReadData(answer.value[:max])
        fc.reads.popleft()
        return answer

    def write(self, c, data):
        assert type(data) is bytes, "io.write wants bytes exactly"
        self.calls.append(("write", c))
        fc = self.conn(c)
        fc.writes.append(len(data))
        if fc.write_error:
            return WriteFailed(fc.write_error)
        if fc.room == 0:
            return WriteWouldBlock()
        n = min(fc.room, len(data))
        fc.room -= n
        fc.written += data[:n]
        return WriteAccepted(n)

    def set_interest(self, c, readable, writable):
        self.calls.append(("set_interest", c, readable, writable))
        self.conn(c).interest = (readable, writable)

    def shutdown_write(self, c):
        self.calls.append(("shutdown_write", c))
        self.conn(c).shut_down = True

    def close(self, c):
        self.calls.append(("close", c))
        self.conn(c).closed = True

    def peer(self, c):
        return f"127.0.0.1:{c}"

    def tls(self, c):
        return None

    def set_timer(self, id, after_ms):
        if len(self.timers) >= self.timer_limit and id not in self.timers:
            raise Err("limit-exceeded")
        self.timers[id] = after_ms

    def cancel_timer(self, id):
        self.timers.pop(id, None)

    def connect(self, addr):
        if self.connect_error:
            raise Err(self.connect_error)
        self.next_handle += 1
        return self.next_handle
