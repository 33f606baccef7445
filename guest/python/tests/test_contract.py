"""The io contract, ``wit/io-cases.json``, run against the scripted host
(``fakehost.FakeHost``) as the implementation ``python-fake``: every case it can
run (its ``capabilities`` and the cases' ``except`` say which, as the table's
``about`` text defines), each on a fresh host. A fake host broken on purpose must
fail exactly the case that checks what was broken."""

import ipaddress
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))

import fakehost as fh  # noqa: E402

TABLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "wit", "io-cases.json")
ME = "python-fake"
AT_LEAST = 20  # cases run: 22 of the 34 in the table when this was written

# Handles: those of `conns` from 1 up, those a `connect` answers; `never` and
# `other` are never handed out (this fake has no other instances).
UNSEEN = {"never": 900_001, "other": 900_002}
ADDRESSES = {"$listening": "127.0.0.1:7", "$closed": "127.0.0.1:9"}


def load_table():
    with open(TABLE, encoding="utf-8") as f:
        return json.load(f)


def why_skipped(case, caps):
    """Why ``python-fake`` does not run ``case`` (the ``about`` text's rules), or None."""
    if ME in case.get("except", {}):
        return f"except: {case['except'][ME]}"
    steps = case["steps"]
    if not caps["events"] and any("turn" in s for s in steps):
        return "a turn (no events)"
    if not caps["room"] and any("room" in c for c in case.get("conns", {}).values()):
        return "a room (no room)"
    if not caps["connect"] and any(s.get("call") == "connect" and s["expect"] == "ok"
                                   for s in steps):
        return "a connect that expects ok (no connect)"
    return None


def is_ip_port(text):
    """An ``ip:port`` (IPv6 in brackets), as the contract's ``"ip:port"`` means."""
    if not isinstance(text, str):
        return False
    ip, colon, port = text.rpartition(":")
    if not colon or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return False
    try:
        ipaddress.ip_address(ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip)
    except ValueError:
        return False
    return ":" not in ip or ip.startswith("[")


def payload(step, text_key, len_key):
    if len_key in step:
        return b"x" * step[len_key]
    return step[text_key].encode()


def read_answer(result, expect):
    """A read's answer in the table's terms (``data_len`` if that is what is expected)."""
    if isinstance(result, fh.ReadData):
        if isinstance(expect, dict) and "data_len" in expect:
            return {"data_len": len(result.value)}
        return {"data": result.value.decode("latin-1")}
    if isinstance(result, fh.ReadWouldBlock):
        return "would-block"
    if isinstance(result, fh.ReadEof):
        return "eof"
    if isinstance(result, fh.ReadFailed):
        return {"failed": result.value}
    return f"not a read-result: {result!r}"


def write_answer(result):
    if isinstance(result, fh.WriteAccepted):
        return {"accepted": result.value}
    if isinstance(result, fh.WriteWouldBlock):
        return "would-block"
    if isinstance(result, fh.WriteFailed):
        return {"failed": result.value}
    return f"not a write-result: {result!r}"


def unit_answer(call):
    """A ``result<_, io-error>`` call: ``"ok"``, or ``{"err": E}`` for the raised Err."""
    try:
        result = call()
    except fh.Err as error:
        return {"err": error.value}
    return "ok" if result is None else f"not unit: {result!r}"


class Case:
    """One case on a fresh host: ``run`` answers None, or the first failing step
    as (index, expected, got)."""

    def __init__(self, case, make_host):
        self.case = case
        self.host = make_host()
        self.host.timer_limit = case.get("max_timers", self.host.timer_limit)
        self.host.allow_connect = case.get("allow_connect", False)
        self.handles = dict(UNSEEN)
        self.rooms = {}  # handle: the room it was handed out with (None: unbounded)
        for n, (name, spec) in enumerate(case.get("conns", {}).items(), start=1):
            fc = self.host.conn(n)
            if "room" in spec:
                fc.room = spec["room"]
            self.handles[name] = n
            self.rooms[n] = spec.get("room")

    def run(self):
        for i, step in enumerate(self.case["steps"]):
            try:
                if "peer" in step:
                    failed = self.peer_step(step)
                elif "call" in step:
                    failed = self.call_step(step)
                else:
                    failed = ("a step this runner can run", f"cannot run {step}")
            except Exception as error:  # a fake that raises fails its case, not the run
                failed = (step.get("expect", "no exception"), f"raised {error!r}")
            if failed is not None:
                return (i,) + failed
        return None

    def peer_step(self, step):
        fc = self.host.conns.get(self.handles.get(step["peer"]))
        if fc is None:
            return ("a connection to be the peer of", f"no connection {step['peer']!r}")
        if "send" in step or "send_len" in step:
            fc.send(payload(step, "send", "send_len"))
        elif step.get("shutdown"):
            fc.send_eof()
        elif step.get("reset"):
            fc.reset()
        elif step.get("drain"):
            room = self.rooms.get(self.handles[step["peer"]])
            fc.room = (1 << 30) if room is None else room
        elif "received" in step:
            want = {"received": step["received"], "eof": step["eof"]}
            got = {"received": bytes(fc.written).decode("latin-1"),
                   "eof": fc.shut_down or fc.closed}
            return None if got == want else (want, got)
        else:
            return ("a peer step this runner can run", f"cannot run {step}")
        return None

    def call_step(self, step):
        host, name, expect = self.host, step["call"], step["expect"]
        c = self.handles.get(step.get("conn"))
        if "conn" in step and c is None:
            return ("a known handle name", f"no handle {step['conn']!r}")
        if name == "read":
            got = read_answer(host.read(c, step["max"]), expect)
        elif name == "write":
            got = write_answer(host.write(c, payload(step, "data", "data_len")))
        elif name == "set-interest":
            got = host.set_interest(c, step["readable"], step["writable"])
        elif name == "shutdown-write":
            got = host.shutdown_write(c)
        elif name == "close":
            got = host.close(c)
        elif name == "peer":
            got = host.peer(c)
            if expect == "ip:port" and is_ip_port(got):
                return None
        elif name == "tls":
            got = host.tls(c)
        elif name == "set-timer":
            got = unit_answer(lambda: host.set_timer(step["id"], step["after_ms"]))
        elif name == "cancel-timer":
            got = host.cancel_timer(step["id"])
        elif name == "connect":
            addr = ADDRESSES.get(step["addr"], step["addr"])
            bound = []
            got = unit_answer(lambda: bound.append(host.connect(addr)))
            if bound:
                self.handles[step["as"]] = bound[0]
                self.rooms[bound[0]] = None
        else:
            return ("a call this runner can make", f"cannot call {name!r}")
        return None if got == expect else (expect, got)


def run_table(table, make_host=fh.FakeHost):
    """Every case ``python-fake`` can run, each on a fresh ``make_host()``: the names
    run, the (name, why) skipped, and the (name, step, expected, got) failed."""
    caps = table["capabilities"][ME]
    ran, skipped, failed = [], [], []
    for case in table["cases"]:
        why = why_skipped(case, caps)
        if why is not None:
            skipped.append((case["name"], why))
            continue
        ran.append(case["name"])
        failure = Case(case, make_host).run()
        if failure is not None:
            failed.append((case["name"],) + failure)
    return ran, skipped, failed


def describe(failed):
    return "\n".join(f"- {name}\n    step {i}: expected {want!r}, got {got!r}"
                     for name, i, want, got in failed)


# Broken on purpose, one behaviour each.

class EofNotSticky(fh.FakeHost):
    """Answers eof once, then would-block."""

    def read(self, c, max):
        result = super().read(c, max)
        if isinstance(result, fh.ReadEof):
            self.conns[c].reads.popleft()
        return result


class WritesAfterShutdown(fh.FakeHost):
    """Takes writes after shutdown-write."""

    def shutdown_write(self, c):
        self.calls.append(("shutdown_write", c))


class ContractTests(unittest.TestCase):
    def setUp(self):
        self.table = load_table()

    def test_the_fake_host_keeps_every_case_it_can_run(self):
        ran, skipped, failed = run_table(self.table)
        self.assertGreaterEqual(len(ran), AT_LEAST, f"ran {ran}, skipped {skipped}")
        self.assertEqual(len(ran) + len(skipped), len(self.table["cases"]))
        if failed:
            self.fail(f"{len(failed)} of {len(ran)} cases failed:\n{describe(failed)}")

    def test_a_fake_whose_eof_is_not_sticky_fails_the_eof_case(self):
        _, _, failed = run_table(self.table, EofNotSticky)
        self.assertEqual(failed, [("eof comes after every byte, and again after that",
                                   4, "eof", "would-block")], describe(failed))

    def test_a_fake_that_writes_after_shutdown_fails_the_shutdown_case(self):
        _, _, failed = run_table(self.table, WritesAfterShutdown)
        self.assertEqual([name for name, *_ in failed],
                         ["a write after shutdown-write fails with closed; reading goes on"],
                         describe(failed))

    def test_the_skips_follow_the_capabilities(self):
        # What the about text says: a turn skips a case for a fake without events;
        # a room, or a connect expecting ok, for one without those.
        turn = {"name": "t", "steps": [{"turn": True, "events": []}]}
        room = {"name": "r", "conns": {"a": {"room": 1}}, "steps": []}
        connect = {"name": "c", "steps": [{"call": "connect", "addr": "$listening",
                                           "as": "x", "expect": "ok"}]}
        refused = {"name": "n", "steps": [{"call": "connect", "addr": "$listening",
                                           "as": "x", "expect": {"err": "not-permitted"}}]}
        excepted = {"name": "e", "except": {ME: "on purpose"}, "steps": []}
        mine = self.table["capabilities"][ME]
        none = {"events": False, "room": False, "connect": False}
        self.assertEqual([bool(why_skipped(c, mine))
                          for c in (turn, room, connect, refused, excepted)],
                         [True, False, False, False, True])
        self.assertEqual([bool(why_skipped(c, none)) for c in (turn, room, connect, refused)],
                         [True, True, True, False])


if __name__ == "__main__":
    unittest.main()
