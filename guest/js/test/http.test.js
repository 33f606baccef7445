// The http example, in plain Node: its HTTP logic, and the handler over a fake host.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, copyFileSync, cpSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { FakeHost, deliver, ev } from "../testing/fake-host.js";

const here = dirname(fileURLToPath(import.meta.url));
let sdk;
let app;

// The example imports ./sandsock.js, as a built guest does: put them side by side
// (the SDK with its modules, ./sandsock/).
before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "sandsock-js-http-"));
  copyFileSync(join(here, "..", "sandsock.js"), join(dir, "sandsock.js"));
  cpSync(join(here, "..", "sandsock"), join(dir, "sandsock"), { recursive: true });
  copyFileSync(join(here, "..", "examples", "http", "app.js"), join(dir, "app.js"));
  sdk = await import(pathToFileURL(join(dir, "sandsock.js")));
  app = await import(pathToFileURL(join(dir, "app.js")));
});

const enc = (s) => new TextEncoder().encode(s);
const dec = (chunks) => chunks.map((c) => new TextDecoder().decode(c)).join("");
const HELLO = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";

function answer(input, opts) {
  const out = [];
  const a = app.answerAll(enc(input), out, opts);
  return [a, dec(out)];
}

test("GET is answered hello and kept alive; HEAD gets the head alone", () => {
  const req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  assert.deepEqual(answer(req), [{ consumed: req.length, close: false, rejected: false }, HELLO]);
  assert.equal(answer("HEAD /x HTTP/1.1\r\n\r\n")[1], HELLO.slice(0, -6));
  assert.equal(answer("GET / HTTP/1.1\n\n")[1], HELLO, "bare LF line ends");
});

test("other methods get 405 with Allow", () => {
  const [a, out] = answer("DELETE / HTTP/1.1\r\n\r\n");
  assert.equal(a.consumed, 21);
  assert.ok(out.startsWith("HTTP/1.1 405 Method Not Allowed\r\n"), out);
  assert.ok(out.includes("\r\nAllow: GET, HEAD\r\n"));
  assert.ok(out.endsWith("\r\n\r\nmethod not allowed\n"));
});

test("Connection: close is honoured; HTTP/1.0 closes unless keep-alive", () => {
  let [a, out] = answer("GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n");
  assert.ok(a.close);
  assert.ok(out.includes("\r\nConnection: close\r\n"));
  [a, out] = answer("GET / HTTP/1.0\r\n\r\n");
  assert.ok(a.close);
  [a, out] = answer("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n");
  assert.ok(!a.close);
  assert.ok(out.includes("\r\nConnection: keep-alive\r\n"));
});

test("pipelined requests are answered in order; a close stops them", () => {
  const input = "GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /d HT";
  const [a, out] = answer(input);
  assert.equal(a.consumed, input.length - "GET /d HT".length);
  assert.equal(out.split("HTTP/1.1 200 OK").length - 1, 3);
  assert.equal(out.split("hello\n").length - 1, 2);
  const closing = "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
  const [b, out2] = answer(closing);
  assert.ok(b.close);
  assert.equal(out2.split("HTTP/1.1").length - 1, 1);
});

test("a request split anywhere is incomplete until whole", () => {
  const req = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
  for (let end = 0; end < req.length; end++) {
    const [a, out] = answer(req.slice(0, end));
    assert.deepEqual(a, { consumed: 0, close: false, rejected: false }, `after ${end} bytes`);
    assert.equal(out, "");
  }
});

test("a body is waited for and skipped", () => {
  const head = "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
  assert.equal(answer(head + "abc")[0].consumed, 0);
  const [a, out] = answer(head + "abcdeGET / HTTP/1.1\r\n\r\n");
  assert.equal(a.consumed, head.length + 5 + 18);
  assert.ok(out.endsWith(HELLO));
});

test("malformed requests: 400 (and 413, 431, 501), with Connection: close", () => {
  const cases = [
    ["\x16\x03\x01 hello\r\n\r\n", "400 Bad Request"],
    ["garbage\r\n\r\n", "400 Bad Request"],
    ["GET / HTTP/2.0\r\n\r\n", "400 Bad Request"],
    ["GET / HTTP/1.1\r\nno colon\r\n\r\n", "400 Bad Request"],
    ["POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", "400 Bad Request"],
    ["POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "400 Bad Request"],
    ["POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", "413 "],
    ["POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "501 Not Implemented"],
    [`GET / HTTP/1.1\r\nX-Long: ${"a".repeat(16 * 1024)}`, "431 "],
    ["GET / HTTP/1.1\r\n" + Array.from({ length: 33 }, (_, i) => `X-${i}: y\r\n`).join("") + "\r\n", "431 "],
  ];
  for (const [input, status] of cases) {
    const [a, out] = answer(input);
    assert.ok(a.rejected, JSON.stringify(input.slice(0, 40)));
    assert.ok(out.startsWith(`HTTP/1.1 ${status}`), out);
    assert.ok(out.includes("\r\nConnection: close\r\n"), out);
  }
  assert.ok(answer("\x16\x03\x01 hello\r\n\r\n")[1].endsWith("\r\n\r\nbad request\n"));
  assert.ok(answer("\x16")[0].rejected, "garbage is refused before the head is complete");
});

function server() {
  const host = new FakeHost();
  const rt = new sdk.Runtime(new app.Hello(), host);
  return { host, rt };
}

test("the handler: keep-alive, byte by byte, pipelining over the fake host", () => {
  const { host, rt } = server();
  deliver(rt, [ev.accepted(1)]);
  for (const b of enc("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) {
    host.feed(1, Uint8Array.of(b));
    deliver(rt, [ev.readable(1)]);
  }
  assert.equal(host.output(1), HELLO);
  host.feed(1, "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HT");
  deliver(rt, [ev.readable(1)]);
  assert.equal(host.output(1), HELLO.repeat(3));
  assert.equal(host.count("write"), 2, "the two pipelined answers went out in one write");
  host.feed(1, "TP/1.1\r\nConnection: close\r\n\r\n");
  deliver(rt, [ev.readable(1)]);
  assert.ok(host.output(1).endsWith("Connection: close\r\n\r\nhello\n"));
  assert.ok(host.closed.has(1));
});

test("the handler: a bad request is refused, the write side shut, drained, then closed", () => {
  const { host, rt } = server();
  host.feed(1, "BAD\x01REQUEST\r\n\r\n");
  deliver(rt, [ev.accepted(1), ev.readable(1)]);
  assert.ok(host.output(1).startsWith("HTTP/1.1 400 Bad Request\r\n"));
  assert.ok(host.output(1).endsWith("bad request\n"));
  assert.ok(host.shut.has(1));
  assert.ok(host.timers.has(1), "a drain timer");
  host.feed(1, "more junk");
  deliver(rt, [ev.readable(1)]);
  assert.ok(!host.closed.has(1));
  deliver(rt, [ev.timer(1)]);
  assert.ok(host.closed.has(1));
});

test("the handler: an unfinished request crosses a hot swap", () => {
  const old = server();
  old.host.feed(1, "GET / HTTP/1.1\r\nHo");
  deliver(old.rt, [ev.accepted(1), ev.readable(1)]);
  const snap = old.rt.snapshot();
  const fresh = server();
  assert.equal(fresh.rt.restore(snap), null);
  fresh.host.feed(1, "st: x\r\n\r\n");
  deliver(fresh.rt, [ev.adopted(1), ev.readable(1)]);
  assert.equal(fresh.host.output(1), HELLO);
});

test("the handler: on shutdown idle connections close, a half request is answered last", () => {
  const { host, rt } = server();
  host.handOut(1);
  host.feed(2, "GET / HTTP/1.1\r\n");
  deliver(rt, [ev.accepted(1), ev.accepted(2), ev.readable(2), ev.shutdown()]);
  assert.ok(host.closed.has(1));
  assert.ok(!host.closed.has(2));
  host.feed(2, "\r\n");
  deliver(rt, [ev.readable(2)]);
  assert.ok(host.output(2).endsWith("Connection: close\r\n\r\nhello\n"));
  assert.ok(host.closed.has(2));
});

test("empty lines before a request are ignored (RFC 9112 §2.2), and bounded", () => {
  const input = "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\nGET / HTTP/1.1\r\n\r\n";
  const [a, out] = answer(input);
  assert.deepEqual(a, { consumed: input.length, close: false, rejected: false });
  assert.ok(out.startsWith("HTTP/1.1 405 Method Not Allowed\r\n"), out);
  assert.ok(out.endsWith(HELLO), out);
  assert.equal(out.split("HTTP/1.1 ").length - 1, 2);
  assert.equal(answer("\n\r\n\nGET / HTTP/1.1\r\n\r\n")[1], HELLO, "LF and CRLF, several");
  // Empty lines alone, or a CR that may begin one, wait for the request.
  for (const wait of ["\r\n", "\r\n\r", "\n\n\n", "\r"]) {
    assert.deepEqual(answer(wait), [{ consumed: 0, close: false, rejected: false }, ""], JSON.stringify(wait));
  }
  // A CR that is not an empty line is a bad request.
  assert.ok(answer("\rGET / HTTP/1.1\r\n\r\n")[0].rejected);
  // They count toward the head's limit: a stream of them is refused, not held.
  const [flood, refusal] = answer("\r\n".repeat(8 * 1024 + 1));
  assert.ok(flood.rejected);
  assert.ok(refusal.startsWith("HTTP/1.1 431 "), refusal);
  assert.ok(answer("\r\n".repeat(8 * 1024) + "GET / HTTP/1.1\r\n\r\n")[0].rejected);
  assert.equal(answer("\r\n".repeat(100) + "GET / HTTP/1.1\r\n\r\n")[1], HELLO);
});

test("the handler: POST, CRLF, GET byte by byte gives 405 then 200 on one connection", () => {
  const { host, rt } = server();
  deliver(rt, [ev.accepted(1)]);
  for (const b of enc("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\nGET / HTTP/1.1\r\n\r\n")) {
    host.feed(1, Uint8Array.of(b));
    deliver(rt, [ev.readable(1)]);
  }
  const out = host.output(1);
  assert.ok(out.startsWith("HTTP/1.1 405 "), out);
  assert.ok(out.endsWith(HELLO), out);
  assert.ok(!host.closed.has(1) && !host.shut.has(1));
});

test("the handler's snapshot is its InputBuffers' encoding after a version byte", () => {
  const old = server();
  old.host.feed(1, "GET / HTTP/1.1\r\nHo");
  deliver(old.rt, [ev.accepted(1), ev.readable(1)]);
  const mine = old.rt.handler.snapshot();
  const w = new sdk.SnapshotWriter();
  w.u8(1);
  w.u64(1);
  w.u64(1);
  w.bytes("GET / HTTP/1.1\r\nHo");
  assert.deepEqual(mine, w.finish());
  // A bad one changes nothing: what this instance held stays.
  const fresh = new app.Hello();
  fresh.unfinished.feed(4, enc("GET"), () => 0);
  const bad = mine.slice(0, mine.length - 1);
  assert.throws(() => fresh.restore(bad), sdk.BadSnapshot);
  assert.equal(new TextDecoder().decode(fresh.unfinished.held(4)), "GET");
  assert.ok(!fresh.unfinished.isHolding(1));
  fresh.restore(mine);
  assert.ok(fresh.unfinished.isHolding(1));
});
