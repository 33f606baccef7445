// sandsock-entry.js: the component's entry point. It binds the SDK (sandsock.js)
// to the host's WIT imports and exports what the `stateful-handler` world of
// sandsock:net@1.1.0 asks for; the guest's own code is ./app.js, which calls
// serve(handler). build.sh puts them side by side (with the SDK's sandsock/ modules)
// and builds this one.
//
// This is the only file that touches the generated bindings, and it hides how a
// toolchain maps them: `u64` as a number (componentize-qjs) or a BigInt
// (componentize-js), an error `result` as an exception whose `.payload` is the
// io-error case name (componentize-qjs's error, and componentize-js's
// ComponentError). Any other exception from an import is rethrown: it is a bug,
// not an answer of the host.

import * as io from "sandsock:net/io@1.1.0";
import * as wlog from "sandsock:net/log@1.1.0";
import * as wstore from "sandsock:net/store@1.1.0";
import * as wtopics from "sandsock:net/topics@1.1.0";
import { setLogSink, start } from "./sandsock.js";
import "./app.js";

const ioWrite = io.write;
const ioSetInterest = io.setInterest;
const ioShutdownWrite = io.shutdownWrite;
const ioClose = io.close;
const ioPeer = io.peer;
const ioTls = io.tls;
const ioSetTimer = io.setTimer;
const ioCancelTimer = io.cancelTimer;
const ioConnect = io.connect;
const logWrite = wlog.write;

// The io-error cases (sandsock:net/types@1.1.0 `io-error`).
const IO_ERRORS = new Set([
  "closed", "reset", "unknown-conn", "not-permitted", "limit-exceeded", "refused",
  "unreachable", "invalid-address",
]);

// The store's outcome cases (sandsock:net/store@1.1.0 `outcome`): what its calls
// that answer a `result` may throw.
const OUTCOMES = new Set([
  "ok", "not-found", "conflict", "key-too-large", "value-too-large", "namespace-full",
  "not-a-number", "bad-name", "busy", "unavailable", "timed-out", "failed",
]);

// The case of `cases` a failed call threw, or null if `e` is not one.
function errorCase(e, cases = IO_ERRORS) {
  const v = e !== null && typeof e === "object" ? e.payload : e;
  return typeof v === "string" && cases.has(v) ? v : null;
}

// Calls `f`; the case of `cases` it threw, or null if it returned. Rethrows
// anything else.
function failure(f, cases = IO_ERRORS) {
  try {
    f();
    return null;
  } catch (e) {
    const code = errorCase(e, cases);
    if (code === null) throw e;
    return code;
  }
}

// A store or topics call answering a `result`: `{ ok }` or `{ error }`.
function outcome(f) {
  let ok;
  const error = failure(() => {
    ok = f();
  }, OUTCOMES);
  return error === null ? { ok: typeof ok === "bigint" ? Number(ok) : ok } : { error };
}

function host(big) {
  const u64 = big ? BigInt : (x) => x;
  return {
    write: big ? (c, bytes) => ioWrite(BigInt(c), bytes) : ioWrite,
    setInterest: big ? (c, r, w) => ioSetInterest(BigInt(c), r, w) : ioSetInterest,
    shutdownWrite: (c) => ioShutdownWrite(u64(c)),
    close: big ? (c) => ioClose(BigInt(c)) : ioClose,
    peer: (c) => ioPeer(u64(c)) ?? null,
    tls: (c) => ioTls(u64(c)) ?? null,
    setTimer: (id, ms) => failure(() => ioSetTimer(u64(id), ms)),
    cancelTimer: (id) => ioCancelTimer(u64(id)),
    connect(addr) {
      let conn;
      const error = failure(() => {
        conn = ioConnect(String(addr));
      });
      return error === null ? { conn: Number(conn) } : { error };
    },
    // The store and topics (contract 1.1): operation ids are plain numbers here.
    storeOpen: (name) => outcome(() => wstore.open(name)),
    storeGet: (b, key) => Number(wstore.get(b, key)),
    storeSet: (b, key, value) => Number(wstore.set(b, key, value)),
    storeDelete: (b, key) => Number(wstore.delete(b, key)),
    storeExists: (b, key) => Number(wstore.exists(b, key)),
    storeListKeys: (b, cursor) => Number(wstore.listKeys(b, cursor ?? undefined)),
    storeIncrement: (b, key, delta) => Number(wstore.increment(b, key, big ? BigInt(delta) : delta)),
    storeCompareAndSwap: (b, key, old, next) =>
      Number(wstore.compareAndSwap(b, key, old ?? undefined, next)),
    storeGetMany: (b, keys) => Number(wstore.getMany(b, keys)),
    storeSetMany: (b, entries) => Number(wstore.setMany(b, entries)),
    storeDeleteMany: (b, keys) => Number(wstore.deleteMany(b, keys)),
    subscribe: (topic) => outcome(() => wtopics.subscribe(topic)),
    unsubscribe: (s) => wtopics.unsubscribe(u64(s)),
    publish: (topic, message) => outcome(() => wtopics.publish(topic, message)),
  };
}

const rt = start(null);
let bound = false;
let decided = false;

// Binds on the first call into the guest (during the build, under Wizer, the
// imports cannot be called), and again at the first batch with a handle in it,
// which shows whether this toolchain gives `u64` as a BigInt.
function bind(events) {
  let big = false;
  const first = events?.[0];
  if (first !== undefined) {
    big = typeof first.conn === "bigint";
    decided = true;
  }
  rt._host = host(big);
  if (!bound) {
    bound = true;
    setLogSink((level, line) => logWrite(level, line));
  }
}

export function handle(events, input) {
  if (!decided) bind(events);
  rt.handle(events, input);
}

export const state = {
  snapshot() {
    if (!bound) bind(null);
    return rt.snapshot();
  },
  restore(bytes) {
    if (!bound) bind(null);
    const refusal = rt.restore(bytes);
    if (refusal !== null) throw refusal;
  },
};
