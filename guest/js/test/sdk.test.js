// The SDK's runtime against a fake host, in plain Node: node --test guest/js/test/
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  Handler, Runtime, IoError, HIGH_WATER, LOW_WATER, READ_CHUNK, MAX_TIMER_MS,
  setTimer, connect, log, setLogSink, text,
} from "../sandsock.js";
import { FakeHost, deliver, ev } from "../testing/fake-host.js";

const enc = (s) => new TextEncoder().encode(s);

// A handler that records what it hears and echoes unless told otherwise.
class Recorder extends Handler {
  constructor(onData) {
    super();
    this.heard = [];
    this.data = onData ?? ((conn, bytes) => conn.write(bytes));
  }
  onAccept(conn) { this.heard.push(["accept", conn.id]); }
  onData(conn, bytes) { this.heard.push(["data", conn.id, bytes.length]); this.data(conn, bytes); }
  onWritable(conn) { this.heard.push(["writable", conn.id]); }
  onClose(conn, reason) { this.heard.push(["close", conn.id, reason]); }
  onConnected(conn) { this.heard.push(["connected", conn.id]); }
  onTimer(id) { this.heard.push(["timer", id]); }
  closes(id) { return this.heard.filter((h) => h[0] === "close" && h[1] === id); }
}

function setup(handler = new Recorder()) {
  const host = new FakeHost();
  const rt = new Runtime(handler, host);
  return { host, rt, h: handler };
}

test("echo: what is read is written back, once per call", () => {
  const { host, rt, h } = setup();
  host.feed(1, "hello");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.equal(host.output(1), "hello");
  assert.equal(host.count("write"), 1);
  assert.equal(host.count("read"), 1, "a short read ends the reading: no read for would-block");
  assert.deepEqual(h.heard, [["accept", 1], ["data", 1, 5]]);
});

test("writes during one call are coalesced into one host write per connection", () => {
  const { host, rt } = setup(new Recorder((conn) => {
    conn.write("a");
    conn.write(enc("bc"));
    conn.write("");
    conn.write("d☃");
  }));
  host.feed(1, "x");
  host.feed(2, "y");
  deliver(rt, [ev.accepted(1), ev.accepted(2), ev.readable(1), ev.readable(2)]);
  assert.equal(host.output(1), "abcd☃");
  assert.equal(host.output(2), "abcd☃");
  assert.equal(host.count("write"), 2);
  assert.equal(host.count("setInterest"), 0, "all taken at once: no write interest");
});

test("a partial accept keeps the rest, turns write interest on, and sends it on writable", () => {
  const { host, rt, h } = setup();
  host.setRoom(1, 5);
  host.feed(1, "hello world!");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.equal(host.output(1), "hello");
  assert.equal(rt.conn(1).queued, 7);
  assert.deepEqual(host.interest.get(1), [true, true]);
  // More writes behind pushed-back bytes wait for writable: no host call now.
  host.feed(1, "++");
  const writes = host.count("write");
  deliver(rt, [ev.readable(1)]);
  assert.equal(host.count("write"), writes);
  assert.equal(rt.conn(1).queued, 9);
  host.setRoom(1, Infinity);
  deliver(rt, [ev.writable(1)]);
  assert.equal(host.output(1), "hello world!++");
  assert.equal(rt.conn(1).queued, 0);
  assert.deepEqual(host.interest.get(1), [true, false]);
  assert.equal(h.heard.filter((x) => x[0] === "writable").length, 1);
});

test("would-block keeps everything, in order", () => {
  const { host, rt } = setup();
  host.setRoom(1, 0);
  host.feed(1, "abc");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.equal(host.output(1), "");
  assert.equal(rt.conn(1).queued, 3);
  host.setRoom(1, 2);
  deliver(rt, [ev.writable(1)]);
  assert.equal(host.output(1), "ab");
  host.setRoom(1, 10);
  deliver(rt, [ev.writable(1)]);
  assert.equal(host.output(1), "abc");
});

test("backpressure: reading stops past HIGH_WATER and resumes below LOW_WATER", () => {
  const { host, rt } = setup();
  host.setRoom(1, 0);
  const chunk = new Uint8Array(READ_CHUNK).fill(7);
  for (let i = 0; i < 8; i++) host.feed(1, chunk);
  deliver(rt, [ev.accepted(1)]);
  // The host reads a chunk per call while read interest is on.
  for (let i = 0; i < 8; i++) deliver(rt, [ev.readable(1)]);
  assert.equal(rt.conn(1).queued, HIGH_WATER, "stopped reading at the high-water mark");
  assert.equal(host.count("read"), HIGH_WATER / READ_CHUNK);
  assert.deepEqual(host.interest.get(1), [false, true]);
  // Readable again: still paused, nothing is read.
  deliver(rt, [ev.readable(1)]);
  assert.equal(host.count("read"), HIGH_WATER / READ_CHUNK);
  // Room for part of it: still above LOW_WATER, still paused.
  host.setRoom(1, HIGH_WATER - LOW_WATER - 1);
  deliver(rt, [ev.writable(1)]);
  assert.deepEqual(host.interest.get(1), [false, true]);
  host.setRoom(1, 1);
  deliver(rt, [ev.writable(1)]);
  assert.equal(rt.conn(1).queued, LOW_WATER);
  assert.deepEqual(host.interest.get(1), [true, true], "reading resumes at LOW_WATER");
});

test("backpressure also counts writes behind pushed-back bytes", () => {
  const big = new Uint8Array(HIGH_WATER);
  const { host, rt } = setup(new Recorder((conn) => conn.write(big)));
  host.setRoom(1, 0);
  host.feed(1, "x");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.deepEqual(host.interest.get(1), [false, true]);
});

test("close waits for the queue to drain, then closes and calls onClose once", () => {
  const { host, rt, h } = setup(new Recorder((conn, bytes) => {
    conn.write(bytes);
    conn.close();
    conn.write("dropped");
  }));
  host.setRoom(1, 3);
  host.feed(1, "goodbye");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.equal(host.output(1), "goo");
  assert.ok(!host.closed.has(1));
  assert.deepEqual(host.interest.get(1), [false, true], "no reading while closing");
  assert.deepEqual(h.closes(1), []);
  host.setRoom(1, Infinity);
  deliver(rt, [ev.writable(1)]);
  assert.equal(host.output(1), "goodbye");
  assert.ok(host.closed.has(1));
  assert.deepEqual(h.closes(1), [["close", 1, null]]);
  assert.equal(h.heard.filter((x) => x[0] === "writable").length, 0, "no onWritable for a close");
  // Nothing after: a late hangup, another close, writes.
  deliver(rt, [ev.hangup(1), ev.readable(1), ev.writable(1)]);
  assert.deepEqual(h.closes(1), [["close", 1, null]]);
});

test("a close with everything sent closes at once, and onClose comes in the same call", () => {
  const { host, rt, h } = setup(new Recorder((conn, bytes) => {
    conn.write(bytes);
    conn.close();
  }));
  host.feed(1, "bye");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.equal(host.output(1), "bye");
  const order = host.calls.filter((c) => c[0] === "write" || c[0] === "close").map((c) => c[0]);
  assert.deepEqual(order, ["write", "close"], "the bytes go before the close");
  assert.deepEqual(h.closes(1), [["close", 1, null]]);
});

test("onClose is called exactly once per connection, with the reason", () => {
  const { host, rt, h } = setup();
  deliver(rt, [ev.accepted(1), ev.accepted(2), ev.accepted(3), ev.accepted(4)]);
  host.feed(2, { error: "reset" });
  deliver(rt, [ev.hangup(1), ev.hangup(1), ev.readable(2)]);
  assert.deepEqual(h.closes(1), [["close", 1, "reset"]]);
  assert.deepEqual(h.closes(2), [], "a reset read waits for the hangup");
  deliver(rt, [ev.hangup(2)]);
  assert.deepEqual(h.closes(2), [["close", 2, "reset"]]);
  rt.conn(3).close();
  deliver(rt, []);
  rt.conn(4)?.abort();
  deliver(rt, [ev.hangup(3), ev.hangup(4)]);
  assert.deepEqual(h.closes(3), [["close", 3, null]]);
  assert.deepEqual(h.closes(4), [["close", 4, null]]);
  assert.equal(h.heard.filter((x) => x[0] === "close").length, 4);
});

test("a handler closing others from onClose: each hears it once", () => {
  class Chain extends Recorder {
    onClose(conn, reason) {
      super.onClose(conn, reason);
      for (const c of this.rt.conns()) c.close();
    }
  }
  const h = new Chain();
  const { rt } = setup(h);
  h.rt = rt;
  deliver(rt, [ev.accepted(1), ev.accepted(2), ev.accepted(3), ev.hangup(2)]);
  assert.deepEqual(h.heard.filter((x) => x[0] === "close").map((x) => x[1]).sort(), [1, 2, 3]);
});

test("end of stream: the default onEof closes once everything is sent", () => {
  const { host, rt, h } = setup();
  host.setRoom(1, 2);
  host.feed(1, "abcd", "eof");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  deliver(rt, [ev.readable(1)]);
  assert.ok(!host.closed.has(1));
  host.setRoom(1, 10);
  deliver(rt, [ev.writable(1)]);
  assert.equal(host.output(1), "abcd");
  assert.ok(host.closed.has(1));
  assert.deepEqual(h.closes(1), [["close", 1, null]]);
});

test("half-close: writes after the peer's end, then shutdownWrite once drained", () => {
  class Half extends Recorder {
    onEof(conn) {
      conn.write("bye");
      conn.shutdownWrite();
      conn.write("dropped");
    }
  }
  const { host, rt } = setup(new Half());
  host.feed(1, "x", "eof");
  host.setRoom(1, 1);
  deliver(rt, [ev.accepted(1), ev.readable(1), ev.readable(1)]);
  assert.ok(!host.shut.has(1));
  host.setRoom(1, 100);
  deliver(rt, [ev.writable(1)]);
  assert.equal(host.output(1), "xbye");
  assert.ok(host.shut.has(1));
  assert.ok(!host.closed.has(1));
  assert.deepEqual(host.interest.get(1), [false, false]);
});

test("exceptions thrown by handler code leave handle uncaught", () => {
  const { host, rt } = setup(new Recorder(() => {
    throw new Error("boom");
  }));
  host.feed(1, "boom");
  assert.throws(() => deliver(rt, [ev.accepted(1), ev.readable(1)]), /boom/);
});

test("BigInt handles (componentize-js) are plain numbers to the handler", () => {
  const { host, rt, h } = setup();
  host.feed(5, "hi");
  deliver(rt, [ev.accepted(5n), ev.readable(5n)]);
  assert.equal(host.output(5), "hi");
  deliver(rt, [{ tag: "hangup", val: { conn: 5n, error: "reset" } }, ev.timer(9n)]);
  assert.deepEqual(h.closes(5), [["close", 5, "reset"]]);
  assert.deepEqual(h.heard.at(-1), ["timer", 9]);
});

test("pauseReading and resumeReading compose with the SDK's own pause", () => {
  const { host, rt } = setup();
  host.handOut(1);
  deliver(rt, [ev.accepted(1)]);
  const c = rt.conn(1);
  c.pauseReading();
  assert.deepEqual(host.interest.get(1), [false, false]);
  host.feed(1, "x");
  deliver(rt, [ev.readable(1)]);
  assert.equal(host.count("read"), 0);
  c.resumeReading();
  assert.deepEqual(host.interest.get(1), [true, false]);
  c.setInterest(true, true);
  deliver(rt, [ev.writable(1)]);
  assert.deepEqual(host.interest.get(1), [true, true]);
});

test("input held by a queue the end-of-call flush drains is handed over in the call", () => {
  class Broadcast extends Recorder {
    onTimer(id) {
      super.onTimer(id);
      this.conn.write(new Uint8Array(HIGH_WATER));
    }
  }
  const h = new Broadcast(() => {});
  const { host, rt } = setup(h);
  deliver(rt, [ev.accepted(1)]);
  h.conn = rt.conn(1);
  host.feed(1, "request");
  // The write passes HIGH_WATER within the call, so the data after it is held; the
  // flush at the end drains the queue, and nothing else would bring it.
  deliver(rt, [ev.timer(1), ev.readable(1)]);
  assert.deepEqual(h.heard.at(-1), ["data", 1, 7]);
  assert.deepEqual(host.interest.get(1) ?? [true, false], [true, false]);
});

test("input that came while reading was paused waits for it to resume", () => {
  class PauseOnAccept extends Recorder {
    onAccept(conn) {
      super.onAccept(conn);
      conn.pauseReading();
    }
    onTimer(id) {
      super.onTimer(id);
      this.conn.resumeReading();
    }
    onEof(conn) {
      this.heard.push(["eof", conn.id]);
      conn.close();
    }
  }
  const h = new PauseOnAccept((conn, bytes) => {});
  const { host, rt } = setup(h);
  host.feed(1, "early", "eof");
  // The host read before it heard of the pause: the bytes are in this batch.
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.deepEqual(h.heard, [["accept", 1]]);
  assert.deepEqual(host.interest.get(1), [false, false]);
  deliver(rt, [ev.readable(1)]);
  assert.equal(host.count("read"), 1, "paused: not read");
  h.conn = rt.conn(1);
  deliver(rt, [ev.timer(7)]);
  assert.deepEqual(h.heard, [["accept", 1], ["timer", 7], ["data", 1, 5]]);
  deliver(rt, [ev.readable(1)]);
  assert.deepEqual(h.heard.slice(-2), [["eof", 1], ["close", 1, null]],
    "what came after the held bytes follows them");
});

test("setInterest(_, true) calls onWritable on every writable with nothing queued", () => {
  const { rt, h } = setup();
  deliver(rt, [ev.accepted(1)]);
  rt.conn(1).setInterest(true, true);
  deliver(rt, [ev.writable(1), ev.writable(1)]);
  assert.equal(h.heard.filter((x) => x[0] === "writable").length, 2);
});

test("timers and connect: errors are IoErrors, handles are numbers", () => {
  const { host, rt, h } = setup();
  deliver(rt, [ev.accepted(1)]); // makes rt the current runtime
  setTimer(7, 10);
  assert.equal(host.timers.get(7), 10);
  assert.throws(() => setTimer(8, MAX_TIMER_MS + 1), (e) => e instanceof IoError && e.code === "limit-exceeded");
  host.timerLimit = 1;
  assert.throws(() => setTimer(9, 5), (e) => e.code === "limit-exceeded");
  assert.throws(() => connect("nowhere"), (e) => e instanceof IoError && e.code === "invalid-address");
  const up = connect("127.0.0.1:9");
  up.write("early");
  up.shutdownWrite();
  deliver(rt, []);
  assert.equal(host.output(up.id), "", "held until connected");
  deliver(rt, [ev.connected(up.id)]);
  assert.equal(host.output(up.id), "early");
  assert.ok(host.shut.has(up.id));
  assert.deepEqual(h.heard.at(-1), ["connected", up.id]);
  // A connection that never completes: onClose with the reason.
  const down = connect("127.0.0.1:10");
  deliver(rt, [ev.hangup(down.id, "refused")]);
  assert.deepEqual(h.closes(down.id), [["close", down.id, "refused"]]);
});

test("a plain object is a handler, with the defaults for what it leaves out", () => {
  const seen = [];
  const host = new FakeHost();
  const rt = new Runtime({ onData(conn, b) { seen.push(b.length); conn.write(b); } }, host);
  host.feed(1, "abc", "eof");
  deliver(rt, [ev.accepted(1), ev.readable(1), ev.readable(1), ev.shutdown(), ev.timer(3)]);
  assert.deepEqual(seen, [3]);
  assert.ok(host.closed.has(1), "the default onEof closed it");
});

test("a hot swap: queued bytes, flags and the handler's state cross over", () => {
  class Stateful extends Recorder {
    constructor() { super(); this.count = 0; this.restored = null; }
    snapshot() { return new Uint8Array([1, this.count]); }
    restore(bytes) {
      if (bytes[0] !== 1) return "unknown version";
      this.restored = bytes[1];
    }
  }
  const old = setup(new Stateful());
  old.h.count = 42;
  old.host.setRoom(1, 2);
  old.host.feed(1, "pending");
  deliver(old.rt, [ev.accepted(1), ev.accepted(2), ev.readable(1)]);
  old.rt.conn(2).pauseReading();
  const snap = old.rt.snapshot();

  const fresh = setup(new Stateful());
  assert.equal(fresh.rt.restore(snap), null);
  assert.equal(fresh.h.restored, 42);
  fresh.host.handOut(1);
  fresh.host.handOut(2);
  deliver(fresh.rt, [ev.adopted(1), ev.adopted(2)]);
  assert.equal(fresh.host.output(1), "nding", "the old queue goes out first");
  assert.deepEqual(fresh.host.interest.get(2), [false, false], "still paused");
  // A refusal by the handler, and a broken snapshot, are answers, not traps.
  const refused = setup(new Stateful());
  const other = snap.slice();
  other[13] = 9; // the handler's version byte
  assert.match(refused.rt.restore(other), /refused its state: unknown version/);
  for (const end of [0, 3, 5, 12, snap.length - 1]) {
    if (end === 0) continue;
    const r = setup(new Stateful()).rt.restore(snap.subarray(0, end));
    assert.match(r, /could not read the snapshot/, `truncated at ${end}`);
  }
});

test("log lines before the host is bound are kept, then written", () => {
  log.info("early", { a: 1 });
  const lines = [];
  setLogSink((level, line) => lines.push([level, line]));
  log.warn("late", 3);
  setLogSink(null);
  assert.deepEqual(lines, [["info", 'early {"a":1}'], ["warn", "late 3"]]);
});

test("writing something that is not bytes or a string throws", () => {
  const { host, rt } = setup(new Recorder((conn) => conn.write(42)));
  host.feed(1, "x");
  assert.throws(() => deliver(rt, [ev.accepted(1), ev.readable(1)]), TypeError);
});

test("peer is known while open, null after", () => {
  const { host, rt } = setup();
  host.handOut(1);
  deliver(rt, [ev.accepted(1)]);
  const c = rt.conn(1);
  assert.equal(c.peer, "127.0.0.1:40001");
  c.close();
  assert.equal(c.peer, null);
  assert.equal(c.open, false);
});

test("abort sends what was written earlier in the same call, then closes", () => {
  const { host, rt, h } = setup(new Recorder((conn) => {
    conn.write("busy\n");
    conn.abort();
    conn.write("dropped");
  }));
  host.feed(1, "x");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.equal(host.output(1), "busy\n");
  const order = host.calls.filter((c) => c[0] === "write" || c[0] === "close").map((c) => c[0]);
  assert.deepEqual(order, ["write", "close"], "one write, before the close");
  assert.deepEqual(h.closes(1), [["close", 1, null]]);
});

test("abort drops what the host pushed back on, and writes nothing for a connect in progress", () => {
  const { host, rt } = setup();
  host.setRoom(1, 2);
  host.feed(1, "abcdef");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.equal(rt.conn(1).queued, 4);
  const writes = host.count("write");
  rt.conn(1).abort();
  assert.equal(host.count("write"), writes, "pushed-back bytes are not offered again");
  assert.ok(host.closed.has(1));
  const up = connect("127.0.0.1:9");
  up.write("early");
  up.abort();
  assert.equal(host.output(up.id), "");
  assert.ok(host.closed.has(up.id));
  // Written, then refused by the host (a half-closed connection): abort still closes.
  host.handOut(2);
  deliver(rt, [ev.accepted(2)]);
  rt.conn(2).write("x");
  host.shut.add(2);
  rt.conn(2).abort();
  assert.ok(host.closed.has(2));
});

test("no onWritable for writes in onConnected or onAdopted that the host took at once", () => {
  class Greeter extends Recorder {
    onConnected(conn) { super.onConnected(conn); conn.write("hello"); }
    onAdopted(conn) { conn.write("welcome back"); }
  }
  const { host, rt, h } = setup(new Greeter());
  deliver(rt, [ev.accepted(1)]);
  const up = connect("127.0.0.1:9");
  deliver(rt, [ev.connected(up.id)]);
  assert.equal(host.output(up.id), "hello");
  host.handOut(2);
  deliver(rt, [ev.adopted(2)]);
  assert.equal(host.output(2), "welcome back");
  // Nor for a `writable` in the batch after a write the host had not pushed back on.
  host.feed(1, "x");
  deliver(rt, [ev.readable(1), ev.writable(1)]);
  assert.equal(host.output(1), "x");
  assert.deepEqual(h.heard.filter((x) => x[0] === "writable"), []);
  // But when the host pushed back on them, once they are sent.
  const late = new Greeter();
  const r2 = setup(late);
  r2.host.setRoom(7, 3);
  deliver(r2.rt, [ev.adopted(7)]);
  assert.equal(r2.host.output(7), "wel");
  assert.deepEqual(late.heard.filter((x) => x[0] === "writable"), []);
  r2.host.setRoom(7, Infinity);
  deliver(r2.rt, [ev.writable(7)]);
  assert.equal(r2.host.output(7), "welcome back");
  assert.deepEqual(late.heard.filter((x) => x[0] === "writable"), [["writable", 7]]);
});

test("onWritable once bytes written while connecting are sent, as the Rust SDK does", () => {
  const { host, rt, h } = setup();
  deliver(rt, [ev.accepted(1)]);
  const up = connect("127.0.0.1:9");
  up.write("early");
  deliver(rt, []);
  deliver(rt, [ev.connected(up.id)]);
  assert.equal(host.output(up.id), "early");
  assert.deepEqual(h.heard.slice(-2), [["connected", up.id], ["writable", up.id]]);
});

test("a restore that throws is a refusal, with the connections still handed over", () => {
  class Buggy extends Recorder {
    snapshot() { return Uint8Array.of(1); }
    restore() { null.oops; }
  }
  const old = setup(new Buggy());
  old.host.setRoom(1, 0);
  old.host.feed(1, "queued");
  deliver(old.rt, [ev.accepted(1), ev.readable(1)]);
  const snap = old.rt.snapshot();
  const lines = [];
  setLogSink((level, line) => lines.push([level, line]));
  const fresh = setup(new Buggy());
  let refusal;
  try {
    refusal = fresh.rt.restore(snap);
  } finally {
    setLogSink(null);
  }
  assert.match(refusal, /^the handler refused its state: .*null/);
  assert.ok(lines.some(([level, line]) => level === "error" && line.includes("TypeError")), "the bug is logged");
  fresh.host.handOut(1);
  deliver(fresh.rt, [ev.adopted(1)]);
  assert.equal(fresh.host.output(1), "queued", "the SDK's part was taken up all the same");
});

test("a snapshot bad in its last connection takes up none of it", () => {
  const old = setup();
  old.host.setRoom(1, 0);
  old.host.setRoom(2, 0);
  old.host.feed(1, "one");
  old.host.feed(2, "two");
  deliver(old.rt, [ev.accepted(1), ev.accepted(2), ev.readable(1), ev.readable(2)]);
  const snap = old.rt.snapshot().slice();
  // The last connection's pending action, before its queue ("two"): layout 2,
  // nothing being held.
  assert.equal(snap[4], 2);
  snap[snap.length - 3 - 8 - 1] = 9;
  const fresh = setup();
  assert.match(fresh.rt.restore(snap), /could not read the snapshot/);
  fresh.host.handOut(1);
  fresh.host.handOut(2);
  deliver(fresh.rt, [ev.adopted(1), ev.adopted(2)]);
  assert.equal(fresh.host.output(1), "");
  assert.equal(fresh.host.output(2), "");
  assert.equal(fresh.rt.conn(1).queued, 0);
});

test("store answers and topic messages reach onStore and onMessage (contract 1.1)", () => {
  const heard = [];
  const h = new (class extends Handler {
    onStore(op, answer) {
      const number = op === 9 ? answer.number : undefined; // an increment's answer
      heard.push(["store", op, answer.outcome, answer.value && text(answer.value), number]);
    }
    onMessage(sub, bytes) { heard.push(["message", sub, text(bytes)]); }
    onLost(sub, count) { heard.push(["lost", sub, count]); }
  })();
  const rt = new Runtime(h, new FakeHost());
  const record = (kind, fields) => ({ kind, code: 0, conn: 0, id: 0, value: 0, start: 0, len: 0, ...fields });
  rt.handle([
    record(9, { id: 7, start: 0, len: 2 }),
    record(9, { id: 8, code: 1 }),
    record(9, { id: 9, value: 2n ** 64n - 3n, start: 4, len: 2 }),
    record(10, { id: 1, start: 2, len: 2 }),
    record(11, { id: 1, value: 5 }),
  ], enc("v1hi-3"));
  assert.deepEqual(heard, [
    ["store", 7, "ok", "v1", undefined],
    ["store", 8, "not-found", null, undefined],
    ["store", 9, "ok", "-3", -3],
    ["message", 1, "hi"],
    ["lost", 1, 5],
  ]);
});
