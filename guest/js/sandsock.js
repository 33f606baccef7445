// sandsock.js: the JavaScript SDK for sandsock guests (contract sandsock:net@1.1.0).
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
// This is the one module a guest imports; it re-exports the SDK's API from the
// modules in ./sandsock/, one concern each:
//
//   bytes.js     UTF-8 and byte helpers (utf8, text, toBytes, concat)
//   log.js       log, setLogSink, installConsole (console over log)
//   conn.js      Conn, one connection; HIGH_WATER, LOW_WATER
//   handler.js   Handler, the defaults of every handler method
//   runtime.js   Runtime, serve, start, timers, connect, the connections; IoError
//   input.js     LineBuffers, InputBuffers, trimLine
//   snapshot.js  SnapshotWriter, SnapshotReader, BadSnapshot
//   store.js     the host's store and topics (contract 1.1): openBucket, Bucket,
//                StoreError, subscribe, unsubscribe, publish
//   answer.js    Answer, how a store operation ended, and OUTCOMES
//
// The SDK touches no WIT import: `sandsock-entry.js` binds it to the host's
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

export { utf8, text, toBytes, concat } from "./sandsock/bytes.js";
export { log, setLogSink, installConsole } from "./sandsock/log.js";
export { HIGH_WATER, LOW_WATER, Conn } from "./sandsock/conn.js";
export { Handler } from "./sandsock/handler.js";
export {
  READ_CHUNK, READS_PER_EVENT, MAX_TIMER_MS, IoError, Runtime,
  serve, start, setTimer, cancelTimer, connect, getConn, conns, closeAll,
} from "./sandsock/runtime.js";
export { LineBuffers, trimLine, InputBuffers } from "./sandsock/input.js";
export { BadSnapshot, SnapshotWriter, SnapshotReader } from "./sandsock/snapshot.js";
export {
  Answer, Bucket, StoreError, OUTCOMES, openBucket, subscribe, unsubscribe, publish,
} from "./sandsock/store.js";
