// sandsock/store.js: the store and topics the host keeps (contract 1.1): state
// that outlives the instance, shared by every worker of the host and every
// generation of the guest.
//
// No call waits. A store operation returns its id (a number) at once, and its
// result comes later, in the handler's `onStore(op, answer)` with that id: keep
// what you need to go on (which connection asked) by the id. Operations of one
// instance take effect in the order they were made. Topic messages come in
// `onMessage(subscription, bytes)`.
//
//   class Visits extends Handler {
//     onAccept(conn) {
//       this.asked.set(openBucket("visits").increment("count", 1), conn);
//     }
//     onStore(op, answer) {
//       const conn = this.asked.get(op);
//       this.asked.delete(op);
//       conn?.write(answer.ok ? `${answer.number}\n` : "ERROR\n");
//       conn?.close();
//     }
//   }
//
// A refusal the host can tell at once (a bad bucket or topic name, too many
// subscriptions) throws a StoreError; everything else is the operation's Answer.

import { toBytes } from "./bytes.js";
import { currentHost } from "./runtime.js";

export { Answer, OUTCOMES } from "./answer.js";

/** The host refused a store or topic call: `reason` is the WIT `outcome` name. */
export class StoreError extends Error {
  constructor(reason, what = "") {
    super(what ? `${what}: ${reason}` : reason);
    this.name = "StoreError";
    this.reason = reason;
  }
}

function refused(result, what) {
  if (result.error !== undefined) throw new StoreError(result.error, what);
  return result.ok;
}

/** A bucket of the guest's namespace, from `openBucket`: every method returns the
 * operation's id, and its Answer comes in `onStore`. */
export class Bucket {
  constructor(name, handle) {
    this.name = name;
    this._handle = handle;
  }
  /** The value of `key`: "ok" with `answer.value`, or "not-found". */
  get(key) { return currentHost().storeGet(this._handle, String(key)); }
  /** Sets `key` to `value` (bytes or a string): "ok" once stored. */
  set(key, value) { return currentHost().storeSet(this._handle, String(key), toBytes(value)); }
  /** Removes `key`: "ok" if it was there, "not-found" if not. */
  delete(key) { return currentHost().storeDelete(this._handle, String(key)); }
  /** "ok" if `key` is there, "not-found" if not. */
  exists(key) { return currentHost().storeExists(this._handle, String(key)); }
  /** A page of keys after `cursor`: `answer.keys()`, `answer.more`. */
  listKeys(cursor = null) { return currentHost().storeListKeys(this._handle, cursor); }
  /** Adds `delta` to the number `key` holds, atomically: `answer.number`. */
  increment(key, delta) { return currentHost().storeIncrement(this._handle, String(key), delta); }
  /** Sets `key` to `next` if it holds `old` (null: if missing): "ok" or "conflict". */
  compareAndSwap(key, old, next) {
    const before = old === null ? null : toBytes(old);
    return currentHost().storeCompareAndSwap(this._handle, String(key), before, toBytes(next));
  }
  /** The values of `keys`: one answer per key, in order (`answer.index`). */
  getMany(keys) { return currentHost().storeGetMany(this._handle, keys.map(String)); }
  /** Sets every `[key, value]`, all or none. */
  setMany(entries) {
    return currentHost().storeSetMany(this._handle, entries.map(([k, v]) => [String(k), toBytes(v)]));
  }
  /** Removes every key, all or none. */
  deleteMany(keys) { return currentHost().storeDeleteMany(this._handle, keys.map(String)); }
}

/** The bucket `name` of the guest's namespace; throws a StoreError ("bad-name",
 * "busy"). */
export function openBucket(name) {
  return new Bucket(name, refused(currentHost().storeOpen(String(name)), `openBucket ${name}`));
}

/** Subscribes to `topic`: its messages come in `onMessage` with the id returned. */
export function subscribe(topic) {
  return refused(currentHost().subscribe(String(topic)), `subscribe ${topic}`);
}

/** Ends a subscription (messages on their way may still come). */
export function unsubscribe(subscription) {
  currentHost().unsubscribe(subscription);
}

/** Publishes `message` (bytes or a string) on `topic` to every subscriber of every
 * worker, this instance's own subscriptions included; throws a StoreError
 * ("value-too-large", "unavailable"). */
export function publish(topic, message) {
  refused(currentHost().publish(String(topic), toBytes(message)), `publish ${topic}`);
}
