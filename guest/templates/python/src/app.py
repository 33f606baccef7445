"""An HTTP/1.1 hello: every request (a head ending in an empty line; bodies are
not expected) is answered `200 hello`, on the same connection. Start from here."""

import sandsock

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
# A head longer than this is refused: a client cannot make the guest hold more.
MAX_HEAD = 8 * 1024


class Hello(sandsock.Handler):
    def on_data(self, conn, data):
        # `data` starts with what the last call gave back with `unread` (a request
        # split across chunks); the SDK keeps that across a hot swap.
        answers = 0
        start = 0
        while True:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                break
            start = end + 4
            answers += 1
        if answers:
            # One write for every request of the chunk (pipelining).
            conn.write(ANSWER * answers)
        rest = data[start:]
        if len(rest) > MAX_HEAD:
            conn.write(TOO_LARGE)
            conn.close()
        elif rest:
            conn.unread(rest)


WitWorld, State = sandsock.serve(Hello())
