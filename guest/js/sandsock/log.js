// sandsock/log.js: logging over the WIT `log` interface, and `console` over it
// where the toolchain has none.

import { text } from "./bytes.js";

// Lines logged before the host is bound (at build time, while the module is
// initialised), written at the first call into the guest.
let early = [];
let logSink = null;

// One argument of a log call as text.
export function show(arg) {
  if (typeof arg === "string") return arg;
  if (arg instanceof Error) return arg.stack ? `${arg}\n${arg.stack}` : String(arg);
  if (arg instanceof Uint8Array) return `Uint8Array(${arg.length}) ${JSON.stringify(text(arg.subarray(0, 64)))}`;
  if (typeof arg === "object" && arg !== null) {
    try {
      return JSON.stringify(arg, (k, v) => (typeof v === "bigint" ? String(v) : v));
    } catch {
      return String(arg);
    }
  }
  return String(arg);
}

function emit(level, args) {
  let line = args.length === 1 ? show(args[0]) : args.map(show).join(" ");
  if (logSink) {
    logSink(level, line);
  } else if (early.length < 64) {
    early.push([level, line]);
  }
}

/** The guest's logger: one line per call, to the host's log (`RUST_LOG` filters). */
export const log = {
  error: (...args) => emit("error", args),
  warn: (...args) => emit("warn", args),
  info: (...args) => emit("info", args),
  debug: (...args) => emit("debug", args),
  trace: (...args) => emit("trace", args),
};

/** Sets where log lines go (the entry's `log.write`, or a test's function). */
export function setLogSink(sink) {
  logSink = sink;
  if (sink) {
    const lines = early;
    early = [];
    for (const [level, line] of lines) sink(level, line);
  }
}

/**
 * Installs `console` over `log` where the toolchain has none (QuickJS). Done when
 * this module loads, before app.js runs, so that app.js may log at its top level.
 */
export function installConsole() {
  if (typeof globalThis.console === "object" && globalThis.console) return;
  globalThis.console = {
    log: log.info,
    info: log.info,
    warn: log.warn,
    error: log.error,
    debug: log.debug,
    trace: log.trace,
  };
}

installConsole();
