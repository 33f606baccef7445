"""The store and topics (contract 1.1) against the scripted host: operations
answer ids, answers come in ``on_store`` as ``Answer``s, messages in
``on_message``."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import sandsock  # noqa: E402
from sandsock.runtime import Runtime as SdkRuntime  # noqa: E402
import fakehost as fh  # noqa: E402

Runtime = fh.test_runtime(SdkRuntime)


class Keeper(sandsock.Handler):
    def __init__(self):
        self.answers = {}
        self.messages = []

    def on_store(self, op, answer):
        self.answers[op] = answer

    def on_message(self, subscription, message):
        self.messages.append((subscription, message))


class StoreTests(unittest.TestCase):
    def setUp(self):
        self.host = fh.FakeHost()
        self.handler = Keeper()
        self.rt = Runtime(self.handler, self.host)

    def deliver(self):
        self.rt.handle(*self.host.mail())

    def test_operations_answer_ids_and_their_answers_come_later(self):
        bucket = sandsock.open_bucket("kv")
        set_op = bucket.set("k", b"v")
        get_op = bucket.get("k")
        missing = bucket.get("nope")
        counter = bucket.increment("n", -3)
        self.assertEqual(self.handler.answers, {}, "nothing at once")
        self.deliver()
        answers = self.handler.answers
        self.assertTrue(answers[set_op].ok)
        self.assertEqual(answers[get_op].value, b"v")
        self.assertEqual(answers[missing].outcome, "not-found")
        self.assertIsNone(answers[missing].value)
        self.assertIsNone(answers[missing].error)
        self.assertEqual(answers[counter].number, -3)

    def test_an_error_and_a_page_of_keys_read_as_the_wit_says(self):
        from sandsock.store import Answer
        self.assertEqual(Answer(5, 0, b"").error, "namespace-full")
        self.assertEqual(Answer(99, 0, b"").outcome, "failed")
        page = b"".join(len(k).to_bytes(4, "little") + k for k in (b"a", b"bc"))
        listed = Answer(0, 1, page)
        self.assertEqual(listed.keys(), ["a", "bc"])
        self.assertTrue(listed.more)

    def test_a_bad_bucket_name_raises(self):
        with self.assertRaises(sandsock.StoreError) as raised:
            sandsock.open_bucket("a*")
        self.assertEqual(raised.exception.reason, "bad-name")

    def test_topics_publish_and_deliver(self):
        sub = sandsock.subscribe("room")
        sandsock.publish("room", b"hi")
        self.assertEqual(self.host.published, [("room", b"hi")])
        event = fh.Event(fh.MESSAGE, id=sub, start=0, len=2)
        self.rt.handle([event], b"hi")
        self.assertEqual(self.handler.messages, [(sub, b"hi")])


if __name__ == "__main__":
    unittest.main()
