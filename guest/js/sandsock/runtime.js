// sandsock/runtime.js: the runtime (host events in, handler calls out), the
// guest's one served handler, and the calls a handler makes beside its
// connections (timers, connect, ...).

import { EMPTY, concat, toBytes } from "./bytes.js";
import { CLOSE, Conn, NOTIFY, SHUTDOWN } from "./conn.js";
import { asHandler } from "./handler.js";
import { log, show } from "./log.js";
import { BadSnapshot, SnapshotReader, SnapshotWriter } from "./snapshot.js";
import { Answer } from "./answer.js";

/** The most the host reads for a connection at once: one `onData` gets at most this
 * much (unless it waited while reading was paused). */
export const READ_CHUNK = 64 * 1024;
/** Reads per `readable` event before contract 1.0. Since 1.0 the host reads for the
 * guest, one chunk per connection per call: kept so that code importing it loads. */
export const READS_PER_EVENT = 16;

// The kinds of event of contract 1.1 (the WIT's numbers; 9 to 11 since 1.1).
const ACCEPTED = 0;
const CONNECTED = 1;
const DATA = 2;
const EOF = 3;
const WRITABLE = 4;
const HANGUP = 5;
const TIMER = 6;
const ADOPTED = 7;
const SHUTDOWN_EVENT = 8;
const STORE = 9;
const MESSAGE = 10;
const LOST = 11;
// The io-error names, by position: what a hangup event's code says.
const IO_ERRORS = [
  "closed", "reset", "unknown-conn", "not-permitted", "limit-exceeded", "refused",
  "unreachable", "invalid-address",
];
/** The longest timer the host accepts, in milliseconds (a day). */
export const MAX_TIMER_MS = 86400000;

/** A host call failed; `code` is the WIT io-error name (`not-permitted`, ...). */
export class IoError extends Error {
  constructor(code, what) {
    super(what ? `${what}: ${code}` : code);
    this.name = "IoError";
    this.code = code;
  }
}

// The runtime whose call is under way (or the served one): what the module-level
// `setTimer`, `connect`, ... act on.
let current = null;
let served = null;

function handleOf(v) {
  return typeof v === "bigint" ? Number(v) : v;
}

/**
 * A handler and the connection state it acts on, over a host: an object with
 * `write(id, bytes)`, `setInterest(id, r, w)`, `shutdownWrite(id)`,
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
    // Connections with input waiting for reading to resume.
    this._heldBack = [];
  }

  /** The open connections. */
  conns() {
    return Array.from(this._conns.values());
  }

  /** The open connection with handle `id`, or undefined. */
  conn(id) {
    return this._conns.get(id);
  }

  /**
   * The WIT `handle` export: one batch of events, in order, and `input`, the bytes
   * of its `data` events back to back (the host read them before the call). A
   * kind this SDK does not know (a later 1.x's) is skipped.
   */
  handle(events, input) {
    current = this;
    const h = this.handler;
    for (let i = 0; i < events.length; i++) {
      const ev = events[i];
      switch (ev.kind) {
        case DATA: {
          const c = this._conns.get(handleOf(ev.conn));
          if (c === undefined) continue;
          const bytes = input.slice(ev.start, ev.start + ev.len);
          if (c._waiting.length !== 0 || c._waitingEof || !c._wantsRead()) {
            this._holdBack(c, bytes, false);
          } else {
            h.onData(c, bytes);
          }
          break;
        }
        case WRITABLE: {
          const c = this._conns.get(handleOf(ev.conn));
          if (c) this._writable(c);
          break;
        }
        case ACCEPTED: {
          const id = handleOf(ev.conn);
          if (!this._conns.has(id)) {
            const c = new Conn(this, id, false);
            this._conns.set(id, c);
            h.onAccept(c);
          }
          break;
        }
        case EOF: {
          const c = this._conns.get(handleOf(ev.conn));
          if (c === undefined) continue;
          if (c._waiting.length !== 0 || c._waitingEof || !c._wantsRead()) {
            this._holdBack(c, null, true);
          } else {
            this._eof(c);
          }
          break;
        }
        case HANGUP:
          this._forget(handleOf(ev.conn), IO_ERRORS[ev.code] ?? "reset");
          break;
        case CONNECTED: {
          const c = this._conns.get(handleOf(ev.conn));
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
        case TIMER:
          h.onTimer(handleOf(ev.id));
          break;
        case ADOPTED:
          this._adopted(handleOf(ev.conn));
          break;
        case SHUTDOWN_EVENT:
          h.onShutdown();
          break;
        case STORE: {
          const bytes = input.subarray(ev.start, ev.start + ev.len);
          h.onStore(handleOf(ev.id), new Answer(ev.code, ev.value, bytes));
          break;
        }
        case MESSAGE:
          h.onMessage(handleOf(ev.id), input.subarray(ev.start, ev.start + ev.len));
          break;
        case LOST:
          h.onLost(handleOf(ev.id), Number(ev.value));
          break;
        default:
          continue;
      }
      // What waited may resume, and an onClose may resume more: until quiet.
      while ((this._heldBack.length !== 0 && this._resume()) || this._ended.length !== 0) {
        this._deliverCloses();
      }
    }
    this._flushAll();
  }

  /** The WIT `state.snapshot` export: the SDK's "SSDK" layout, as the Rust SDK's. */
  snapshot() {
    current = this;
    const mine = toBytes(this.handler.snapshot() ?? EMPTY);
    this._flushAll();
    const w = new SnapshotWriter();
    // "SSDK", version 3; 2 while nothing is held, so that an SDK from before
    // contract 1.0 can take it up (a rollback loses no state then).
    const conns = [...this._conns.values(), ...this._adopting.values()];
    const version = conns.some((c) => c._waiting.length !== 0 || c._waitingEof) ? 3 : 2;
    for (const b of [83, 83, 68, 75, version]) w.u8(b);
    w.bytes(mine);
    w.u64(this._conns.size + this._adopting.size);
    for (const c of conns) {
      w.u64(c.id);
      w.u8((c._eof ? 1 : 0) | (c._backpressure ? 2 : 0) | (c._autoPause ? 4 : 0) |
           (c._paused ? 8 : 0) | (c._connecting ? 16 : 0) | (c._writeShut ? 32 : 0) |
           (c._failed ? 64 : 0) | (c._wantWritable ? 128 : 0));
      w.u8(c._after);
      w.bytes(concat(c._queue, c._queued));
      if (version >= 3) {
        w.bytes(concat(c._waiting));
        w.u8(c._waitingEof ? 1 : 0);
      }
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
      if (version < 1 || version > 3) throw new BadSnapshot("unknown SDK snapshot version");
      mine = r.bytes();
      for (let n = r.count(); n > 0; n--) {
        const c = new Conn(this, r.u64(), false);
        const flags = r.u8();
        if (version < 2 && flags & 128) throw new BadSnapshot("unknown connection flags");
        const after = r.u8();
        if (after > CLOSE) throw new BadSnapshot("unknown pending action");
        const queue = r.bytes();
        if (version >= 3) {
          const waiting = r.bytes();
          if (waiting.length) c._waiting.push(waiting.slice());
          const eof = r.u8();
          if (eof > 1) throw new BadSnapshot("unknown end-of-stream flag");
          c._waitingEof = eof === 1;
        }
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

  /** The peer's end-of-stream: onEof, and no more reading. */
  _eof(c) {
    c._eof = true;
    this.handler.onEof(c);
    // No more reading (after onEof, which usually closes: one call less).
    if (c._open) this._sync(c);
  }

  /** Input that came while reading was paused: kept, in order, until it resumes. */
  _holdBack(c, bytes, eof) {
    if (c._waiting.length === 0 && !c._waitingEof) this._heldBack.push(c);
    if (bytes !== null && bytes.length !== 0) c._waiting.push(bytes);
    if (eof) c._waitingEof = true;
  }

  /**
   * Hands over what waited, on each connection whose reading resumed (also one a
   * handler resumes meanwhile); true if it handed anything over.
   */
  _resume() {
    let delivered = false;
    for (;;) {
      const ready = this._heldBack.filter((c) => !c._open || c._wantsRead());
      if (ready.length === 0) return delivered;
      this._heldBack = this._heldBack.filter((c) => c._open && !c._wantsRead());
      for (const c of ready) {
        if (!c._open) continue;
        delivered = true;
        const chunks = c._waiting;
        const eof = c._waitingEof;
        c._waiting = [];
        c._waitingEof = false;
        if (chunks.length !== 0) this.handler.onData(c, concat(chunks));
        if (eof && c._open) {
          if (c._wantsRead() && c._waiting.length === 0) this._eof(c);
          else this._holdBack(c, null, true);
        }
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
    if (c._waiting.length !== 0 || c._waitingEof) this._heldBack.push(c);
    const waited = c._queued > 0;
    this.handler.onAdopted(c);
    if (c._open) this._handedOver(c, waited);
  }

  /** Hands the host what was written during the call, once per connection. */
  _flushAll() {
    for (;;) {
      while (this._dirty.length !== 0 || this._ended.length !== 0) {
        const dirty = this._dirty;
        this._dirty = [];
        for (let i = 0; i < dirty.length; i++) {
          const c = dirty[i];
          if (c._dirty && c._open) this._flush(c);
        }
        if (this._ended.length !== 0) this._deliverCloses();
      }
      // Input held while a queue was past HIGH_WATER, which this flush drained: no
      // event would bring it (the host never heard of the pause).
      if (this._heldBack.length === 0 || !this._resume()) return;
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

/** The host the served runtime is bound to: what the store's calls go through. */
export function currentHost() {
  return runtime()._host;
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
