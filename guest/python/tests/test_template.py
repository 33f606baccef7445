"""The hello app `host new NAME --lang python` starts a project from
(guest/templates/python/src/app.py), against the scripted host: it answers a request
`200 hello`, one request split across reads, and pipelined ones."""

import importlib.util
import os
import sys
import unittest
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import sandsock  # noqa: E402
from sandsock.runtime import Runtime as SdkRuntime  # noqa: E402
import fakehost as fh  # noqa: E402
from fakehost import Accepted, ReadData, Readable  # noqa: E402

# The SDK's runtime, taking batches in the tests' words (see fakehost.batch).
Runtime = fh.test_runtime(SdkRuntime)

APP = os.path.join(os.path.dirname(__file__), "..", "..", "templates", "python", "src", "app.py")
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def load_app():
    """The template's module, its `sandsock.serve` (which needs a component build)
    stubbed out."""
    spec = importlib.util.spec_from_file_location("sandsock_template_app", APP)
    app = importlib.util.module_from_spec(spec)
    with mock.patch.object(sandsock, "serve", return_value=(None, None)):
        spec.loader.exec_module(app)
    return app


class TemplateTests(unittest.TestCase):
    def setUp(self):
        self.host = fh.FakeHost()
        self.rt = Runtime(load_app().Hello(), self.host)
        self.rt.handle([Accepted(1)])

    def send(self, *chunks):
        for chunk in chunks:
            self.host.conn(1).reads.append(ReadData(chunk))
            self.rt.handle([Readable(1)])
        return bytes(self.host.conn(1).written)

    def test_a_request_is_answered_200_hello(self):
        self.assertEqual(self.send(GET), OK)
        self.assertFalse(self.host.conn(1).closed)

    def test_a_request_split_across_reads_is_answered_once_whole(self):
        self.assertEqual(self.send(GET[:10]), b"")
        self.assertEqual(self.send(GET[10:]), OK)

    def test_pipelined_requests_are_answered_in_one_write(self):
        self.assertEqual(self.send(GET * 3), OK * 3)
        self.assertEqual(self.host.conn(1).writes, [len(OK) * 3])

    def test_a_head_too_long_is_refused_and_closed(self):
        out = self.send(b"GET / HTTP/1.1\r\nX: " + b"a" * (9 * 1024))
        self.assertTrue(out.startswith(b"HTTP/1.1 431 "), out)
        self.assertTrue(self.host.conn(1).closed)


if __name__ == "__main__":
    unittest.main()
