// sandsock/conn.js: one connection, as the handler sees it. Writes are queued on
// the Conn; the runtime hands the queue to the host and tells it the interest the
// Conn calls for.

import { concat, toBytes, utf8 } from "./bytes.js";

/** Queued bytes past which the SDK stops reading a connection. */
export const HIGH_WATER = 256 * 1024;
/** Queued bytes below which a connection paused by HIGH_WATER is read again. */
export const LOW_WATER = 64 * 1024;

// What to do once a connection's queue is sent.
export const NOTIFY = 0;
export const SHUTDOWN = 1;
export const CLOSE = 2;

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
    // Input the host read before it heard that reading was paused (chunks), and
    // whether its end-of-stream came after it: handed over once reading resumes.
    this._waiting = [];
    this._waitingEof = false;
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
