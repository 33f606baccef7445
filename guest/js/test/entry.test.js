// The component's entry (sandsock-entry.js) over fake WIT imports, in plain Node:
// how it maps what the generated bindings throw.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, copyFileSync, cpSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

// What the fake `io` imports do: each test sets the ones it needs.
const io = globalThis.__sandsockFakeIo = {};
// What the app hears: the handler records, the test reads.
const app = globalThis.__sandsockApp = { caught: [], action: null };
let entry;
let sdk;

// The entry imports `sandsock:net/io@1.1.0` and the rest, which Node cannot load:
// stage it with those imports pointed at fakes, beside the SDK and an app.
before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "sandsock-js-entry-"));
  copyFileSync(join(here, "..", "sandsock.js"), join(dir, "sandsock.js"));
  cpSync(join(here, "..", "sandsock"), join(dir, "sandsock"), { recursive: true });
  const source = readFileSync(join(here, "..", "sandsock-entry.js"), "utf8");
  const staged = source
    .replace('"sandsock:net/io@1.1.0"', '"./fake-io.js"')
    .replace('"sandsock:net/log@1.1.0"', '"./fake-log.js"')
    .replace('"sandsock:net/store@1.1.0"', '"./fake-store.js"')
    .replace('"sandsock:net/topics@1.1.0"', '"./fake-topics.js"');
  assert.notEqual(staged, source);
  writeFileSync(join(dir, "sandsock-entry.js"), staged);
  const names = ["read", "write", "setInterest", "shutdownWrite", "close", "peer", "tls",
    "setTimer", "cancelTimer", "connect"];
  writeFileSync(join(dir, "fake-io.js"), names.map((n) =>
    `export function ${n}(...a) { return globalThis.__sandsockFakeIo.${n}(...a); }\n`).join(""));
  writeFileSync(join(dir, "fake-log.js"), "export function write() {}\n");
  const fakes = (names) => names.map((n) =>
    `export function ${n}(...a) { return globalThis.__sandsockFakeIo.${n}(...a); }\n`).join("");
  writeFileSync(join(dir, "fake-store.js"), fakes(["open", "get", "set", "exists",
    "listKeys", "increment", "compareAndSwap", "getMany", "setMany", "deleteMany"]) +
    "export { del as delete };\nfunction del(...a) { return globalThis.__sandsockFakeIo.delete(...a); }\n");
  writeFileSync(join(dir, "fake-topics.js"), fakes(["subscribe", "unsubscribe", "publish"]));
  writeFileSync(join(dir, "app.js"), `
    import { serve, setTimer, connect, IoError, openBucket, publish } from "./sandsock.js";
    const app = globalThis.__sandsockApp;
    serve({
      onAccept(conn) {
        try {
          app.action();
        } catch (e) {
          if (!(e instanceof IoError)) throw e;
          app.caught.push(e.code);
        }
      },
    });
    app.setTimer = setTimer;
    app.connect = connect;
    app.openBucket = openBucket;
    app.publish = publish;
  `);
  sdk = await import(pathToFileURL(join(dir, "sandsock.js")));
  entry = await import(pathToFileURL(join(dir, "sandsock-entry.js")));
  io.setInterest = () => {};
  io.close = () => {};
});

let next = 1;
function accept(action) {
  app.caught = [];
  app.action = action;
  entry.handle(
    [{ kind: 0, code: 0, conn: next++, id: 0, value: 0, start: 0, len: 0 }],
    new Uint8Array(0),
  );
  return app.caught;
}

// componentize-qjs: an Error whose `payload` is the case name.
function qjsError(payload) {
  return Object.assign(new Error(`${payload} (see error.payload)`), { payload });
}

// componentize-js: ComponentError, the case name as message and a non-enumerable payload.
function componentJsError(payload) {
  const e = new Error(payload);
  Object.defineProperty(e, "payload", { value: payload, enumerable: false });
  return e;
}

test("an io-error from setTimer or connect is an IoError, in either toolchain's shape", () => {
  for (const make of [qjsError, componentJsError]) {
    io.setTimer = () => { throw make("limit-exceeded"); };
    assert.deepEqual(accept(() => app.setTimer(1, 10)), ["limit-exceeded"]);
    io.connect = () => { throw make("not-permitted"); };
    assert.deepEqual(accept(() => app.connect("10.0.0.1:80")), ["not-permitted"]);
  }
  io.setTimer = () => undefined;
  assert.deepEqual(accept(() => app.setTimer(1, 10)), []);
  io.connect = () => 77;
  let conn;
  assert.deepEqual(accept(() => { conn = app.connect("10.0.0.1:80"); }), []);
  assert.equal(conn.id, 77);
});

test("any other exception from an import is rethrown, not made an IoError", () => {
  io.setTimer = () => { throw new TypeError("setTimer is broken"); };
  assert.throws(() => accept(() => app.setTimer(1, 10)), TypeError);
  io.connect = () => { throw new RangeError("bad"); };
  assert.throws(() => accept(() => app.connect("10.0.0.1:80")), RangeError);
  // A payload that is not an io-error case, or a bare message that looks like one.
  io.setTimer = () => { throw qjsError("no-such-case"); };
  assert.throws(() => accept(() => app.setTimer(1, 10)), /no-such-case/);
  io.setTimer = () => { throw new Error("limit-exceeded"); };
  assert.throws(() => accept(() => app.setTimer(1, 10)), (e) => !(e instanceof sdk.IoError));
});

test("the store's calls answer numbers, and a refused one is a StoreError", () => {
  io.open = (name) => {
    if (name === "bad*") throw qjsError("bad-name");
    return 3;
  };
  io.get = (bucket, key) => {
    assert.equal(bucket, 3);
    assert.equal(key, "k");
    return 41n; // a BigInt toolchain's u64
  };
  io.publish = () => {
    throw componentJsError("value-too-large");
  };
  let op;
  let refusals = [];
  app.action = () => {};
  accept(() => {
    op = app.openBucket("kv").get("k");
    for (const f of [() => app.openBucket("bad*"), () => app.publish("room", "x")]) {
      try {
        f();
      } catch (e) {
        if (!(e instanceof sdk.StoreError)) throw e;
        refusals.push(e.reason);
      }
    }
  });
  assert.equal(op, 41);
  assert.deepEqual(refusals, ["bad-name", "value-too-large"]);
});
