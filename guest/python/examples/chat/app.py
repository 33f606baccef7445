"""chat: every line a client sends goes to every other connected client, on
every worker: the room is a topic of the host (contract 1.1). Each instance
subscribes to it and publishes its clients' lines there, tagged with the
instance's origin (random: with a shared store, instances of other hosts hear the
room too, and handles are unique in one host only) and the sender's handle, and
relays every message it hears to its own clients but the sender.

A line is relayed exactly as sent, ``\\n`` included, once it is complete; the sender
does not get its own lines back. Lines are capped at ``MAX_LINE`` bytes (a longer
one gets ``ERROR line too long`` and the sender is disconnected). A client that
does not read what the room sends it is disconnected once ``MAX_BACKLOG`` bytes
wait for it, so one stalled reader costs a bounded amount of memory and never
slows the others down. The SDK coalesces what one call relays to a receiver into
one host write.

Across a hot swap (``--swap handoff``, and the tier-up to optimized code, which is
one) every connection joins again as it is adopted; a half-sent line and what was
relayed but not yet sent come with the SDK's snapshot, and the origin with the
handler's: a line the old instance published reaches its successor after the swap,
which must know it as its own, or the sender hears it back.
"""

import os

import sandsock

MAX_LINE = 64 * 1024
MAX_BACKLOG = 1024 * 1024
ROOM = "room"
SNAPSHOT_VERSION = 1


class Chat(sandsock.LineHandler):
    max_line = MAX_LINE
    keep_ends = True

    def __init__(self):
        self.members = {}  # Conn -> None: a dict keeps the order they joined
        self.subscription = None
        self.origin = os.urandom(8)

    def on_accept(self, conn):
        if self.subscription is None:
            self.subscription = sandsock.subscribe(ROOM)
        self.members[conn] = None

    def on_line(self, sender, line):
        sandsock.publish(ROOM, self.origin + sender.id.to_bytes(8, "little") + line)

    def on_message(self, subscription, message):
        ours = message[:8] == self.origin
        sender = int.from_bytes(message[8:16], "little") if ours else None
        self.relay(sender, message[16:])

    def relay(self, sender, line):
        for receiver in self.members:
            if receiver.id != sender:
                receiver.write(line)
                if receiver.queued > MAX_BACKLOG:
                    # A graceful close would wait for a backlog that a receiver
                    # that does not read never drains.
                    receiver.abort()

    def snapshot(self):
        # Version 1: the origin.
        return bytes([SNAPSHOT_VERSION]) + self.origin

    def restore(self, data):
        if data[0] != SNAPSHOT_VERSION or len(data) != 9:
            return f"not a chat snapshot ({len(data)} bytes, version {data[0]})"
        self.origin = bytes(data[1:])
        return None

    def on_close(self, conn, reason):
        self.members.pop(conn, None)

    def on_shutdown(self):
        # Relayed lines are queued already, and a graceful close sends them.
        sandsock.close_all()


WitWorld, State = sandsock.serve(Chat())
