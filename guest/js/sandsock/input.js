// sandsock/input.js: input helpers, what arrived but is not complete yet, per
// connection (LineBuffers for line protocols, InputBuffers for anything a parser
// consumes), and what they hold in a hot swap's snapshot.

import { EMPTY, concat } from "./bytes.js";
import { BadSnapshot } from "./snapshot.js";

// A connection's handle, given the Conn or the handle itself.
function connId(conn) {
  return typeof conn === "object" ? conn.id : conn;
}

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
