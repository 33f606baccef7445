// The SDK's helpers: lines, input buffers, UTF-8, snapshots.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  LineBuffers, InputBuffers, trimLine, utf8, text, SnapshotWriter, SnapshotReader, BadSnapshot,
} from "../sandsock.js";

const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => new TextDecoder().decode(b);

test("lines split across chunks are joined, several per chunk are split", () => {
  const lines = new LineBuffers(1024);
  const seen = [];
  const on = (l) => seen.push(dec(l));
  assert.ok(lines.feed(1, enc("GET a\nSET b"), on));
  assert.equal(dec(lines.held(1)), "SET b");
  assert.ok(lines.feed(1, enc(" 1\r\nX"), on));
  assert.ok(lines.feed(1, enc("Y"), on));
  assert.ok(lines.feed(1, enc("\n"), on));
  assert.deepEqual(seen, ["GET a\n", "SET b 1\r\n", "XY\n"]);
  assert.equal(lines.held(1).length, 0);
  assert.equal(dec(trimLine(enc("SET b 1\r\n"))), "SET b 1");
  assert.equal(dec(trimLine(enc("x"))), "x");
});

test("a line byte by byte is one line; connections are apart", () => {
  const lines = new LineBuffers(100);
  const seen = [];
  for (const b of enc("hello\n")) lines.feed(1, Uint8Array.of(b), (l) => seen.push(["a", dec(l)]));
  lines.feed({ id: 2 }, enc("other\n"), (l) => seen.push(["b", dec(l)]));
  assert.deepEqual(seen, [["a", "hello\n"], ["b", "other\n"]]);
});

test("a line past the limit is refused, the lines before it delivered", () => {
  const lines = new LineBuffers(4);
  const seen = [];
  assert.equal(lines.feed(1, enc("ab\nabcdefg\nx\n"), (l) => seen.push(dec(l))), false);
  assert.deepEqual(seen, ["ab\n"]);
  assert.equal(lines.feed(1, enc("abc"), () => {}), true);
  assert.equal(lines.feed(1, enc("de"), () => {}), false, "held and new together are too long");
  assert.equal(lines.held(1).length, 0);
  assert.equal(lines.feed(1, enc("abcd\n"), (l) => seen.push(dec(l))), true, "at the limit is fine");
});

test("a held line is a copy: the chunk may be reused", () => {
  const lines = new LineBuffers();
  const chunk = enc("abc");
  lines.feed(1, chunk, () => {});
  chunk.fill(0);
  const seen = [];
  lines.feed(1, enc("\n"), (l) => seen.push(dec(l)));
  assert.deepEqual(seen, ["abc\n"]);
});

test("input buffers hold what the parser did not consume", () => {
  const input = new InputBuffers();
  const records = (b) => Math.floor(b.length / 4) * 4;
  input.feed(1, enc("abcdef"), records);
  assert.equal(dec(input.held(1)), "ef");
  assert.ok(input.isHolding(1));
  input.feed(1, enc("gh"), records);
  assert.ok(!input.isHolding(1));
});

test("UTF-8 both ways matches TextEncoder/TextDecoder", () => {
  const samples = ["", "ascii", "é", "☃ snow", "😀 astral", "mixed ☃😀é\n", "\u0000\u007f\u0080\u07ff\u0800\uffff"];
  for (const s of samples) {
    assert.deepEqual(utf8(s), enc(s), s);
    assert.equal(text(enc(s)), s, s);
  }
  // Lone surrogates and invalid bytes become U+FFFD, as TextDecoder makes them.
  assert.deepEqual(utf8("a\ud800b"), enc("a\ud800b"));
  for (const bad of [[0xff], [0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x98]]) {
    const b = Uint8Array.from([0x61, ...bad, 0x62]);
    assert.equal(text(b).replace(/\ufffd+/g, "?"), dec(b).replace(/\ufffd+/g, "?"), JSON.stringify(bad));
  }
  const long = "x☃".repeat(10000);
  assert.equal(text(utf8(long)), long);
});

test("snapshots round-trip; truncations and trailing bytes are refused", () => {
  const w = new SnapshotWriter();
  w.u8(1);
  w.u64(2 ** 53 - 1);
  w.u64(258);
  w.bytes("key");
  w.bytes(new Uint8Array(0));
  const b = w.finish();
  const r = new SnapshotReader(b);
  assert.equal(r.u8(), 1);
  assert.equal(r.u64(), 2 ** 53 - 1);
  assert.equal(r.u64(), 258);
  assert.equal(dec(r.bytes()), "key");
  assert.equal(r.bytes().length, 0);
  r.finish();
  assert.deepEqual([...b.subarray(9, 17)], [2, 1, 0, 0, 0, 0, 0, 0], "little-endian");
  for (let end = 0; end < b.length; end++) {
    const t = new SnapshotReader(b.subarray(0, end));
    assert.throws(() => {
      t.u8(); t.u64(); t.u64(); t.bytes(); t.bytes(); t.finish();
    }, BadSnapshot, `truncated at ${end}`);
  }
  const extra = new SnapshotReader(Uint8Array.of(1, 2));
  extra.u8();
  assert.throws(() => extra.finish(), BadSnapshot);
});
