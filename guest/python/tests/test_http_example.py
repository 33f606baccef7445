"""The http example's parser (examples/http/http11.py), as the Rust example's
http.rs tests it."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "http"))

import http11  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"


def answer(text, last=False):
    out = []
    outcome = http11.answer_all(text.encode("latin-1"), out, last=last)
    return outcome, b"".join(out).decode("latin-1")


class HttpTests(unittest.TestCase):
    def test_get(self):
        (consumed, close, rejected), out = answer("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((consumed, close, rejected), (27, False, False))
        self.assertEqual(out.encode(), OK)

    def test_head_has_no_body(self):
        _, out = answer("HEAD /x HTTP/1.1\r\n\r\n")
        self.assertEqual(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n")

    def test_other_methods_get_405_and_their_body_is_skipped(self):
        req = "DELETE / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n"
        (consumed, close, _), out = answer(req)
        self.assertEqual(consumed, len(req))
        self.assertTrue(out.startswith("HTTP/1.1 405 Method Not Allowed\r\n"))
        self.assertIn("\r\nAllow: GET, HEAD\r\n", out)
        self.assertTrue(out.endswith("hello\n"))

    def test_connection_close_is_honoured(self):
        (_, close, _), out = answer("GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n")
        self.assertTrue(close)
        self.assertIn("\r\nConnection: close\r\n", out)

    def test_http10(self):
        (_, close, _), out = answer("GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(close)
        (_, close, _), out = answer("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.assertFalse(close)
        self.assertIn("\r\nConnection: keep-alive\r\n", out)

    def test_pipelining(self):
        req = "GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /d HT"
        (consumed, close, _), out = answer(req)
        self.assertEqual(consumed, len(req) - len("GET /d HT"))
        self.assertFalse(close)
        self.assertEqual(out.count("HTTP/1.1 200 OK"), 3)
        self.assertEqual(out.count("hello\n"), 2)

    def test_pipelining_stops_at_a_close(self):
        req = "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        (consumed, close, _), out = answer(req)
        self.assertTrue(close)
        self.assertEqual(out.count("HTTP/1.1"), 1)

    def test_split_anywhere_is_incomplete(self):
        req = "GET / HTTP/1.1\r\nHost: example\r\n\r\n"
        for end in range(len(req)):
            (consumed, close, _), out = answer(req[:end])
            self.assertEqual((consumed, close, out), (0, False, ""), f"after {end} bytes")

    def test_bare_lf(self):
        (consumed, _, _), out = answer("GET / HTTP/1.1\nHost: x\n\n")
        self.assertEqual(out.encode(), OK)

    def test_empty_lines_before_a_request_are_ignored(self):
        # RFC 9112 section 2.2, as httparse does for the Rust example.
        for req in ["\r\nGET / HTTP/1.1\r\n\r\n", "\n\r\n\nGET / HTTP/1.1\r\n\r\n"]:
            (consumed, close, rejected), out = answer(req)
            self.assertEqual((consumed, close, rejected, out.encode()),
                             (len(req), False, False, OK), repr(req))
        # A client's CRLF after a POST body.
        req = "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\nGET / HTTP/1.1\r\n\r\n"
        (consumed, close, _), out = answer(req)
        self.assertEqual((consumed, close), (len(req), False))
        self.assertTrue(out.startswith("HTTP/1.1 405 "))
        self.assertTrue(out.endswith(OK.decode()))
        self.assertEqual(out.count("HTTP/1.1 "), 2)
        # Empty lines alone wait for the request (a lone CR may be half of one)...
        for req in ["\r\n", "\r", "\n\r\n\r", "\r\nGE"]:
            self.assertEqual(answer(req), ((0, False, False), ""), repr(req))
        # ...but a CR must be followed by LF, and they count toward the head limit.
        self.assertTrue(answer("\r\rGET / HTTP/1.1\r\n\r\n")[1].startswith("HTTP/1.1 400 "))
        self.assertTrue(answer("\r\r")[1].startswith("HTTP/1.1 400 "))
        self.assertIn(" 431 ", answer("\r\n" * (http11.MAX_HEAD // 2 + 1))[1])
        self.assertIn(" 431 ", answer("\r\n" * (http11.MAX_HEAD // 4) + "GET / HTTP/1.1\r\n"
                                      + "X: " + "a" * (http11.MAX_HEAD // 2) + "\r\n\r\n")[1])

    def test_the_head_ends_at_the_first_empty_line(self):
        for req, n in [("GET / HTTP/1.1\nHost: x\n\r\n", 1),
                       ("GET / HTTP/1.1\n\nGET / HTTP/1.1\r\n\r\n", 2),
                       ("GET / HTTP/1.1\r\n\nGET / HTTP/1.1\n\r\n", 2),
                       ("POST / HTTP/1.1\nContent-Length: 4\n\n\r\n\r\nGET / HTTP/1.1\n\n", 2)]:
            (consumed, close, rejected), out = answer(req)
            self.assertEqual((consumed, close, rejected), (len(req), False, False), repr(req))
            self.assertEqual(out.count("HTTP/1.1 "), n, repr(req))
            self.assertTrue(out.endswith(OK.decode()), repr(req))

    def test_bad_requests(self):
        for req in ["\x16\x03\x01 hello\r\n\r\n", "GET /\r\n\r\n", "GET / HTTP/2.0\r\n\r\n",
                    "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                    "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
                    "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "G(T / HTTP/1.1",
                    "\x16\x03"]:
            (_, close, rejected), out = answer(req)
            self.assertTrue(close and rejected, req)
            self.assertTrue(out.startswith("HTTP/1.1 400 Bad Request\r\n"), req)
            self.assertIn("\r\nConnection: close\r\n", out)
            self.assertTrue(out.endswith("\r\n\r\nbad request\n"))

    def test_limits(self):
        long = "GET / HTTP/1.1\r\nX-Long: " + "a" * http11.MAX_HEAD
        self.assertIn(" 431 ", answer(long)[1])
        many = "GET / HTTP/1.1\r\n" + "".join(f"X-{i}: y\r\n" for i in range(33)) + "\r\n"
        self.assertIn(" 431 ", answer(many)[1])
        self.assertIn(" 413 ", answer("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n")[1])
        self.assertIn(" 501 ", answer("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")[1])

    def test_last(self):
        (_, close, _), out = answer("GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", last=True)
        self.assertTrue(close)
        self.assertEqual(out.count("HTTP/1.1 200"), 1)
        self.assertIn("Connection: close", out)


if __name__ == "__main__":
    unittest.main()
