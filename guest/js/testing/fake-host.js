// A fake host for the SDK's unit tests in plain Node: the WIT `io` as the runtime
// sees it (handles as numbers), with scripted input and a scripted amount of room
// per connection, recording every call. It keeps the io contract, wit/io-cases.json
// (test/contract.test.js runs that table here as `js-fake`).
//
// A connection exists once handed out: `handOut(id)` does it, and so does scripting
// it (`feed`, `setRoom`, `reset`: a test that scripts a connection means it to
// exist), and `connect`. Calls on a handle never handed out, or closed, answer
// unknown-conn or nothing. Events are the tests' to deliver, in the host's words
// of readiness (`ev`): `deliver(rt, events)` makes contract 1.0's `handle`
// arguments of them as the host does (`batch`), reading each readable connection
// that has read interest once, before the call.

export const MAX_READ = 64 * 1024; // what one read answers at most
export const MAX_TIMER_MS = 86400000; // a timer's longest delay: a day

// The kinds of event of contract 1.0 (the WIT's numbers), and the io-error names by
// position.
const KIND = {
  accepted: 0, connected: 1, data: 2, eof: 3, writable: 4, hangup: 5, timer: 6,
  adopted: 7, shutdown: 8,
};
const IO_ERRORS = [
  "closed", "reset", "unknown-conn", "not-permitted", "limit-exceeded", "refused",
  "unreachable", "invalid-address",
];

export class FakeHost {
  constructor() {
    this.calls = [];
    // Every handle handed out and not closed.
    this.live = new Set();
    // Per connection: input chunks (Uint8Array, "eof", or {error}) still to read.
    this.input = new Map();
    // Per connection: bytes the host still takes (Infinity: all of them).
    this.room = new Map();
    // Per connection: every byte it took, in order.
    this.sent = new Map();
    this.interest = new Map();
    this.closed = new Set();
    // Per connection: the failure every write answers (the peer reset it).
    this.writeError = new Map();
    this.shut = new Set();
    this.timers = new Map();
    this.timerLimit = Infinity;
    this.nextConn = 1000;
    this.allowConnect = true;
  }

  // Scripting.

  /** The host hands out `id` (accepted, adopted): it lives until closed. */
  handOut(id) {
    if (!this.closed.has(id)) this.live.add(id);
    return id;
  }

  /** The peer sends: each chunk (a string, bytes, "eof", or {error}) is one read's
   * worth at most; an "eof" or {error} answers every read after it. */
  feed(id, ...chunks) {
    this.handOut(id);
    const q = this.input.get(id) ?? [];
    for (const c of chunks) q.push(typeof c === "string" && c !== "eof" ? new TextEncoder().encode(c) : c);
    this.input.set(id, q);
  }

  /** The host takes `n` more bytes (Infinity: all of them) before would-block. */
  setRoom(id, n) {
    this.handOut(id);
    this.room.set(id, n);
  }

  /** The peer resets the connection: reads and writes fail with `error`. */
  reset(id, error = "reset") {
    this.handOut(id);
    this.input.set(id, [{ error }]);
    this.writeError.set(id, error);
  }

  output(id) {
    return new TextDecoder().decode(this.sent.get(id) ?? new Uint8Array(0));
  }

  count(name) {
    return this.calls.filter((c) => c[0] === name).length;
  }

  /**
   * `handle`'s arguments for a batch of readiness events, as the host makes them:
   * a readable connection with read interest is read once (a whole chunk), its
   * bytes becoming a `data` event and its end an `eof`; a read that finds nothing
   * or fails adds nothing (a failure's hangup comes later).
   */
  batch(events) {
    const records = [];
    const chunks = [];
    let at = 0;
    const record = (kind, { conn = 0, id = 0, code = 0, start = 0, len = 0 } = {}) =>
      records.push({ kind, code, conn, id, value: 0, start, len });
    for (const e of events) {
      switch (e.tag) {
        case "readable": {
          const id = Number(e.val); // a BigInt handle (componentize-js) too
          const [wantsRead] = this.interest.get(id) ?? [true, false];
          if (!this.live.has(id) || !wantsRead) break;
          const r = this.read(id, MAX_READ);
          if (r.tag === "data") {
            record(KIND.data, { conn: e.val, start: at, len: r.val.length });
            chunks.push(r.val);
            at += r.val.length;
          } else if (r.tag === "eof") {
            record(KIND.eof, { conn: e.val });
          }
          break;
        }
        case "hangup":
          record(KIND.hangup, { conn: e.val.conn, code: IO_ERRORS.indexOf(e.val.error) });
          break;
        case "timer":
          record(KIND.timer, { id: e.val });
          break;
        case "shutdown":
          record(KIND.shutdown);
          break;
        default:
          record(KIND[e.tag], { conn: e.val });
      }
    }
    const input = new Uint8Array(at);
    let o = 0;
    for (const c of chunks) {
      input.set(c, o);
      o += c.length;
    }
    return [records, input];
  }

  // The io interface.
  /** The host's read of a connection for the guest (and the io table's `read`). */
  read(id, max) {
    this.calls.push(["read", id]);
    if (!this.live.has(id)) return { tag: "failed", val: "unknown-conn" };
    const q = this.input.get(id) ?? [];
    if (q.length === 0) return { tag: "would-block" };
    const c = q[0];
    if (c === "eof") return { tag: "eof" }; // sticky
    if (c.error) return { tag: "failed", val: c.error }; // sticky
    max = Math.min(max, MAX_READ);
    if (c.length <= max) {
      q.shift();
      return { tag: "data", val: c };
    }
    q[0] = c.subarray(max);
    return { tag: "data", val: c.slice(0, max) };
  }

  write(id, bytes) {
    this.calls.push(["write", id, bytes.length]);
    if (!this.live.has(id)) return { tag: "failed", val: "unknown-conn" };
    if (this.writeError.has(id)) return { tag: "failed", val: this.writeError.get(id) };
    if (this.shut.has(id)) return { tag: "failed", val: "closed" };
    if (!(bytes instanceof Uint8Array)) throw new TypeError("expected a Uint8Array");
    const room = this.room.get(id) ?? Infinity;
    if (bytes.length === 0) return { tag: "accepted", val: 0 };
    if (room === 0) return { tag: "would-block" };
    const n = Math.min(room, bytes.length);
    this.room.set(id, room - n);
    const before = this.sent.get(id) ?? new Uint8Array(0);
    const all = new Uint8Array(before.length + n);
    all.set(before);
    all.set(bytes.subarray(0, n), before.length);
    this.sent.set(id, all);
    return { tag: "accepted", val: n };
  }

  setInterest(id, r, w) {
    this.calls.push(["setInterest", id, r, w]);
    if (this.live.has(id)) this.interest.set(id, [r, w]);
  }

  shutdownWrite(id) {
    this.calls.push(["shutdownWrite", id]);
    if (this.live.has(id)) this.shut.add(id);
  }

  close(id) {
    this.calls.push(["close", id]);
    if (!this.live.has(id)) return;
    this.live.delete(id);
    this.closed.add(id);
  }

  peer(id) {
    return this.live.has(id) ? `127.0.0.1:${40000 + (id % 20000)}` : null;
  }

  tls(id) {
    return null;
  }

  setTimer(id, ms) {
    this.calls.push(["setTimer", id, ms]);
    if (ms > MAX_TIMER_MS) return "limit-exceeded";
    if (!this.timers.has(id) && this.timers.size >= this.timerLimit) return "limit-exceeded";
    this.timers.set(id, ms);
    return null;
  }

  cancelTimer(id) {
    this.calls.push(["cancelTimer", id]);
    this.timers.delete(id);
  }

  connect(addr) {
    this.calls.push(["connect", addr]);
    if (!/^\d+\.\d+\.\d+\.\d+:\d+$/.test(addr)) return { error: "invalid-address" };
    if (!this.allowConnect) return { error: "not-permitted" };
    return { conn: this.handOut(this.nextConn++) };
  }
}

// Events as the host sends them.
export const ev = {
  accepted: (id) => ({ tag: "accepted", val: id }),
  connected: (id) => ({ tag: "connected", val: id }),
  readable: (id) => ({ tag: "readable", val: id }),
  writable: (id) => ({ tag: "writable", val: id }),
  hangup: (id, error = "reset") => ({ tag: "hangup", val: { conn: id, error } }),
  timer: (id) => ({ tag: "timer", val: id }),
  adopted: (id) => ({ tag: "adopted", val: id }),
  shutdown: () => ({ tag: "shutdown" }),
};

/** Runs one batch of readiness events on `rt` as the host would (see `batch`). */
export function deliver(rt, events) {
  const [records, input] = rt._host.batch(events);
  rt.handle(records, input);
}
