"""The SDK's logic against a scripted host (no wasm): run from the repo root with
``python3 -B -m unittest discover -s guest/python/tests``."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import sandsock  # noqa: E402
from sandsock import runtime as rtmod  # noqa: E402
from sandsock.runtime import Runtime as SdkRuntime  # noqa: E402
import fakehost as fh  # noqa: E402
from fakehost import (Accepted, Adopted, Connected, Hangup, HangupInfo, ReadData,  # noqa: E402
                      ReadEof, ReadFailed, Readable, Shutdown, Timer, Writable)

# The SDK's runtime, taking batches in the tests' words (see fakehost.batch).
Runtime = fh.test_runtime(SdkRuntime)


class Recorder(sandsock.Handler):
    """Records every call; echoes unless told otherwise."""

    def __init__(self, echo=True):
        self.seen = []
        self.echo = echo

    def on_accept(self, conn):
        self.seen.append(("accept", conn.id))

    def on_connected(self, conn):
        self.seen.append(("connected", conn.id))

    def on_data(self, conn, data):
        self.seen.append(("data", conn.id, data))
        if self.echo:
            conn.write(data)

    def on_eof(self, conn):
        self.seen.append(("eof", conn.id))
        super().on_eof(conn)

    def on_writable(self, conn):
        self.seen.append(("writable", conn.id))

    def on_close(self, conn, reason):
        self.seen.append(("close", conn.id, reason))

    def on_timer(self, timer_id):
        self.seen.append(("timer", timer_id))

    def on_shutdown(self):
        self.seen.append(("shutdown",))

    def closes(self, handle=None):
        return [s for s in self.seen if s[0] == "close" and (handle is None or s[1] == handle)]


def make(handler=None):
    host = fh.FakeHost()
    handler = handler or Recorder()
    return Runtime(handler, host), host, handler


def accept(rt, host, *handles):
    """The host hands the connections out, then tells the guest."""
    for h in handles:
        host.conn(h)
    rt.handle([Accepted(h) for h in handles])


class WriteTests(unittest.TestCase):
    def test_echo_and_one_write_per_connection_per_call(self):
        rt, host, h = make()

        class Twice(Recorder):
            def on_data(self, conn, data):
                conn.write(data)
                conn.write(bytearray(b"!"))
                conn.write(memoryview(b"?"))

        rt, host, h = make(Twice())
        accept(rt, host, 1, 2)
        host.conn(1).reads.append(ReadData(b"ab"))
        host.conn(2).reads.append(ReadData(b"cd"))
        rt.handle([Readable(1), Readable(2)])
        self.assertEqual(bytes(host.conn(1).written), b"ab!?")
        self.assertEqual(bytes(host.conn(2).written), b"cd!?")
        self.assertEqual(host.conn(1).writes, [4], "coalesced into one host write")
        self.assertEqual(host.conn(2).writes, [4])
        self.assertEqual(host.conn(1).interest, (True, False))

    def test_a_str_is_refused(self):
        rt, host, h = make()
        accept(rt, host, 1)
        conn = rt.conns()[0]
        with self.assertRaises(TypeError):
            conn.write("text")

    def test_partial_accept_keeps_the_rest_and_flushes_on_writable(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).room = 3
        host.conn(1).reads.append(ReadData(b"abcdefgh"))
        rt.handle([Readable(1)])
        conn = rt.conns()[0]
        self.assertEqual(bytes(host.conn(1).written), b"abc")
        self.assertEqual(conn.queued, 5)
        self.assertEqual(host.conn(1).interest, (True, True), "write interest while queued")
        # More data while blocked: queued behind, no host write attempted.
        host.conn(1).reads.append(ReadData(b"ij"))
        rt.handle([Readable(1)])
        self.assertEqual(host.conn(1).writes, [8], "no write while the host pushes back")
        self.assertEqual(conn.queued, 7)
        host.conn(1).room = 100
        rt.handle([Writable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"abcdefghij")
        self.assertEqual(conn.queued, 0)
        self.assertEqual(host.conn(1).interest, (True, False))
        self.assertEqual(h.seen.count(("writable", 1)), 1)

    def test_would_block_then_writable(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).room = 0
        host.conn(1).reads.append(ReadData(b"xyz"))
        rt.handle([Readable(1)])
        self.assertEqual(rt.conns()[0].queued, 3)
        rt.handle([Writable(1)])  # still no room
        self.assertEqual(rt.conns()[0].queued, 3)
        self.assertNotIn(("writable", 1), h.seen)
        host.conn(1).room = 10
        rt.handle([Writable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"xyz")
        self.assertIn(("writable", 1), h.seen)

    def test_no_on_writable_without_pushback(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).reads.append(ReadData(b"x"))
        rt.handle([Readable(1), Writable(1)])
        self.assertNotIn(("writable", 1), h.seen)

    def test_large_queue_goes_out_in_bounded_writes(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).room = 0
        conn = rt.conns()[0]
        conn.write(b"a" * (3 * sandsock.WRITE_CHUNK + 10))
        rt.handle([])
        host.conn(1).room = 1 << 30
        rt.handle([Writable(1)])
        self.assertTrue(all(n <= sandsock.WRITE_CHUNK for n in host.conn(1).writes))
        self.assertEqual(len(host.conn(1).written), 3 * sandsock.WRITE_CHUNK + 10)

    def test_set_interest_writable_asks_for_room(self):
        class Streamer(Recorder):
            def on_writable(self, conn):
                super().on_writable(conn)
                conn.write(b"more")
                conn.set_interest(writable=False)

        rt, host, h = make(Streamer())
        accept(rt, host, 1)
        rt.conns()[0].set_interest(readable=True, writable=True)
        rt.handle([])
        self.assertEqual(host.conn(1).interest, (True, True))
        rt.handle([Writable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"more")
        self.assertEqual(host.conn(1).interest, (True, False))


class CloseTests(unittest.TestCase):
    def test_close_waits_for_the_queue(self):
        class CloseAfter(Recorder):
            def on_data(self, conn, data):
                conn.write(data)
                conn.close()
                conn.write(b"dropped")

        rt, host, h = make(CloseAfter())
        accept(rt, host, 1)
        host.conn(1).room = 4
        host.conn(1).reads.append(ReadData(b"0123456789"))
        rt.handle([Readable(1)])
        self.assertFalse(host.conn(1).closed)
        self.assertEqual(h.closes(), [])
        self.assertEqual(host.conn(1).interest, (False, True), "reading stops at close()")
        host.conn(1).reads.append(ReadData(b"more"))
        rt.handle([Readable(1)])
        self.assertEqual(host.conn(1).read_calls, [fh.MAX_READ], "not read while closing")
        host.conn(1).room = 100
        rt.handle([Writable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"0123456789")
        self.assertTrue(host.conn(1).closed)
        self.assertEqual(h.closes(), [("close", 1, None)])
        self.assertNotIn(("writable", 1), h.seen, "a pending close is not on_writable")

    def test_close_flushes_what_this_call_wrote(self):
        class Reply(Recorder):
            def on_data(self, conn, data):
                conn.write(b"bye")
                conn.close()

        rt, host, h = make(Reply())
        accept(rt, host, 1)
        host.conn(1).reads.append(ReadData(b"x"))
        rt.handle([Readable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"bye")
        self.assertTrue(host.conn(1).closed)
        self.assertEqual(h.closes(), [("close", 1, None)])
        write_at = host.calls.index(("write", 1))
        self.assertLess(write_at, host.calls.index(("close", 1)))

    def test_empty_close_is_immediate_and_on_close_follows_the_event(self):
        class Closer(Recorder):
            def on_accept(self, conn):
                super().on_accept(conn)
                conn.close()
                self.seen.append(("after close()", conn.id))

        rt, host, h = make(Closer())
        host.conn(1)  # handed out
        rt.handle([Accepted(1), Timer(7)])
        self.assertEqual(h.seen, [("accept", 1), ("after close()", 1), ("close", 1, None),
                                  ("timer", 7)])
        self.assertTrue(host.conn(1).closed)

    def test_eof_closes_after_the_echo_drains(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).room = 2
        host.conn(1).reads.extend([ReadData(b"abcd")])
        rt.handle([Readable(1)])
        host.conn(1).reads.append(ReadEof())
        rt.handle([Readable(1)])
        self.assertIn(("eof", 1), h.seen)
        self.assertFalse(host.conn(1).closed)
        host.conn(1).room = 10
        rt.handle([Writable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"abcd")
        self.assertTrue(host.conn(1).closed)

    def test_abort_drops_the_queue(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).room = 0
        conn = rt.conns()[0]
        conn.write(b"stuck")
        rt.handle([])
        conn.abort()
        rt.handle([])
        self.assertTrue(host.conn(1).closed)
        self.assertEqual(conn.queued, 0)
        self.assertEqual(h.closes(), [("close", 1, None)])

    def test_abort_sends_what_this_call_wrote(self):
        class Refuse(Recorder):
            def on_data(self, conn, data):
                conn.write(b"ERR ")
                conn.write(b"bad\n")
                conn.abort()
                conn.write(b"dropped")

        rt, host, h = make(Refuse())
        accept(rt, host, 1, 2)
        host.conn(2).room = 3  # takes part of it: the rest is dropped
        host.conn(1).reads.append(ReadData(b"x"))
        host.conn(2).reads.append(ReadData(b"x"))
        rt.handle([Readable(1), Readable(2)])
        self.assertEqual(bytes(host.conn(1).written), b"ERR bad\n")
        self.assertEqual(bytes(host.conn(2).written), b"ERR")
        for c in (1, 2):
            self.assertTrue(host.conn(c).closed)
            self.assertEqual(host.calls.count(("write", c)), 1)
            self.assertLess(host.calls.index(("write", c)), host.calls.index(("close", c)))
            self.assertEqual(h.closes(c), [("close", c, None)])

    def test_abort_while_connecting_sends_nothing(self):
        rt, host, h = make()
        rt.handle([])
        conn = sandsock.connect("127.0.0.1:1")
        conn.write(b"never")
        conn.abort()
        rt.handle([])
        self.assertNotIn(("write", conn.id), host.calls)
        self.assertTrue(host.conn(conn.id).closed)
        self.assertEqual(h.closes(), [("close", conn.id, None)])

    def test_nothing_reaches_the_host_after_a_close_in_on_connected_or_on_adopted(self):
        class CloseAtOnce(Recorder):
            def on_connected(self, conn):
                super().on_connected(conn)
                conn.set_interest(writable=True)
                conn.close()

            def on_adopted(self, conn):
                conn.write(b"x")
                conn.shutdown_write()
                conn.set_interest(writable=True)
                conn.abort()

        rt, host, h = make(CloseAtOnce())
        rt.handle([])
        conn = sandsock.connect("127.0.0.1:1")
        host.conn(7)  # handed out
        rt.handle([Connected(conn.id), Adopted(7)])
        self.assertNotIn(("writable", conn.id), h.seen)
        self.assertNotIn(("writable", 7), h.seen)
        for c in (conn.id, 7):
            calls = [call for call in host.calls if call[1] == c]
            self.assertEqual(calls[-1], ("close", c), f"nothing after close: {calls}")
            self.assertEqual(h.closes(c), [("close", c, None)])
        self.assertNotIn(("shutdown_write", 7), host.calls)
        self.assertEqual((conn.closing, conn.queued), (False, 0))

    def test_shutdown_write_after_the_queue(self):
        rt, host, h = make()
        accept(rt, host, 1)
        conn = rt.conns()[0]
        host.conn(1).room = 1
        conn.write(b"ab")
        conn.shutdown_write()
        conn.write(b"dropped")
        rt.handle([])
        self.assertFalse(host.conn(1).shut_down)
        host.conn(1).room = 10
        rt.handle([Writable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"ab")
        self.assertTrue(host.conn(1).shut_down)
        self.assertTrue(conn.open, "half-closed, still open")


class OnCloseOnceTests(unittest.TestCase):
    def test_hangup_while_a_close_waits(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).room = 0
        conn = rt.conns()[0]
        conn.write(b"x")
        conn.close()
        rt.handle([])
        rt.handle([Hangup(HangupInfo(1, "reset")), Hangup(HangupInfo(1, "reset"))])
        rt.handle([Writable(1), Readable(1)])
        conn.close()
        conn.abort()
        self.assertEqual(h.closes(), [("close", 1, "reset")])

    def test_a_failed_read_brings_nothing_until_the_hangup(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).reads.append(ReadFailed("reset"))
        rt.handle([Readable(1)])
        self.assertEqual(h.closes(), [], "the hangup follows")
        self.assertEqual([s for s in h.seen if s[0] == "data"], [])
        rt.handle([Hangup(HangupInfo(1, "reset"))])
        self.assertEqual(h.closes(), [("close", 1, "reset")])

    def test_write_failure_reset(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).write_error = "reset"
        host.conn(1).reads.append(ReadData(b"x"))
        rt.handle([Readable(1)])
        self.assertEqual(rt.conns()[0].queued, 0)
        rt.handle([Hangup(HangupInfo(1, "reset"))])
        self.assertEqual(h.closes(), [("close", 1, "reset")])

    def test_close_of_others_from_on_close(self):
        class Room(Recorder):
            def on_close(self, conn, reason):
                super().on_close(conn, reason)
                for other in sandsock.conns():
                    other.write(b"left\n")
                    other.close()

        rt, host, h = make(Room())
        accept(rt, host, 1, 2, 3)
        rt.handle([Hangup(HangupInfo(1, "reset"))])
        self.assertEqual(sorted(h.closes()), [("close", 1, "reset"), ("close", 2, None),
                                              ("close", 3, None)])
        self.assertEqual(bytes(host.conn(2).written), b"left\n")


class BackpressureTests(unittest.TestCase):
    def test_reading_pauses_at_high_water_and_resumes_below_low_water(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).room = 0
        conn = rt.conns()[0]
        conn.write(b"q" * (sandsock.HIGH_WATER - 10))
        host.conn(1).reads.append(ReadData(b"z" * 100))
        rt.handle([Readable(1)])
        self.assertGreaterEqual(conn.queued, sandsock.HIGH_WATER)
        self.assertEqual(host.conn(1).interest, (False, True))
        reads = len(host.conn(1).read_calls)
        host.conn(1).reads.append(ReadData(b"y"))
        rt.handle([Readable(1)])
        self.assertEqual(len(host.conn(1).read_calls), reads, "paused: not read")
        # Drain to just above LOW_WATER: still paused.
        host.conn(1).room = conn.queued - sandsock.LOW_WATER - 1
        rt.handle([Writable(1)])
        self.assertEqual(host.conn(1).interest, (False, True))
        host.conn(1).room = 10
        rt.handle([Writable(1)])
        self.assertEqual(host.conn(1).interest, (True, True))
        host.conn(1).room = 1 << 30
        rt.handle([Writable(1), Readable(1)])
        self.assertEqual(host.conn(1).interest, (True, False))
        self.assertTrue(bytes(host.conn(1).written).endswith(b"y"))

    def test_pause_and_resume_reading(self):
        rt, host, h = make()
        accept(rt, host, 1)
        conn = rt.conns()[0]
        conn.pause_reading()
        rt.handle([])
        self.assertEqual(host.conn(1).interest, (False, False))
        host.conn(1).reads.append(ReadData(b"a"))
        rt.handle([Readable(1)])
        self.assertEqual(host.conn(1).read_calls, [])
        conn.resume_reading()
        rt.handle([])  # the host hears of it at the end of a call
        self.assertEqual(host.conn(1).interest, (True, False))
        rt.handle([Readable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"a")

    def test_input_held_by_a_queue_the_flush_drains_is_handed_over_in_the_call(self):
        class Broadcast(Recorder):
            def on_timer(self, timer_id):
                super().on_timer(timer_id)
                sandsock.conns()[0].write(b"b" * sandsock.HIGH_WATER)

        rt, host, h = make(Broadcast(echo=False))
        accept(rt, host, 1)
        host.conn(1).reads.append(ReadData(b"request"))
        # The write passes HIGH_WATER within the call, so the data after it is held;
        # the flush at the end drains the queue, and nothing else would bring it.
        rt.handle([Timer(1), Readable(1)])
        self.assertIn(("data", 1, b"request"), h.seen)
        self.assertEqual(host.conn(1).interest, (True, False))

    def test_input_that_came_while_paused_waits_for_resume(self):
        class PauseOnAccept(Recorder):
            def on_accept(self, conn):
                super().on_accept(conn)
                conn.pause_reading()

            def on_timer(self, timer_id):
                super().on_timer(timer_id)
                for conn in sandsock.conns():
                    conn.resume_reading()

        rt, host, h = make(PauseOnAccept())
        host.conn(1).reads.extend([ReadData(b"early"), ReadEof()])
        # The host read before it heard of the pause: the bytes are in this batch.
        rt.handle([Accepted(1), Readable(1)])
        self.assertEqual(h.seen, [("accept", 1)])
        self.assertEqual(host.conn(1).interest, (False, False))
        rt.handle([Readable(1)])
        self.assertEqual(host.conn(1).read_calls, [fh.MAX_READ], "paused: not read")
        rt.handle([Timer(7)])
        self.assertEqual(h.seen, [("accept", 1), ("timer", 7), ("data", 1, b"early")])
        rt.handle([Readable(1)])
        self.assertEqual(h.seen[-2:], [("eof", 1), ("close", 1, None)],
                         "what came after the held bytes follows them")

    def test_auto_pause_off(self):
        rt, host, h = make()
        accept(rt, host, 1)
        host.conn(1).room = 0
        conn = rt.conns()[0]
        conn.set_auto_pause(False)
        conn.write(b"q" * sandsock.HIGH_WATER * 2)
        rt.handle([])
        self.assertEqual(host.conn(1).interest, (True, True))

    def test_no_set_interest_call_when_nothing_changes(self):
        rt, host, h = make()
        accept(rt, host, 1)
        for _ in range(5):
            host.conn(1).reads.append(ReadData(b"abc"))
            rt.handle([Readable(1)])
        self.assertFalse([c for c in host.calls if c[0] == "set_interest"])


class EventOrderTests(unittest.TestCase):
    def test_events_in_order(self):
        rt, host, h = make()
        host.conn(2).reads.append(ReadData(b"hi"))
        host.conn(1).reads.append(ReadEof())
        rt.handle([Accepted(1), Accepted(2), Readable(2), Timer(9), Readable(1),
                   Hangup(HangupInfo(2, "reset")), Shutdown()])
        self.assertEqual(h.seen, [
            ("accept", 1), ("accept", 2), ("data", 2, b"hi"), ("timer", 9),
            ("eof", 1), ("close", 1, None), ("close", 2, "reset"), ("shutdown",),
        ])

    def test_unknown_and_duplicate_events_are_ignored(self):
        rt, host, h = make()
        rt.handle([Readable(5), Writable(5), Hangup(HangupInfo(5, "reset")), Connected(5)])
        rt.handle([Accepted(1), Accepted(1)])
        self.assertEqual(h.seen, [("accept", 1)])

    def test_handler_exceptions_propagate(self):
        class Boom(Recorder):
            def on_data(self, conn, data):
                raise RuntimeError("boom")

        rt, host, h = make(Boom())
        accept(rt, host, 1)
        host.conn(1).reads.append(ReadData(b"x"))
        with self.assertRaises(RuntimeError):
            rt.handle([Readable(1)])

    def test_unread_comes_first_next_time(self):
        class Want4(Recorder):
            def on_data(self, conn, data):
                self.seen.append(("data", conn.id, data))
                if len(data) < 4:
                    conn.unread(data)
                else:
                    conn.write(data)

        rt, host, h = make(Want4(echo=False))
        accept(rt, host, 1)
        for piece in (b"a", b"b", b"cd"):
            host.conn(1).reads.append(ReadData(piece))
            rt.handle([Readable(1)])
        self.assertEqual(bytes(host.conn(1).written), b"abcd")


class OutboundAndTimerTests(unittest.TestCase):
    def test_connect_holds_writes_until_connected(self):
        rt, host, h = make()
        conn = sandsock.connect("127.0.0.1:9")
        conn.write(b"hello")
        rt.handle([])
        self.assertEqual(host.conn(conn.id).writes, [])
        self.assertEqual(host.conn(conn.id).interest, (True, False))
        rt.handle([Connected(conn.id)])
        self.assertEqual(bytes(host.conn(conn.id).written), b"hello")
        self.assertEqual(h.seen, [("connected", conn.id), ("writable", conn.id)])

    def test_connect_refused_and_errors(self):
        rt, host, h = make()
        conn = sandsock.connect("127.0.0.1:9")
        rt.handle([Hangup(HangupInfo(conn.id, "refused"))])
        self.assertEqual(h.closes(), [("close", conn.id, "refused")])
        host.allow_connect = False
        with self.assertRaises(sandsock.IoError) as caught:
            sandsock.connect("10.0.0.1:80")
        self.assertEqual(caught.exception.reason, "not-permitted")

    def test_timers(self):
        rt, host, h = make()
        host.timer_limit = 1
        sandsock.set_timer(1, 50)
        with self.assertRaises(sandsock.IoError) as caught:
            sandsock.set_timer(2, 50)
        self.assertEqual(caught.exception.reason, "limit-exceeded")
        with self.assertRaises(sandsock.IoError):
            sandsock.set_timer(1, 86_400_001)
        sandsock.cancel_timer(1)
        self.assertEqual(host.timers, {})


class SnapshotTests(unittest.TestCase):
    def test_round_trip_with_queues_flags_and_handler_bytes(self):
        class Keeper(Recorder):
            def __init__(self):
                super().__init__()
                self.count = 0
                self.restored = None

            def snapshot(self):
                return b"\x01" + self.count.to_bytes(4, "little")

            def restore(self, data):
                if data[:1] != b"\x01":
                    return "unknown version"
                self.restored = int.from_bytes(data[1:5], "little")

            def on_adopted(self, conn):
                self.seen.append(("adopted", conn.id))
                conn.write(b"[new]")

        old_h = Keeper()
        rt, host, _ = make(old_h)
        accept(rt, host, 1, 2)
        old_h.count = 42
        host.conn(1).room = 3
        c1, c2 = rt.conns()
        c1.write(b"0123456789")
        c1.unread(b"partial")
        c2.pause_reading()
        rt.handle([])
        snap = rt.snapshot()

        new_h = Keeper()
        rt2, host2, _ = make(new_h)
        self.assertIsNone(rt2.restore(snap))
        self.assertEqual(new_h.restored, 42)
        host2.conn(1).reads.append(ReadData(b" line"))
        host2.conn(2)  # handed out
        rt2.handle([Adopted(1), Adopted(2), Readable(1)])
        self.assertEqual(bytes(host2.conn(1).written), b"3456789[new]partial line")
        self.assertIn(("data", 1, b"partial line"), new_h.seen)
        self.assertEqual(host2.conn(2).interest, (False, False), "paused carried over")
        said = [c for c in host2.calls if c[0] == "set_interest"]
        self.assertEqual(said[0], ("set_interest", 1, True, True),
                         "interest is said on adoption")

    def test_empty_and_bad_snapshots(self):
        rt, host, h = make()
        self.assertIsNone(rt.restore(b""))
        self.assertIn("could not read", rt.restore(b"garbage"))
        good_rt, ghost, _ = make()
        accept(good_rt, ghost, 1)
        good_rt.conns()[0].write(b"abc")
        good = good_rt.snapshot()
        for end in range(len(good)):
            fresh, _, _ = make()
            self.assertIsInstance(fresh.restore(good[:end]), (str, type(None)))
            if end:
                self.assertIsNotNone(fresh.restore(good[:end]), f"truncated at {end}")
        self.assertIsNotNone(make()[0].restore(good + b"x"))

    def test_handler_refusals(self):
        class Refuser(Recorder):
            def restore(self, data):
                raise sandsock.BadSnapshot("not mine")

        rt, host, h = make()
        h.snapshot = lambda: b"\x09"
        snap = rt.snapshot()
        new, host2, _ = make(Refuser())
        self.assertIn("not mine", new.restore(snap))
        # The connections still arrive.
        new.handle([Adopted(1)])
        self.assertEqual(len(new.conns()), 1)

    def test_a_connection_restored_but_hung_up_before_adoption(self):
        rt, host, h = make()
        accept(rt, host, 1)
        snap = rt.snapshot()
        new, host2, h2 = make()
        new.restore(snap)
        new.handle([Hangup(HangupInfo(1, "reset"))])
        self.assertEqual(h2.closes(), [("close", 1, "reset")])

    def test_writer_and_reader(self):
        w = sandsock.SnapshotWriter().u8(1).u32(7).u64(2**60).bytes(b"ab").str("é")
        r = sandsock.SnapshotReader(w.getvalue())
        self.assertEqual((r.u8(), r.u32(), r.u64(), r.bytes(), r.str()), (1, 7, 2**60, b"ab", "é"))
        r.finish()
        with self.assertRaises(sandsock.BadSnapshot):
            sandsock.SnapshotReader(b"\x05").u64()


class LineHandlerTests(unittest.TestCase):
    class Lines(sandsock.LineHandler):
        max_line = 8

        def __init__(self):
            self.lines = []

        def on_line(self, conn, line):
            self.lines.append(line)

    def feed(self, handler, *chunks):
        rt, host, _ = make(handler)
        accept(rt, host, 1)
        for chunk in chunks:
            host.conn(1).reads.append(ReadData(chunk))
            rt.handle([Readable(1)])
        return rt, host

    def test_lines_across_chunks_and_crlf(self):
        h = self.Lines()
        self.feed(h, b"ab", b"c\r\nde", b"f\n\n", b"g")
        self.assertEqual(h.lines, [b"abc", b"def", b""])

    def test_byte_by_byte(self):
        h = self.Lines()
        self.feed(h, *[bytes([b]) for b in b"one\ntwo\n"])
        self.assertEqual(h.lines, [b"one", b"two"])

    def test_keep_ends(self):
        h = self.Lines()
        h.keep_ends = True
        self.feed(h, b"a\r\nb\n")
        self.assertEqual(h.lines, [b"a\r\n", b"b\n"])

    def test_a_line_at_the_limit_passes_a_longer_one_is_refused(self):
        h = self.Lines()
        rt, host = self.feed(h, b"12345678\n123456789\nnext\n")
        self.assertEqual(h.lines, [b"12345678"])
        self.assertEqual(bytes(host.conn(1).written), b"ERROR line too long\n")
        self.assertTrue(host.conn(1).closed)

    def test_an_unfinished_line_too_long_is_refused(self):
        h = self.Lines()
        rt, host = self.feed(h, b"12345", b"6789")
        self.assertTrue(host.conn(1).closed)


if __name__ == "__main__":
    unittest.main()
