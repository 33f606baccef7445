// The hello app `host new NAME --lang js` starts a project from
// (guest/templates/js/app.js), over the fake host: it answers a request `200 hello`,
// one request split across reads, and pipelined ones; a head too long is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, copyFileSync, cpSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { FakeHost, deliver, ev } from "../testing/fake-host.js";

const here = dirname(fileURLToPath(import.meta.url));
const APP = join(here, "..", "..", "templates", "js", "app.js");
const OK = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
const GET = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

// The app imports ./sandsock.js and calls serve() once, as a built guest does: each
// test puts a fresh copy of it beside a fresh SDK (with its modules, ./sandsock/), so
// that it gets a handler of its own, and binds that to a fake host with connection 1
// accepted.
async function server() {
  const dir = mkdtempSync(join(tmpdir(), "sandsock-js-template-"));
  copyFileSync(join(here, "..", "sandsock.js"), join(dir, "sandsock.js"));
  cpSync(join(here, "..", "sandsock"), join(dir, "sandsock"), { recursive: true });
  copyFileSync(APP, join(dir, "app.js"));
  const sdk = await import(pathToFileURL(join(dir, "sandsock.js")));
  await import(pathToFileURL(join(dir, "app.js")));
  const host = new FakeHost();
  const rt = sdk.start(host);
  deliver(rt, [ev.accepted(1)]);
  // Each chunk is one read; what connection 1 got so far.
  const send = (...chunks) => {
    for (const chunk of chunks) {
      host.feed(1, chunk);
      deliver(rt, [ev.readable(1)]);
    }
    return host.output(1);
  };
  return { host, send };
}

test("a request is answered 200 hello, and the connection kept", async () => {
  const { host, send } = await server();
  assert.equal(send(GET), OK);
  assert.ok(!host.closed.has(1) && !host.shut.has(1));
});

test("a request split across two reads is answered once whole", async () => {
  const { send } = await server();
  assert.equal(send(GET.slice(0, 10)), "");
  assert.equal(send(GET.slice(10)), OK);
});

test("pipelined requests in one read are answered in one write", async () => {
  const { host, send } = await server();
  assert.equal(send(GET + GET), OK + OK);
  assert.deepEqual(host.calls.filter((c) => c[0] === "write"), [["write", 1, OK.length * 2]]);
});

test("a head over 8 KiB is answered 431 and closed", async () => {
  const { host, send } = await server();
  const out = send(`GET / HTTP/1.1\r\nX: ${"a".repeat(9 * 1024)}`);
  assert.ok(out.startsWith("HTTP/1.1 431 "), out);
  assert.ok(host.closed.has(1));
});
