"""kv: a key-value store over a line protocol, its data in the store the host
keeps (contract 1.1): every worker, every generation and every connection sees
the same keys, and ``--store PATH`` keeps them across restarts. The same
protocol as the Rust ``kv`` example::

    SET key value   ->  OK              (the value is the rest of the line)
    GET key         ->  VALUE value  |  NOT_FOUND
    DEL key         ->  DELETED      |  NOT_FOUND
    anything else   ->  ERROR unknown command

One reply line per request line, in order, so a client may pipeline: each line
becomes one store operation, and its reply waits in the connection's queue until
every reply before it is there. What the store refuses is answered ``ERROR store
full``, ``ERROR key too large``, ``ERROR value too large``, ``ERROR store
unavailable``, and so on. A client that finishes sending is closed once its last
reply is out.
"""

from collections import deque

import sandsock

# Replies one connection may wait for before its input is paused: a client that
# pipelines faster than the store answers is held back by TCP, not by memory.
MAX_WAITING = 1024

ERRORS = {
    "namespace-full": b"ERROR store full\n",
    "key-too-large": b"ERROR key too large\n",
    "value-too-large": b"ERROR value too large\n",
    "unavailable": b"ERROR store unavailable\n",
    "timed-out": b"ERROR store timed out\n",
    "busy": b"ERROR store busy\n",
}


def parse(line):
    """``(command, key, value)`` of a request line, or the reply to a bad one."""
    command, _, rest = line.partition(b" ")
    if command == b"SET":
        key, space, value = rest.partition(b" ")
        if key and space:
            return command, key, value
    elif command in (b"GET", b"DEL") and rest and b" " not in rest:
        return command, rest, None
    return b"ERROR unknown command\n"


def reply(command, answer):
    """The reply line to ``command`` from the store's answer."""
    if answer.error is not None:
        return ERRORS.get(answer.error, b"ERROR store failed\n")
    if command == b"SET":
        return b"OK\n"
    if not answer.ok:
        return b"NOT_FOUND\n"
    if command == b"GET":
        return b"VALUE " + bytes(answer.value) + b"\n"
    return b"DELETED\n"


class Kv(sandsock.LineHandler):
    def __init__(self):
        self.bucket = None
        self.replies = {}      # Conn -> deque of [reply bytes, or None while waiting]
        self.asked = {}        # op -> (Conn, its slot, the command)
        self.finished = set()  # Conns whose peer is done: closed after the last reply

    def on_line(self, conn, line):
        queue = self.replies.setdefault(conn, deque())
        request = parse(line)
        if isinstance(request, bytes):
            queue.append([request])
        else:
            command, key, value = request
            try:
                key = key.decode()
            except UnicodeDecodeError:
                queue.append([b"ERROR key is not UTF-8\n"])
                return self.flush(conn)
            if self.bucket is None:
                self.bucket = sandsock.open_bucket("kv")
            if command == b"SET":
                op = self.bucket.set(key, value)
            elif command == b"GET":
                op = self.bucket.get(key)
            else:
                op = self.bucket.delete(key)
            slot = [None]
            queue.append(slot)
            self.asked[op] = (conn, slot, command)
            if len(queue) >= MAX_WAITING:
                conn.pause_reading()
        self.flush(conn)

    def on_store(self, op, answer):
        asked = self.asked.pop(op, None)
        if asked is None:
            return  # its connection is gone
        conn, slot, command = asked
        slot[0] = reply(command, answer)
        self.flush(conn)

    def flush(self, conn):
        """Sends the replies that are ready, in order, up to the first waiting."""
        queue = self.replies.get(conn)
        if queue is None:
            return
        was_full = len(queue) >= MAX_WAITING
        while queue and queue[0][0] is not None:
            conn.write(queue.popleft()[0])
        if was_full and len(queue) < MAX_WAITING // 2:
            conn.resume_reading()
        if not queue:
            del self.replies[conn]
            if conn in self.finished:
                conn.close()

    def on_eof(self, conn):
        if conn in self.replies:
            self.finished.add(conn)
        else:
            conn.close()

    def on_close(self, conn, reason):
        self.replies.pop(conn, None)
        self.finished.discard(conn)
        for op in [op for op, (c, _, _) in self.asked.items() if c is conn]:
            del self.asked[op]

    def on_shutdown(self):
        sandsock.close_all()


WitWorld, State = sandsock.serve(Kv())
