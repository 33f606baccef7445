"""http: an HTTP/1.1 server answering every GET with ``hello\\n``.

The HTTP itself is in ``http11.py`` (no I/O, unit-tested in plain CPython); this
file feeds it each connection's bytes and writes the responses back. A request
split across chunks is given back with ``conn.unread`` and completed by the next
chunk (the SDK carries it across a hot swap, too).
"""

import sandsock

import http11


class Hello(sandsock.Handler):
    def __init__(self, body=http11.HELLO):
        self.responses = http11.Responses(body)
        self.shutting_down = False

    def on_data(self, conn, data):
        out = []
        consumed, close, _rejected = http11.answer_all(
            data, out, self.responses, self.shutting_down)
        if out:
            conn.write(b"".join(out))
        if close:
            # Graceful: the responses go out first. The host lingers (reads and
            # drops) if the refused request is still arriving, so its reset cannot
            # destroy the answer.
            conn.close()
        elif consumed < len(data):
            if len(data) - consumed > http11.MAX_HEAD + http11.MAX_BODY:
                conn.close()  # cannot happen: http11 refuses before; a safety net
            else:
                conn.unread(data[consumed:])

    def on_shutdown(self):
        # Idle connections (holding nothing, or only the empty lines a client may
        # send after a body) close now; one with a request under way gets it
        # answered with `Connection: close`, and closes then.
        self.shutting_down = True
        for conn in sandsock.conns():
            if not conn.held.lstrip(b"\r\n"):
                conn.close()


WitWorld, State = sandsock.serve(Hello())
