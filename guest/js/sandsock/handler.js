// sandsock/handler.js: the base class of a guest's handler, with every method's
// default.

import { EMPTY } from "./bytes.js";

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
  /** The store operation `op` (an id a Bucket method returned) ended: `answer` is
   * an Answer. Once per operation (`getMany`: once per key), in a later call. */
  onStore(op, answer) {}
  /** `bytes` were published on the topic of `subscription`. */
  onMessage(subscription, bytes) {}
  /** `count` messages of `subscription` were dropped: this instance fell behind. */
  onLost(subscription, count) {}
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

// `h` as a handler: a Handler as it is, a plain object given the defaults it lacks.
export function asHandler(h) {
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
