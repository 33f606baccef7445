// sandsock/answer.js: how one store operation ended, as its `store` event said
// (contract 1.1). The runtime makes them; store.js says what asks for them.

/** The WIT's `outcome`, by position: what a `store` event's code says. */
export const OUTCOMES = [
  "ok", "not-found", "conflict", "key-too-large", "value-too-large", "namespace-full",
  "not-a-number", "bad-name", "busy", "unavailable", "timed-out", "failed",
];

/** How one store operation ended, as its `store` event said. */
export class Answer {
  constructor(code, value, bytes) {
    /** The WIT `outcome` name: "ok", "not-found", "conflict", or an error. */
    this.outcome = OUTCOMES[code] ?? "failed";
    this._value = value;
    this._bytes = bytes;
  }

  get ok() {
    return this.outcome === "ok";
  }

  /** The error's name, or null for "ok", "not-found" and "conflict". */
  get error() {
    return ["ok", "not-found", "conflict"].includes(this.outcome) ? null : this.outcome;
  }

  /** `get` (and each key of `getMany`): the bytes, or null if missing. */
  get value() {
    return this.ok ? this._bytes : null;
  }

  /** `increment`: the new number (an s64), read from the decimal the answer
   * carries, since the event's u64 may reach JavaScript rounded; exact within 2^53. */
  get number() {
    if (!this.ok) return null;
    if (this._bytes.length > 0) return Number(new TextDecoder().decode(this._bytes));
    return Number(BigInt.asIntN(64, BigInt(this._value)));
  }

  /** `getMany`: the position of this answer's key in the keys asked. */
  get index() {
    return Number(this._value);
  }

  /** `listKeys`: more keys follow (ask again after this page's last). */
  get more() {
    return this.ok && Number(this._value) === 1;
  }

  /** `listKeys`: this page's keys, in order. */
  keys() {
    const keys = [];
    const bytes = this.ok ? this._bytes : new Uint8Array(0);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const decoder = new TextDecoder();
    for (let at = 0; at + 4 <= bytes.length; ) {
      const n = view.getUint32(at, true);
      keys.push(decoder.decode(bytes.subarray(at + 4, at + 4 + n)));
      at += 4 + n;
    }
    return keys;
  }
}
