// sandsock.js: the JavaScript SDK for sandsock guests (contract sandsock:net@0.4.0).
//
// A guest is a handler object whose methods the SDK calls as things happen on its
// connections; every method has a default, so a guest writes only what it uses:
//
//   import { Handler, serve } from "./sandsock.js";
//   class Echo extends Handler {
//     onData(conn, bytes) { conn.write(bytes); }
//   }
//   serve(new Echo());
//
// This module touches no WIT import: `sandsock-entry.js` binds it to the host's
// `io` and `log` (the component's entry point), and the unit tests bind it to a
// fake host in plain Node. What it does, as the Rust SDK does:
//
// - reads each readable connection (up to 16 chunks of 64 KiB per event, stopping
//   after a short read: readiness is level-triggered, nothing is lost);
// - queues writes and coalesces them: what a guest writes during one `handle` call
//   goes to the host once per connection, at the end of the call; what the host
//   does not take stays queued, write interest goes on, and it is sent as the peer
//   reads; past HIGH_WATER queued bytes reading stops until the queue is below
//   LOW_WATER (backpressure);
// - closes gracefully (once the queue is sent), and calls `onClose` exactly once
//   per connection, with `null` for the guest's own close, else the io-error name;
// - hides how the toolchain maps WIT `u64` (number or BigInt): handles and timer
//   ids are plain numbers here;
// - never catches what handler code throws from `handle`: the exception leaves
//   it, and the host contains it as a trap (a fresh instance takes over); one
//   thrown from `restore` is a refusal of the snapshot (as the component would
//   make it anyway: an `err` of `state.restore`), not a trap.

/** Queued bytes past which the SDK stops reading a connection. */
export const HIGH_WATER = 256 * 1024;
/** Queued bytes below which a connection paused by HIGH_WATER is read again. */
export const LOW_WATER = 64 * 1024;
/** Bytes asked for in one host `read` (the most the host gives per call). */
export const READ_CHUNK = 64 * 1024;
/** Reads per `readable` event, at most. */
export const READS_PER_EVENT = 16;
/** The longest timer the host accepts, in milliseconds (a day). */
export const MAX_TIMER_MS = 86400000;

// What to do once a connection's queue is sent.
const NOTIFY = 0;
const SHUTDOWN = 1;
const CLOSE = 2;

const EMPTY = new Uint8Array(0);

/** A host call failed; `code` is the WIT io-error name (`not-permitted`, ...). */
export class IoError extends Error {
  constructor(code, what) {
    super(what ? `${what}: ${code}` : code);
    this.name = "IoError";
    this.code = code;
  }
}

// ---------------------------------------------------------------------------
// UTF-8, since QuickJS has no TextEncoder/TextDecoder.

/** A string as UTF-8 bytes. */
export function utf8(text) {
  const n = text.length;
  let ascii = true;
  for (let i = 0; i < n; i++) {
    if (text.charCodeAt(i) > 127) {
      ascii = false;
      break;
    }
  }
  if (ascii) {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  const out = new Uint8Array(n * 3);
  let o = 0;
  for (let i = 0; i < n; i++) {
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // a lone surrogate
    if (c < 0x80) {
      out[o++] = c;
    } else if (c < 0x800) {
      out[o++] = 0xc0 | (c >> 6);
      out[o++] = 0x80 | (c & 63);
    } else if (c < 0x10000) {
      out[o++] = 0xe0 | (c >> 12);
      out[o++] = 0x80 | ((c >> 6) & 63);
      out[o++] = 0x80 | (c & 63);
    } else {
      out[o++] = 0xf0 | (c >> 18);
      out[o++] = 0x80 | ((c >> 12) & 63);
      out[o++] = 0x80 | ((c >> 6) & 63);
      out[o++] = 0x80 | (c & 63);
    }
  }
  return out.slice(0, o);
}

/** UTF-8 bytes as a string (an invalid sequence becomes U+FFFD). */
export function text(bytes, start = 0, end = bytes.length) {
  let s = "";
  let units = [];
  for (let i = start; i < end; ) {
    const b = bytes[i];
    let c = 0xfffd;
    let len = 1;
    if (b < 0x80) {
      c = b;
    } else if (b >= 0xc2 && b < 0xe0 && i + 1 < end && (bytes[i + 1] & 0xc0) === 0x80) {
      c = ((b & 31) << 6) | (bytes[i + 1] & 63);
      len = 2;
    } else if (b >= 0xe0 && b < 0xf0 && i + 2 < end &&
               (bytes[i + 1] & 0xc0) === 0x80 && (bytes[i + 2] & 0xc0) === 0x80) {
      const v = ((b & 15) << 12) | ((bytes[i + 1] & 63) << 6) | (bytes[i + 2] & 63);
      if (v >= 0x800 && (v < 0xd800 || v > 0xdfff)) {
        c = v;
        len = 3;
      }
    } else if (b >= 0xf0 && b < 0xf5 && i + 3 < end && (bytes[i + 1] & 0xc0) === 0x80 &&
               (bytes[i + 2] & 0xc0) === 0x80 && (bytes[i + 3] & 0xc0) === 0x80) {
      const v = ((b & 7) << 18) | ((bytes[i + 1] & 63) << 12) |
                ((bytes[i + 2] & 63) << 6) | (bytes[i + 3] & 63);
      if (v >= 0x10000 && v <= 0x10ffff) {
        c = v;
        len = 4;
      }
    }
    if (c >= 0x10000) {
      c -= 0x10000;
      units.push(0xd800 + (c >> 10), 0xdc00 + (c & 1023));
    } else {
      units.push(c);
    }
    i += len;
    if (units.length >= 4096) {
      s += String.fromCharCode.apply(null, units);
      units = [];
    }
  }
  return s + String.fromCharCode.apply(null, units);
}

/** `data` (a string, a Uint8Array, an ArrayBuffer or an array of bytes) as bytes. */
export function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (typeof data === "string") return utf8(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) return Uint8Array.from(data);
  throw new TypeError(`cannot write ${typeof data}: give a string or a Uint8Array`);
}

/** `chunks` (Uint8Arrays) joined into one. */
export function concat(chunks, total) {
  if (chunks.length === 1) return chunks[0];
  if (total === undefined) {
    total = 0;
    for (const c of chunks) total += c.length;
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Logging over the WIT `log` interface.

// Lines logged before the host is bound (at build time, while the module is
// initialised), written at the first call into the guest.
let early = [];
let logSink = null;

function show(arg) {
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

// ---------------------------------------------------------------------------
// Connections.

/**
 * One connection. Every method is a no-op once the connection is gone, so a
 * handler never checks first; it drops its own state for it in `onClose`.
 * `conn.ctx` is the handler's own slot for per-connection data.
 */
export class Conn {
  constructor(rt, id, connecting) {
    /** The host's handle (a number). */
    this.id = id;
    /** The handler's own per-connection data. */
    this.ctx = null;
    this._rt = rt;
    this._open = true;
    // Bytes written but not taken by the host yet: chunks, oldest first.
    this._queue = [];
    this._queued = 0;
    // The interest the host was last told.
    this._toldRead = true;
    this._toldWrite = false;
    this._eof = false;
    this._backpressure = false;
    this._autoPause = true;
    this._paused = false;
    this._wantWritable = false;
    this._connecting = connecting;
    this._after = NOTIFY;
    this._writeShut = false;
    this._failed = false;
    // In the runtime's list of connections to flush at the end of the call.
    this._dirty = false;
    // The host pushed back on the queue: it is sent on `writable`.
    this._blocked = false;
  }

  /** Whether the connection is still open (neither closed nor hung up). */
  get open() {
    return this._open;
  }

  /** Bytes written that the host has not taken yet. */
  get queued() {
    return this._queued;
  }

  /** The peer's `ip:port`, or null once the connection is gone. */
  get peer() {
    return this._open ? this._rt._host.peer(this.id) : null;
  }

  /** For a connection from a TLS listener: `{version, serverName, alpn}`; else null. */
  get tls() {
    return this._open ? this._rt._host.tls(this.id) : null;
  }

  /**
   * Writes a string (as UTF-8) or bytes, in order after everything written before.
   * Sent at the end of the current call; what the host cannot take is queued and
   * sent as the peer reads. The bytes are not copied: do not change an array after
   * writing it. Dropped after `close` or `shutdownWrite`, and once the connection
   * is gone.
   */
  write(data) {
    if (!this._open || this._writeShut || this._failed || this._after !== NOTIFY) return;
    const bytes = typeof data === "string" ? utf8(data) : toBytes(data);
    if (bytes.length === 0) return;
    this._queue.push(bytes);
    this._queued += bytes.length;
    if (this._blocked) {
      // Behind bytes the host pushed back on: they all go out on `writable`.
      if (!this._backpressure && this._autoPause && this._queued >= HIGH_WATER) {
        this._backpressure = true;
        this._rt._sync(this);
      }
    } else {
      if (this._autoPause && this._queued >= HIGH_WATER) this._backpressure = true;
      if (!this._dirty) {
        this._dirty = true;
        this._rt._dirty.push(this);
      }
    }
  }

  /**
   * Closes gracefully: reading stops at once, what is queued is sent, then the
   * socket is closed and `onClose(conn, null)` follows.
   */
  close() {
    if (!this._open) return;
    if (this._queued === 0 || this._failed) {
      this._rt._finishClose(this, null);
    } else {
      this._after = CLOSE;
      // A queue still to be handed over at the end of the call may close the
      // connection then; the flush tells the host what it must know.
      if (!this._dirty) this._rt._sync(this);
    }
  }

  /**
   * Closes now. What was written during this call (not handed to the host yet) is
   * offered to the host once, as the Rust SDK's writes go out at once; whatever
   * it does not take, and what it had pushed back on, is dropped.
   */
  abort() {
    if (!this._open) return;
    if (this._dirty && this._queued > 0 && !this._connecting && !this._failed) {
      this._rt._host.write(this.id, concat(this._queue, this._queued)); // the result does not matter
    }
    this._rt._finishClose(this, null);
  }

  /** Sends end-of-stream once the queue is sent; reading goes on (half-close). */
  shutdownWrite() {
    if (!this._open || this._writeShut || this._failed || this._after !== NOTIFY) return;
    if (this._queued === 0 && !this._connecting) {
      this._rt._shutdownNow(this);
    } else {
      this._after = SHUTDOWN;
    }
  }

  /** Stops reading until `resumeReading` (backpressure across connections). */
  pauseReading() {
    if (this._open) {
      this._paused = true;
      this._rt._sync(this);
    }
  }

  /** Undoes `pauseReading`. */
  resumeReading() {
    if (this._open) {
      this._paused = false;
      this._rt._sync(this);
    }
  }

  /**
   * What the guest wants to hear: `readable: false` pauses reading;
   * `writable: true` calls `onWritable` whenever the connection can take more,
   * even with nothing queued (turn it off when done).
   */
  setInterest(readable, writable) {
    if (this._open) {
      this._paused = !readable;
      this._wantWritable = !!writable;
      this._rt._sync(this);
    }
  }

  /** Whether this connection's own queue pauses reading it (on by default). */
  setAutoPause(on) {
    if (this._open) {
      this._autoPause = !!on;
      this._updateBackpressure();
      this._rt._sync(this);
    }
  }

  _wantsRead() {
    return !this._eof && !this._backpressure && !this._paused && !this._failed && this._after !== CLOSE;
  }

  _acceptsWrites() {
    return !this._writeShut && !this._failed && this._after === NOTIFY;
  }

  _updateBackpressure() {
    if (!this._autoPause) this._backpressure = false;
    else if (this._queued >= HIGH_WATER) this._backpressure = true;
    else if (this._queued <= LOW_WATER) this._backpressure = false;
  }

  _clearQueue() {
    this._queue = [];
    this._queued = 0;
    this._blocked = false;
    this._updateBackpressure();
  }
}

// ---------------------------------------------------------------------------
// The handler.

/**
 * The base class of a guest's handler: every method has a default. A plain
 * object works too (`serve({ onData(conn, bytes) { ... } })`).
 */
export class Handler {
  /** A connection was accepted. */
  onAccept(conn) {}
  /** An outbound connection made with `connect` completed. */
  onConnected(conn) {}
  /** The peer sent bytes: one chunk (a fresh Uint8Array, of at most 64 KiB). */
  onData(conn, bytes) {}
  /** The peer ended its side; the connection can still be written. */
  onEof(conn) {
    conn.close();
  }
  /**
   * The queue drained after the host pushed back, or after bytes that waited for a
   * connect (or a hot swap) were sent; with `setInterest(_, true)`, whenever there
   * is room. Not after writes the host took at once.
   */
  onWritable(conn) {}
  /** The connection is gone; exactly once. `reason`: null (own close) or an io-error name. */
  onClose(conn, reason) {}
  /** A timer set with `setTimer` fired. */
  onTimer(id) {}
  /** The host is shutting down: finish what is in flight and close. */
  onShutdown() {}
  /** After a hot swap: a connection of the earlier generation is now this one's. */
  onAdopted(conn) {
    this.onAccept(conn);
  }
  /** Before a hot swap: what the next generation should `restore` (bytes). */
  snapshot() {
    return EMPTY;
  }
  /**
   * Takes up an earlier generation's snapshot; return (or throw) a string, or throw
   * a BadSnapshot, to refuse it. Any exception is a refusal, not a trap (the
   * instance goes on with the state `restore` left): read all of it before
   * changing anything (`InputBuffers.decode`, then `merge`).
   */
  restore(bytes) {}
}

const METHODS = Object.getOwnPropertyNames(Handler.prototype).filter((m) => m !== "constructor");

function asHandler(h) {
  if (h instanceof Handler) return h;
  if (h === null || typeof h !== "object") throw new TypeError("serve() takes a handler object");
  if (Object.getPrototypeOf(h) === Object.prototype) {
    Object.setPrototypeOf(h, Handler.prototype);
  } else {
    for (const m of METHODS) {
      if (typeof h[m] !== "function") h[m] = Handler.prototype[m];
    }
  }
  return h;
}

// ---------------------------------------------------------------------------
// The runtime: host events in, handler calls out.

// The runtime whose call is under way (or the served one): what the module-level
// `setTimer`, `connect`, ... act on.
let current = null;
let served = null;

function handleOf(v) {
  return typeof v === "bigint" ? Number(v) : v;
}

// A connection's handle, given the Conn or the handle itself.
function connId(conn) {
  return typeof conn === "object" ? conn.id : conn;
}

/**
 * A handler and the connection state it acts on, over a host: an object with
 * `read(id, max)`, `write(id, bytes)`, `setInterest(id, r, w)`, `shutdownWrite(id)`,
 * `close(id)`, `peer(id)`, `tls(id)`, `setTimer(id, ms)` (null or an io-error
 * name), `cancelTimer(id)`, `connect(addr)` (`{conn}` or `{error}`), as the WIT
 * `io` says them with handles as numbers.
 */
export class Runtime {
  constructor(handler, host) {
    this.handler = asHandler(handler);
    this._host = host;
    this._conns = new Map();
    // Connections handed over at a hot swap, waiting for their `adopted`.
    this._adopting = new Map();
    // Connections with writes to hand to the host at the end of the call.
    this._dirty = [];
    // Connections that ended, with why, whose `onClose` is due.
    this._ended = [];
  }

  /** The open connections. */
  conns() {
    return Array.from(this._conns.values());
  }

  /** The open connection with handle `id`, or undefined. */
  conn(id) {
    return this._conns.get(id);
  }

  /** The WIT `handle` export: one batch of events, in order. */
  handle(events) {
    current = this;
    const h = this.handler;
    for (let i = 0; i < events.length; i++) {
      const ev = events[i];
      switch (ev.tag) {
        case "readable":
          this._readable(this._conns.get(handleOf(ev.val)));
          break;
        case "writable": {
          const c = this._conns.get(handleOf(ev.val));
          if (c) this._writable(c);
          break;
        }
        case "accepted": {
          const id = handleOf(ev.val);
          if (!this._conns.has(id)) {
            const c = new Conn(this, id, false);
            this._conns.set(id, c);
            h.onAccept(c);
          }
          break;
        }
        case "hangup":
          this._forget(handleOf(ev.val.conn), ev.val.error);
          break;
        case "connected": {
          const c = this._conns.get(handleOf(ev.val));
          if (c && c._connecting) {
            c._connecting = false;
            // Bytes written while it was connecting waited: once they are sent the
            // handler hears onWritable, as after the host pushed back.
            const waited = c._queued > 0;
            h.onConnected(c);
            if (c._open) this._handedOver(c, waited);
          }
          break;
        }
        case "timer":
          h.onTimer(handleOf(ev.val));
          break;
        case "adopted":
          this._adopted(handleOf(ev.val));
          break;
        case "shutdown":
          h.onShutdown();
          break;
      }
      if (this._ended.length !== 0) this._deliverCloses();
    }
    this._flushAll();
  }

  /** The WIT `state.snapshot` export: the SDK's "SSDK" layout, as the Rust SDK's. */
  snapshot() {
    current = this;
    const mine = toBytes(this.handler.snapshot() ?? EMPTY);
    this._flushAll();
    const w = new SnapshotWriter();
    for (const b of [83, 83, 68, 75, 2]) w.u8(b); // "SSDK", version 2
    w.bytes(mine);
    w.u64(this._conns.size + this._adopting.size);
    for (const c of [...this._conns.values(), ...this._adopting.values()]) {
      w.u64(c.id);
      w.u8((c._eof ? 1 : 0) | (c._backpressure ? 2 : 0) | (c._autoPause ? 4 : 0) |
           (c._paused ? 8 : 0) | (c._connecting ? 16 : 0) | (c._writeShut ? 32 : 0) |
           (c._failed ? 64 : 0) | (c._wantWritable ? 128 : 0));
      w.u8(c._after);
      w.bytes(concat(c._queue, c._queued));
    }
    return w.finish();
  }

  /**
   * The WIT `state.restore` export: null if taken up, else why not (a string).
   * A snapshot that does not read is refused whole; the connections come all the
   * same, afresh.
   */
  restore(bytes) {
    current = this;
    if (bytes.length === 0) return null;
    let mine;
    const adopting = new Map();
    try {
      const r = new SnapshotReader(bytes);
      for (const b of [83, 83, 68, 75]) {
        if (r.u8() !== b) throw new BadSnapshot("not a sandsock SDK snapshot");
      }
      const version = r.u8();
      if (version !== 1 && version !== 2) throw new BadSnapshot("unknown SDK snapshot version");
      mine = r.bytes();
      for (let n = r.count(); n > 0; n--) {
        const c = new Conn(this, r.u64(), false);
        const flags = r.u8();
        if (version < 2 && flags & 128) throw new BadSnapshot("unknown connection flags");
        const after = r.u8();
        if (after > CLOSE) throw new BadSnapshot("unknown pending action");
        const queue = r.bytes();
        c._eof = !!(flags & 1);
        c._backpressure = !!(flags & 2);
        c._autoPause = !!(flags & 4);
        c._paused = !!(flags & 8);
        c._connecting = !!(flags & 16);
        c._writeShut = !!(flags & 32);
        c._failed = !!(flags & 64);
        c._wantWritable = !!(flags & 128);
        c._after = after;
        if (queue.length) {
          c._queue.push(queue.slice());
          c._queued = queue.length;
        }
        if (adopting.has(c.id)) throw new BadSnapshot("a connection appears twice");
        adopting.set(c.id, c);
      }
      r.finish();
    } catch (e) {
      if (!(e instanceof BadSnapshot)) throw e;
      return `the JS SDK could not read the snapshot (${bytes.length} bytes): ${e.message}; ` +
        "the connections handed over start afresh";
    }
    for (const [id, c] of adopting) if (!this._conns.has(id)) this._adopting.set(id, c);
    let refusal = null;
    if (mine.length !== 0) {
      try {
        const said = this.handler.restore(mine.slice());
        if (typeof said === "string") refusal = said;
      } catch (e) {
        // Whatever it throws is a refusal, not a trap: the component would make
        // any exception from `restore` its `err` anyway (componentize-qjs maps
        // exceptions from a result-returning export). One that is not a refusal
        // (a bug) is logged with its stack.
        if (typeof e === "string") {
          refusal = e;
        } else {
          if (!(e instanceof BadSnapshot)) log.error("restore threw:", e);
          refusal = e instanceof Error ? e.message || String(e) : show(e);
        }
      }
      if (refusal !== null) refusal = `the handler refused its state: ${refusal}`;
    }
    this._flushAll();
    return refusal;
  }

  /** Arms (or re-arms) the one-shot timer `id`; throws IoError (`limit-exceeded`). */
  setTimer(id, ms) {
    ms = Math.max(0, Math.ceil(+ms || 0));
    const error = ms > MAX_TIMER_MS ? "limit-exceeded" : this._host.setTimer(id, ms);
    if (error) throw new IoError(error, `setTimer(${id}, ${ms})`);
  }

  /** Disarms the timer `id`; nothing happens if it is not armed. */
  cancelTimer(id) {
    this._host.cancelTimer(id);
  }

  /**
   * Opens an outbound connection to `ip:port`: a Conn usable at once (writes wait
   * for it), then `onConnected`, or `onClose` with `refused`/`unreachable`.
   * Throws IoError (`not-permitted`, `invalid-address`, ...) if it cannot start.
   */
  connect(addr) {
    const r = this._host.connect(addr);
    if (r.error) throw new IoError(r.error, `connect(${addr})`);
    const c = new Conn(this, r.conn, true);
    this._conns.set(c.id, c);
    return c;
  }

  // Internals.

  _readable(c) {
    if (c === undefined) return;
    const h = this.handler;
    for (let n = 0; n < READS_PER_EVENT; n++) {
      if (!c._open || !c._wantsRead()) return;
      const r = this._host.read(c.id, READ_CHUNK);
      switch (r.tag) {
        case "data":
          h.onData(c, r.val);
          if (r.val.length < READ_CHUNK) return;
          break;
        case "would-block":
          return;
        case "eof":
          c._eof = true;
          h.onEof(c);
          // No more reading (after onEof, which usually closes: one call less).
          this._sync(c);
          return;
        default: // failed
          this._readFailed(c, r.val);
          return;
      }
    }
  }

  /** The host's `writable`: onWritable if the host had pushed back, or it was asked for. */
  _writable(c) {
    const owed = c._blocked;
    if (this._flush(c) && (owed || c._wantWritable)) this.handler.onWritable(c);
  }

  /**
   * After onConnected or onAdopted: sends what is queued; onWritable only if bytes
   * had waited (`waited`: queued before the call, while connecting or by the
   * earlier generation) or it was asked for; not for writes made in the call
   * that the host took at once.
   */
  _handedOver(c, waited) {
    if (this._flush(c) && (waited || c._wantWritable)) this.handler.onWritable(c);
  }

  _adopted(id) {
    if (this._conns.has(id)) return;
    let c = this._adopting.get(id);
    if (c) this._adopting.delete(id);
    else c = new Conn(this, id, false);
    this._conns.set(id, c);
    // The host kept the earlier generation's interest: say what this one wants.
    const r = c._wantsRead();
    const w = !c._connecting && !c._failed && (c._queued > 0 || (c._wantWritable && c._acceptsWrites()));
    this._host.setInterest(id, r, w);
    c._toldRead = r;
    c._toldWrite = w;
    const waited = c._queued > 0;
    this.handler.onAdopted(c);
    if (c._open) this._handedOver(c, waited);
  }

  /** Hands the host what was written during the call, once per connection. */
  _flushAll() {
    while (this._dirty.length !== 0 || this._ended.length !== 0) {
      const dirty = this._dirty;
      this._dirty = [];
      for (let i = 0; i < dirty.length; i++) {
        const c = dirty[i];
        if (c._dirty && c._open) this._flush(c);
      }
      if (this._ended.length !== 0) this._deliverCloses();
    }
  }

  /**
   * Hands the host as much of the queue as it takes, and does what waited for the
   * queue to drain; true if the handler should hear `onWritable`.
   */
  _flush(c) {
    c._dirty = false;
    if (c._connecting || c._failed) return false;
    if (c._queued === 0) {
      if (c._after !== NOTIFY) {
        this._drained(c); // a shutdown or close that waited for a connect
        return false;
      }
      return c._wantWritable && c._acceptsWrites();
    }
    const q = c._queue;
    const bytes = q.length === 1 ? q[0] : concat(q, c._queued);
    const r = this._host.write(c.id, bytes);
    if (r.tag === "accepted") {
      const n = r.val;
      if (n >= bytes.length) {
        c._queue = [];
        c._queued = 0;
      } else {
        c._queue = [bytes.subarray(n)];
        c._queued = bytes.length - n;
      }
    } else if (r.tag === "would-block") {
      if (q.length !== 1) c._queue = [bytes];
    } else {
      this._writeFailed(c, r.val);
      return false;
    }
    c._updateBackpressure();
    if (c._queued === 0) {
      c._blocked = false;
      return this._drained(c);
    }
    c._blocked = true;
    this._sync(c);
    return false;
  }

  /** The queue is empty: does what waited for it; true if that is `onWritable`. */
  _drained(c) {
    const after = c._after;
    c._after = NOTIFY;
    if (after === SHUTDOWN) {
      this._shutdownNow(c);
      return false;
    }
    if (after === CLOSE) {
      this._finishClose(c, null);
      return false;
    }
    this._sync(c);
    return true;
  }

  _shutdownNow(c) {
    this._host.shutdownWrite(c.id);
    c._writeShut = true;
    this._sync(c);
  }

  /** Tells the host the interest `c` calls for, if it changed. */
  _sync(c) {
    if (!c._open) return;
    const r = c._wantsRead();
    const w = !c._connecting && !c._failed &&
      (c._queued > 0 && !c._dirty || (c._wantWritable && c._acceptsWrites()));
    if (r !== c._toldRead || w !== c._toldWrite) {
      this._host.setInterest(c.id, r, w);
      c._toldRead = r;
      c._toldWrite = w;
    }
  }

  _readFailed(c, error) {
    if (error === "reset") this._markFailed(c);
    else if (error === "unknown-conn") this._forget(c.id, error);
    else this._finishClose(c, error);
  }

  _writeFailed(c, error) {
    if (error === "reset") {
      this._markFailed(c);
    } else if (error === "unknown-conn") {
      this._forget(c.id, error);
    } else if (error === "closed") {
      c._writeShut = true;
      c._clearQueue();
      if (c._after === CLOSE) {
        this._finishClose(c, null);
      } else {
        c._after = NOTIFY;
        this._sync(c);
      }
    } else {
      this._finishClose(c, error);
    }
  }

  /** A reset: drop the queue, stop all interest until the host's `hangup`. */
  _markFailed(c) {
    c._failed = true;
    c._clearQueue();
    c._after = NOTIFY;
    this._sync(c);
  }

  _finishClose(c, reason) {
    this._host.close(c.id);
    this._forget(c.id, reason);
  }

  _forget(id, reason) {
    let c = this._conns.get(id);
    if (c !== undefined) {
      this._conns.delete(id);
    } else {
      c = this._adopting.get(id);
      if (c === undefined) return;
      this._adopting.delete(id);
    }
    c._open = false;
    c._clearQueue();
    this._ended.push(c, reason ?? null);
  }

  _deliverCloses() {
    const ended = this._ended;
    for (let i = 0; i < ended.length; i += 2) {
      this.handler.onClose(ended[i], ended[i + 1]);
    }
    ended.length = 0;
  }
}

// ---------------------------------------------------------------------------
// The guest's one handler, and the calls a handler makes beside its connections.

/** Makes `handler` this guest's handler (call it once, at the top of app.js). */
export function serve(handler) {
  if (served) throw new Error("serve() was called twice");
  served = asHandler(handler);
  return served;
}

/** Binds the served handler to a host: what the entry does (and tests may). */
export function start(host) {
  if (!served) throw new Error("the app did not call serve(handler)");
  current = new Runtime(served, host);
  return current;
}

function runtime() {
  if (!current) throw new Error("no sandsock runtime yet: call this from a handler method");
  return current;
}

/** Arms (or re-arms) the one-shot timer `id` (a number) to fire after `ms`. */
export function setTimer(id, ms) {
  runtime().setTimer(id, ms);
}

/** Disarms the timer `id`. */
export function cancelTimer(id) {
  runtime().cancelTimer(id);
}

/** Opens an outbound connection to `ip:port` (see Runtime.connect). */
export function connect(addr) {
  return runtime().connect(addr);
}

/** The open connection with handle `id`, or undefined. */
export function getConn(id) {
  return runtime().conn(id);
}

/** The open connections. */
export function conns() {
  return runtime().conns();
}

/** Closes every open connection gracefully. */
export function closeAll() {
  for (const c of runtime().conns()) c.close();
}

// ---------------------------------------------------------------------------
// Input helpers: what arrived but is not complete yet, per connection.

/**
 * Splits each connection's chunks into `\n`-terminated lines of at most `maxLine`
 * bytes (not counting the `\n`). `feed` calls `onLine(bytes)` for each complete
 * line, `\n` included (`trimLine` takes it off); it returns false if a line was too
 * long, after dropping what was held (answer and close: the stream cannot be
 * resynchronised).
 */
export class LineBuffers {
  constructor(maxLine = 64 * 1024) {
    this.maxLine = maxLine;
    this._held = new Map();
  }

  feed(conn, chunk, onLine) {
    const id = connId(conn);
    let start = 0;
    const held = this._held.get(id);
    if (held !== undefined) {
      const end = chunk.indexOf(10);
      if (end < 0) return this._hold(id, chunk, 0);
      if (held.length + end > this.maxLine) return this._tooLong(id);
      this._held.delete(id);
      onLine(concat([held, chunk.subarray(0, end + 1)]));
      start = end + 1;
    }
    for (;;) {
      const end = chunk.indexOf(10, start);
      if (end < 0) break;
      if (end - start > this.maxLine) return this._tooLong(id);
      onLine(chunk.subarray(start, end + 1));
      start = end + 1;
    }
    return this._hold(id, chunk, start);
  }

  /** The unfinished line held for `conn` (empty if none). */
  held(conn) {
    return this._held.get(connId(conn)) ?? EMPTY;
  }

  /** Drops what is held for `conn`: call it from `onClose`. */
  forget(conn) {
    this._held.delete(connId(conn));
  }

  /**
   * Writes every unfinished line into a snapshot, in the layout InputBuffers.encode
   * describes (the Rust SDK's `LineBuffers::encode`).
   */
  encode(w) {
    encodeHeld(this._held, w);
  }

  /**
   * Reads what `encode` wrote, for lines of at most `maxLine` bytes, without
   * applying it (see `merge`); throws BadSnapshot. A held line longer than
   * `maxLine`, or holding a `\n`, could not come from a LineBuffers.
   */
  static decode(r, maxLine = 64 * 1024) {
    const lines = new LineBuffers(maxLine);
    lines._held = decodeHeld(r, (bytes) => {
      if (bytes.length > maxLine || bytes.indexOf(10) >= 0) {
        throw new BadSnapshot("an unfinished line is not one");
      }
    });
    return lines;
  }

  /** Takes over what `other` holds (a decoded snapshot); `other` wins where both hold. */
  merge(other) {
    for (const [id, bytes] of other._held) this._held.set(id, bytes);
  }

  _hold(id, chunk, start) {
    if (start >= chunk.length) return true;
    const held = this._held.get(id);
    const tail = chunk.subarray(start);
    if ((held ? held.length : 0) + tail.length > this.maxLine) return this._tooLong(id);
    this._held.set(id, held ? concat([held, tail]) : tail.slice());
    return true;
  }

  _tooLong(id) {
    this._held.delete(id);
    return false;
  }
}

/** `line` without its `\n` or `\r\n`. */
export function trimLine(line) {
  let end = line.length;
  if (end && line[end - 1] === 10) end--;
  if (end && line[end - 1] === 13) end--;
  return line.subarray(0, end);
}

/**
 * Holds each connection's unconsumed input for a parser that takes what it can:
 * `feed(conn, chunk, parse)` calls `parse(bytes)` with what was held plus the
 * chunk; `parse` returns how many bytes it consumed, and the rest is held.
 * Bounding what it leaves unconsumed is the parser's job.
 */
export class InputBuffers {
  constructor() {
    this._held = new Map();
  }

  feed(conn, chunk, parse) {
    const id = connId(conn);
    const held = this._held.get(id);
    const input = held === undefined ? chunk : concat([held, chunk]);
    if (held !== undefined) this._held.delete(id);
    const used = parse(input);
    if (used < input.length) {
      this._held.set(id, input.slice(Math.max(0, used)));
    }
  }

  /** Whether something is held for `conn`. */
  isHolding(conn) {
    return this._held.has(connId(conn));
  }

  /** What is held for `conn` (empty if nothing). */
  held(conn) {
    return this._held.get(connId(conn)) ?? EMPTY;
  }

  /** Drops what is held for `conn`: call it from `onClose`. */
  forget(conn) {
    this._held.delete(connId(conn));
  }

  /**
   * Writes what is held into a snapshot, in the Rust SDK's layout (shared with
   * LineBuffers): a u64 count of connections, then per connection its handle (u64)
   * and its unconsumed input (bytes: a u64 length, then the bytes).
   */
  encode(w) {
    encodeHeld(this._held, w);
  }

  /**
   * Reads what `encode` wrote (a Rust guest's `InputBuffers::encode` too), without
   * applying it (see `merge`); throws BadSnapshot, having changed nothing.
   */
  static decode(r) {
    const input = new InputBuffers();
    input._held = decodeHeld(r, () => {});
    return input;
  }

  /** Takes over what `other` holds (a decoded snapshot); `other` wins where both hold. */
  merge(other) {
    for (const [id, bytes] of other._held) this._held.set(id, bytes);
  }
}

function encodeHeld(held, w) {
  w.u64(held.size);
  for (const [id, bytes] of held) {
    w.u64(id);
    w.bytes(bytes);
  }
}

function decodeHeld(r, check) {
  const held = new Map();
  for (let n = r.count(); n > 0; n--) {
    const id = r.u64();
    const bytes = r.bytes();
    check(bytes);
    if (bytes.length === 0) continue;
    if (held.has(id)) throw new BadSnapshot("a connection appears twice");
    held.set(id, bytes.slice());
  }
  return held;
}

// ---------------------------------------------------------------------------
// Snapshots: integers little-endian, byte strings with a u64 length in front (the
// Rust SDK's SnapshotWriter/SnapshotReader layout).

/** A snapshot could not be read. */
export class BadSnapshot extends Error {
  constructor(reason) {
    super(reason);
    this.name = "BadSnapshot";
  }
}

export class SnapshotWriter {
  constructor() {
    this._parts = [];
    this._len = 0;
  }

  u8(v) {
    this._push(Uint8Array.of(v & 255));
  }

  /** A u64 (a number below 2^53), little-endian. */
  u64(v) {
    const b = new Uint8Array(8);
    let lo = v % 4294967296;
    let hi = Math.floor(v / 4294967296);
    for (let i = 0; i < 4; i++) {
      b[i] = lo & 255;
      lo = Math.floor(lo / 256);
      b[4 + i] = hi & 255;
      hi = Math.floor(hi / 256);
    }
    this._push(b);
  }

  /** Bytes (or a string, as UTF-8), with their length in front. */
  bytes(data) {
    const b = toBytes(data);
    this.u64(b.length);
    if (b.length) this._push(b);
  }

  finish() {
    return concat(this._parts, this._len);
  }

  _push(b) {
    this._parts.push(b);
    this._len += b.length;
  }
}

export class SnapshotReader {
  constructor(bytes) {
    this._b = bytes;
    this._at = 0;
  }

  u8() {
    this._need(1);
    return this._b[this._at++];
  }

  u64() {
    this._need(8);
    const b = this._b;
    const at = this._at;
    const lo = (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16)) + b[at + 3] * 16777216;
    const hi = (b[at + 4] | (b[at + 5] << 8) | (b[at + 6] << 16)) + b[at + 7] * 16777216;
    if (hi >= 2097152) throw new BadSnapshot("a number past 2^53");
    this._at += 8;
    return hi * 4294967296 + lo;
  }

  /** Bytes, as a view into the snapshot. */
  bytes() {
    const n = this.u64();
    this._need(n);
    const out = this._b.subarray(this._at, this._at + n);
    this._at += n;
    return out;
  }

  /** A count of entries that follow, each at least one byte. */
  count() {
    const n = this.u64();
    if (n > this._b.length - this._at) throw new BadSnapshot("a count past the end");
    return n;
  }

  remaining() {
    return this._b.length - this._at;
  }

  finish() {
    if (this._at !== this._b.length) throw new BadSnapshot("trailing bytes");
  }

  _need(n) {
    if (this._b.length - this._at < n) throw new BadSnapshot("truncated");
  }
}
