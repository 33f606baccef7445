// The io contract, wit/io-cases.json, run against the scripted host
// (testing/fake-host.js) as the implementation `js-fake`: every case it can run
// (its `capabilities` and the cases' `except` say which, as the table's `about`
// text defines), each on a fresh host. A fake host broken on purpose must fail
// exactly the case that checks what was broken.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { isDeepStrictEqual, inspect } from "node:util";

import { FakeHost } from "../testing/fake-host.js";

const TABLE = new URL("../../../wit/io-cases.json", import.meta.url);
const ME = "js-fake";
const AT_LEAST = 20; // cases run: 22 of the 34 in the table when this was written

// Handles: those of `conns` from 1 up, those a `connect` answers; `never` and
// `other` are never handed out (this fake has no other instances).
const UNSEEN = { never: 900001, other: 900002 };
const ADDRESSES = { $listening: "127.0.0.1:7", $closed: "127.0.0.1:9" };

export function loadTable() {
  return JSON.parse(readFileSync(TABLE, "utf8"));
}

/** Why `js-fake` does not run `kase` (the `about` text's rules), or null. */
export function whySkipped(kase, caps) {
  const except = kase.except ?? {};
  if (Object.hasOwn(except, ME)) return `except: ${except[ME]}`;
  const steps = kase.steps;
  if (!caps.events && steps.some((s) => "turn" in s)) return "a turn (no events)";
  if (!caps.room && Object.values(kase.conns ?? {}).some((c) => "room" in c)) return "a room (no room)";
  if (!caps.connect && steps.some((s) => s.call === "connect" && s.expect === "ok")) {
    return "a connect that expects ok (no connect)";
  }
  return null;
}

/** An `ip:port` (IPv6 in brackets), as the contract's `"ip:port"` means. */
export function isIpPort(text) {
  if (typeof text !== "string") return false;
  const colon = text.lastIndexOf(":");
  if (colon < 0) return false;
  const ip = text.slice(0, colon);
  const port = text.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) return false;
  if (ip.startsWith("[") && ip.endsWith("]")) return isIPv6(ip.slice(1, -1));
  return isIPv4(ip);
}

// Bytes as the table's TEXT (one char per byte: nothing is hidden by decoding).
const text = (bytes) => Buffer.from(bytes ?? new Uint8Array(0)).toString("latin1");

function payload(step, textKey, lenKey) {
  if (lenKey in step) return new Uint8Array(step[lenKey]).fill(0x78); // 'x'
  return new Uint8Array(Buffer.from(step[textKey], "utf8"));
}

/** A read's answer in the table's terms (`data_len` if that is what is expected). */
function readAnswer(r, expect) {
  switch (r?.tag) {
    case "data":
      if (expect !== null && typeof expect === "object" && "data_len" in expect) return { data_len: r.val.length };
      return { data: text(r.val) };
    case "would-block":
      return "would-block";
    case "eof":
      return "eof";
    case "failed":
      return { failed: r.val };
    default:
      return `not a read-result: ${inspect(r)}`;
  }
}

function writeAnswer(r) {
  switch (r?.tag) {
    case "accepted":
      return { accepted: r.val };
    case "would-block":
      return "would-block";
    case "failed":
      return { failed: r.val };
    default:
      return `not a write-result: ${inspect(r)}`;
  }
}

// A call that answers nothing: `undefined` in JS, the table's null.
const nothing = (r) => (r === undefined ? null : `answered ${inspect(r)}`);

// A `result<_, io-error>` as the SDK's host object gives it: null, or the error's name.
const unitAnswer = (r) => (r === null ? "ok" : typeof r === "string" ? { err: r } : `not a result: ${inspect(r)}`);

/** One case on a fresh host: `run()` answers null, or the first failing step as
 * {step, expected, got}. */
class Case {
  constructor(kase, makeHost) {
    this.kase = kase;
    this.host = makeHost();
    if ("max_timers" in kase) this.host.timerLimit = kase.max_timers;
    this.host.allowConnect = kase.allow_connect ?? false;
    this.handles = new Map(Object.entries(UNSEEN));
    this.rooms = new Map(); // handle: the room it was handed out with (undefined: unbounded)
    let n = 1;
    for (const [name, spec] of Object.entries(kase.conns ?? {})) {
      this.host.handOut(n);
      if ("room" in spec) this.host.setRoom(n, spec.room);
      this.handles.set(name, n);
      this.rooms.set(n, spec.room);
      n++;
    }
  }

  run() {
    for (const [i, step] of this.kase.steps.entries()) {
      let failed;
      try {
        if ("peer" in step) failed = this.peerStep(step);
        else if ("call" in step) failed = this.callStep(step);
        else failed = ["a step this runner can run", `cannot run ${JSON.stringify(step)}`];
      } catch (e) {
        // A fake that throws fails its case, not the run.
        failed = ["expect" in step ? step.expect : "no exception", `threw ${inspect(e)}`];
      }
      if (failed) return { step: i, expected: failed[0], got: failed[1] };
    }
    return null;
  }

  peerStep(step) {
    const host = this.host;
    const c = this.handles.get(step.peer);
    if (c === undefined || c === UNSEEN.never || c === UNSEEN.other) {
      return ["a connection to be the peer of", `no connection ${JSON.stringify(step.peer)}`];
    }
    if ("send" in step || "send_len" in step) host.feed(c, payload(step, "send", "send_len"));
    else if (step.shutdown) host.feed(c, "eof");
    else if (step.reset) host.reset(c);
    else if (step.drain) host.setRoom(c, this.rooms.get(c) ?? Infinity);
    else if ("received" in step) {
      const want = { received: step.received, eof: step.eof };
      const got = { received: text(host.sent.get(c)), eof: host.shut.has(c) || host.closed.has(c) };
      return isDeepStrictEqual(got, want) ? null : [want, got];
    } else return ["a peer step this runner can run", `cannot run ${JSON.stringify(step)}`];
    return null;
  }

  callStep(step) {
    const host = this.host;
    const { call, expect } = step;
    const c = this.handles.get(step.conn);
    if ("conn" in step && c === undefined) return ["a known handle name", `no handle ${JSON.stringify(step.conn)}`];
    let got;
    switch (call) {
      case "read":
        got = readAnswer(host.read(c, step.max), expect);
        break;
      case "write":
        got = writeAnswer(host.write(c, payload(step, "data", "data_len")));
        break;
      case "set-interest":
        got = nothing(host.setInterest(c, step.readable, step.writable));
        break;
      case "shutdown-write":
        got = nothing(host.shutdownWrite(c));
        break;
      case "close":
        got = nothing(host.close(c));
        break;
      case "cancel-timer":
        got = nothing(host.cancelTimer(step.id));
        break;
      case "peer":
        got = host.peer(c);
        if (expect === "ip:port" && isIpPort(got)) return null;
        break;
      case "tls":
        got = host.tls(c);
        break;
      case "set-timer":
        got = unitAnswer(host.setTimer(step.id, step.after_ms));
        break;
      case "connect": {
        const r = host.connect(ADDRESSES[step.addr] ?? step.addr);
        if (r && typeof r.conn === "number" && !("error" in r)) {
          got = "ok";
          this.handles.set(step.as, r.conn);
          this.rooms.set(r.conn, undefined);
        } else if (r && typeof r.error === "string") {
          got = { err: r.error };
        } else {
          got = `not a connect answer: ${inspect(r)}`;
        }
        break;
      }
      default:
        return ["a call this runner can make", `cannot call ${JSON.stringify(call)}`];
    }
    return isDeepStrictEqual(got, expect) ? null : [expect, got];
  }
}

/** Every case `js-fake` can run, each on a fresh `makeHost()`: the names run,
 * the {name, why} skipped, and the {name, step, expected, got} failed. */
export function runTable(table, makeHost = () => new FakeHost()) {
  const caps = table.capabilities[ME];
  const ran = [];
  const skipped = [];
  const failed = [];
  for (const kase of table.cases) {
    const why = whySkipped(kase, caps);
    if (why !== null) {
      skipped.push({ name: kase.name, why });
      continue;
    }
    ran.push(kase.name);
    const failure = new Case(kase, makeHost).run();
    if (failure !== null) failed.push({ name: kase.name, ...failure });
  }
  return { ran, skipped, failed };
}

export function describe(failed) {
  return failed
    .map((f) => `- ${f.name}\n    step ${f.step}: expected ${inspect(f.expected)}, got ${inspect(f.got)}`)
    .join("\n");
}

// Broken on purpose, one behaviour each.

/** Answers eof once, then would-block. */
class EofNotSticky extends FakeHost {
  read(id, max) {
    const r = super.read(id, max);
    if (r.tag === "eof") this.input.get(id).shift();
    return r;
  }
}

/** Takes writes after shutdown-write. */
class WritesAfterShutdown extends FakeHost {
  shutdownWrite(id) {
    this.calls.push(["shutdownWrite", id]);
  }
}

const table = loadTable();

test("the fake host keeps every case of the io contract it can run", (t) => {
  const { ran, skipped, failed } = runTable(table);
  t.diagnostic(`${ran.length} cases run, ${skipped.length} skipped, of ${table.cases.length}`);
  assert.ok(ran.length >= AT_LEAST, `only ${ran.length} cases ran; skipped: ${inspect(skipped)}`);
  assert.equal(ran.length + skipped.length, table.cases.length);
  if (failed.length > 0) assert.fail(`${failed.length} of ${ran.length} cases failed:\n${describe(failed)}`);
});

test("a fake whose eof is not sticky fails the eof case, and only it", () => {
  const { failed } = runTable(table, () => new EofNotSticky());
  assert.deepEqual(failed, [{
    name: "eof comes after every byte, and again after that", step: 4, expected: "eof", got: "would-block",
  }], describe(failed));
});

test("a fake that writes after shutdown-write fails the shutdown case, and only it", () => {
  const { failed } = runTable(table, () => new WritesAfterShutdown());
  assert.deepEqual(failed.map((f) => f.name),
    ["a write after shutdown-write fails with closed; reading goes on"], describe(failed));
});

test("the skips follow the capabilities", () => {
  // What the about text says: a turn skips a case for a fake without events; a
  // room, or a connect expecting ok, for one without those.
  const turn = { name: "t", steps: [{ turn: true, events: [] }] };
  const room = { name: "r", conns: { a: { room: 1 } }, steps: [] };
  const connect = { name: "c", steps: [{ call: "connect", addr: "$listening", as: "x", expect: "ok" }] };
  const refused = { name: "n", steps: [{ call: "connect", addr: "$listening", as: "x", expect: { err: "not-permitted" } }] };
  const excepted = { name: "e", except: { [ME]: "on purpose" }, steps: [] };
  const mine = table.capabilities[ME];
  const none = { events: false, room: false, connect: false };
  assert.deepEqual([turn, room, connect, refused, excepted].map((c) => whySkipped(c, mine) !== null),
    [true, false, false, false, true]);
  assert.deepEqual([turn, room, connect, refused].map((c) => whySkipped(c, none) !== null),
    [true, true, true, false]);
});

test("ip:port is an IPv4 address or a bracketed IPv6 one, and a port", () => {
  for (const ok of ["127.0.0.1:40001", "[::1]:80", "0.0.0.0:65535"]) assert.ok(isIpPort(ok), ok);
  for (const bad of ["127.0.0.1", "localhost:80", "::1:80", "127.0.0.1:65536", "127.0.0.1:", "", null]) {
    assert.ok(!isIpPort(bad), String(bad));
  }
});
