"""The HTTP/1.1 logic of the ``http`` example, with no I/O: request bytes in,
response bytes out. Plain Python (no parser library), the same behaviour as the
Rust example's ``http.rs``:

- every ``GET`` is answered ``200 OK`` with ``Content-Type: text/plain`` and the
  body ``hello\\n``; every ``HEAD`` with the same head and no body; any other
  method with ``405`` (``Allow: GET, HEAD``), its body (``Content-Length``) read
  and skipped;
- HTTP/1.1 keeps the connection by default, HTTP/1.0 only with
  ``Connection: keep-alive``; ``Connection: close`` is honoured and echoed;
- pipelined requests are answered in order; a request split anywhere waits for
  the rest; empty lines before a request are ignored (RFC 9112 section 2.2, as
  httparse does: a client may send CRLF after a POST body) but count toward
  ``MAX_HEAD``; a head ends at its first empty line (CRLF or bare LF);
- a malformed request gets ``400 Bad Request`` (body ``bad request\\n``) and the
  connection closes; a head over ``MAX_HEAD`` bytes or ``MAX_HEADERS`` fields gets
  ``431``, a body over ``MAX_BODY`` ``413``, ``Transfer-Encoding`` ``501``.
"""

import re

MAX_HEAD = 16 * 1024
MAX_HEADERS = 32
MAX_BODY = 64 * 1024
HELLO = b"hello\n"

# tchar (RFC 9110): what a method and a header name are made of.
_TCHAR = bytes(b for b in range(33, 127) if b not in b'"(),/:;<=>?@[\\]{}')
_VERSIONS = {b"HTTP/1.1": False, b"HTTP/1.0": True}  # -> is HTTP/1.0


def _response(status, body, connection=b"", extra=b"", send_body=True):
    head = (b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + connection + extra + b"\r\n")
    return head + body if send_body else head


_CONNECTION = (b"", b"Connection: keep-alive\r\n", b"Connection: close\r\n")
_DEFAULT, _KEEP_ALIVE, _CLOSE = 0, 1, 2
_CLOSE_HDR = _CONNECTION[_CLOSE]

BAD_REQUEST = _response(b"400 Bad Request", b"bad request\n", _CLOSE_HDR)
BODY_TOO_LARGE = _response(b"413 Content Too Large", b"request body too large\n", _CLOSE_HDR)
HEAD_TOO_LARGE = _response(b"431 Request Header Fields Too Large",
                           b"request header fields too large\n", _CLOSE_HDR)
NOT_IMPLEMENTED = _response(b"501 Not Implemented", b"transfer-encoding not supported\n",
                            _CLOSE_HDR)


class Responses:
    """Every response for one ``GET`` body, built once: [method][connection]."""

    def __init__(self, body=HELLO):
        self.get = [_response(b"200 OK", body, c) for c in _CONNECTION]
        self.head = [_response(b"200 OK", body, c, send_body=False) for c in _CONNECTION]
        self.other = [_response(b"405 Method Not Allowed", b"method not allowed\n", c,
                                b"Allow: GET, HEAD\r\n") for c in _CONNECTION]


HELLO_RESPONSES = Responses()

INCOMPLETE = None

# Empty lines before a request; the end of a head (the first empty line).
_EOL = (b"\n", b"\r")
_EMPTY_LINES = re.compile(rb"(?:\r?\n)*")
_HEAD_END = re.compile(rb"\n\r?\n")


def _bad_prefix(buf, pos):
    """Whether an unfinished head at ``buf[pos:]`` (past any empty lines) is
    already malformed (so that garbage is refused without waiting for a blank line
    that may never come)."""
    if pos == len(buf) - 1 and buf[pos] == 13:
        return False  # a CR: the LF of an empty line may follow
    line_end = buf.find(b"\n", pos)
    if line_end < 0:
        space = buf.find(b" ", pos)
        method = buf[pos:space if space >= 0 else len(buf)]
        return bool(method.translate(None, _TCHAR)) or (space == pos)
    return _request_line(buf[pos:line_end].rstrip(b"\r")) is None


def _request_line(line):
    """(method, is_http10) of a request line, or None if it is malformed."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if not method or method.translate(None, _TCHAR) or not target:
        return None
    http10 = _VERSIONS.get(version)
    if http10 is None:
        return None
    return method, http10


def answer_one(buf, pos, out, responses=HELLO_RESPONSES, last=False):
    """Answers the request at ``buf[pos:]``, appending its response to ``out``.
    Returns ``INCOMPLETE`` (None: nothing appended), or ``(consumed, close,
    rejected)``."""
    start = _EMPTY_LINES.match(buf, pos).end() if buf.startswith(_EOL, pos) else pos
    found = _HEAD_END.search(buf, start)
    if found is None:
        if len(buf) - pos > MAX_HEAD:
            out.append(HEAD_TOO_LARGE)
            return 0, True, True
        if _bad_prefix(buf, start):
            out.append(BAD_REQUEST)
            return 0, True, True
        return INCOMPLETE
    end, head_end = found.span()
    head_len = head_end - pos  # with the empty lines before it
    head = buf[start:end]  # its last line may end with the CR of its CRLF
    if head_len > MAX_HEAD:
        out.append(HEAD_TOO_LARGE)
        return 0, True, True
    lines = head.split(b"\n")
    request = _request_line(lines[0].rstrip(b"\r"))
    if request is None:
        out.append(BAD_REQUEST)
        return 0, True, True
    method, http10 = request
    if len(lines) - 1 > MAX_HEADERS:
        out.append(HEAD_TOO_LARGE)
        return 0, True, True
    length = None
    close_asked = keep_alive_asked = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TCHAR):
            out.append(BAD_REQUEST)
            return 0, True, True
        value = value.strip(b" \t\r")
        lname = name.lower()
        if lname == b"content-length":
            if not value.isdigit():
                out.append(BAD_REQUEST)
                return 0, True, True
            n = int(value) if len(value) < 19 else MAX_BODY + 1
            if length is not None and n != length:
                # Two lengths make the framing ambiguous (request smuggling).
                out.append(BAD_REQUEST)
                return 0, True, True
            length = n
        elif lname == b"transfer-encoding":
            out.append(NOT_IMPLEMENTED)
            return 0, True, True
        elif lname == b"connection":
            for option in value.lower().split(b","):
                option = option.strip(b" \t")
                if option == b"close":
                    close_asked = True
                elif option == b"keep-alive":
                    keep_alive_asked = True
    if length is None:
        length = 0
    elif length > MAX_BODY:
        out.append(BODY_TOO_LARGE)
        return 0, True, True
    consumed = head_len + length
    if len(buf) - pos < consumed:
        return INCOMPLETE
    close = last or close_asked or (http10 and not keep_alive_asked)
    connection = _CLOSE if close else (_KEEP_ALIVE if http10 else _DEFAULT)
    if method == b"GET":
        out.append(responses.get[connection])
    elif method == b"HEAD":
        out.append(responses.head[connection])
    else:
        out.append(responses.other[connection])
    return consumed, close, False


def answer_all(buf, out, responses=HELLO_RESPONSES, last=False):
    """Answers every complete request in ``buf``, in order, appending the responses
    to ``out``. Returns ``(consumed, close, rejected)``: the bytes the answered
    requests took (the rest is the start of an unfinished one), whether to close
    once the responses are sent (ignoring the rest), and whether the last request
    was refused. With ``last``, the first request answered is the last (it says
    ``Connection: close``)."""
    pos = 0
    size = len(buf)
    while pos < size:
        outcome = answer_one(buf, pos, out, responses, last)
        if outcome is INCOMPLETE:
            break
        n, close, rejected = outcome
        pos += n
        if close:
            return pos, True, rejected
    return pos, False, False
