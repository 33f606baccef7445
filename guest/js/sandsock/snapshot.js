// sandsock/snapshot.js: snapshots, integers little-endian, byte strings with a u64
// length in front (the Rust SDK's SnapshotWriter/SnapshotReader layout).

import { concat, toBytes } from "./bytes.js";

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
