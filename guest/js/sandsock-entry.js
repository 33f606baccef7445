// sandsock-entry.js: the component's entry point. It binds the SDK (sandsock.js)
// to the host's WIT imports and exports what the `stateful-handler` world of
// sandsock:net@0.4.0 asks for; the guest's own code is ./app.js, which calls
// serve(handler). build.sh puts the three files side by side and builds this one.
//
// This is the only file that touches the generated bindings, and it hides how a
// toolchain maps them: `u64` as a number (componentize-qjs) or a BigInt
// (componentize-js), an error `result` as an exception with the case name in
// `.payload` or `.message`.

import * as io from "sandsock:net/io@0.4.0";
import * as wlog from "sandsock:net/log@0.4.0";
import { setLogSink, start } from "./sandsock.js";
import "./app.js";

const ioRead = io.read;
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

// The io-error case a failed call threw.
function errorCase(e) {
  const v = e && typeof e === "object" ? e.payload ?? e.val ?? e.message : e;
  return typeof v === "string" ? v.replace(/^Error: /, "") : String(v);
}

function host(big) {
  const u64 = big ? BigInt : (x) => x;
  return {
    read: big ? (c, max) => ioRead(BigInt(c), max) : ioRead,
    write: big ? (c, bytes) => ioWrite(BigInt(c), bytes) : ioWrite,
    setInterest: big ? (c, r, w) => ioSetInterest(BigInt(c), r, w) : ioSetInterest,
    shutdownWrite: (c) => ioShutdownWrite(u64(c)),
    close: big ? (c) => ioClose(BigInt(c)) : ioClose,
    peer: (c) => ioPeer(u64(c)) ?? null,
    tls: (c) => ioTls(u64(c)) ?? null,
    setTimer(id, ms) {
      try {
        ioSetTimer(u64(id), ms);
        return null;
      } catch (e) {
        return errorCase(e);
      }
    },
    cancelTimer: (id) => ioCancelTimer(u64(id)),
    connect(addr) {
      try {
        return { conn: Number(ioConnect(String(addr))) };
      } catch (e) {
        return { error: errorCase(e) };
      }
    },
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
  for (const ev of events ?? []) {
    const v = ev.tag === "hangup" ? ev.val.conn : ev.val;
    if (v !== undefined) {
      big = typeof v === "bigint";
      decided = true;
      break;
    }
  }
  rt._host = host(big);
  if (!bound) {
    bound = true;
    setLogSink((level, line) => logWrite(level, line));
  }
}

export function handle(events) {
  if (!decided) bind(events);
  rt.handle(events);
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
