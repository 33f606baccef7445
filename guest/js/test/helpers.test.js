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

test("input and line buffers go into a snapshot in the Rust SDK's layout, and back", () => {
  const input = new InputBuffers();
  input.feed(1, enc("GET / HT"), () => 0);
  input.feed(300, enc("xy"), () => 1);
  const w = new SnapshotWriter();
  input.encode(w);
  const b = w.finish();
  const manual = new SnapshotWriter();
  manual.u64(2);
  manual.u64(1);
  manual.bytes("GET / HT");
  manual.u64(300);
  manual.bytes("y");
  assert.deepEqual(b, manual.finish(), "u64 count, then per connection u64 handle and bytes");
  const r = new SnapshotReader(b);
  const back = InputBuffers.decode(r);
  r.finish();
  const mine = new InputBuffers();
  mine.feed(300, enc("old"), () => 0);
  mine.feed(5, enc("kept"), () => 0);
  mine.merge(back);
  assert.equal(dec(mine.held(1)), "GET / HT");
  assert.equal(dec(mine.held(300)), "y", "the snapshot wins");
  assert.equal(dec(mine.held(5)), "kept");
  b.fill(0); // what was decoded is a copy
  assert.equal(dec(mine.held(1)), "GET / HT");

  const lines = new LineBuffers(16);
  lines.feed(2, enc("done\nhalf"), () => {});
  const lw = new SnapshotWriter();
  lines.encode(lw);
  const lb = lw.finish();
  const lr = new SnapshotReader(lb);
  const lback = LineBuffers.decode(lr, 16);
  lr.finish();
  assert.equal(lback.maxLine, 16);
  const seen = [];
  lback.feed(2, enc(" done\n"), (l) => seen.push(dec(l)));
  assert.deepEqual(seen, ["half done\n"]);
  // A held line longer than the limit, or holding a \n, is not one.
  assert.throws(() => LineBuffers.decode(new SnapshotReader(lb), 3), BadSnapshot);
  const nl = new SnapshotWriter();
  nl.u64(1);
  nl.u64(2);
  nl.bytes("a\nb");
  assert.throws(() => LineBuffers.decode(new SnapshotReader(nl.finish())), BadSnapshot);
});

test("decoding held input refuses truncations and duplicates, skips empty entries", () => {
  const w = new SnapshotWriter();
  w.u64(3);
  w.u64(1);
  w.bytes("a");
  w.u64(2);
  w.bytes("");
  w.u64(1);
  w.bytes("b");
  assert.throws(() => InputBuffers.decode(new SnapshotReader(w.finish())), /appears twice/);
  const ok = new SnapshotWriter();
  ok.u64(2);
  ok.u64(1);
  ok.bytes("a");
  ok.u64(2);
  ok.bytes("");
  const b = ok.finish();
  const got = InputBuffers.decode(new SnapshotReader(b));
  assert.ok(got.isHolding(1));
  assert.ok(!got.isHolding(2), "nothing held for an empty entry");
  for (let end = 0; end < b.length; end++) {
    assert.throws(() => {
      const r = new SnapshotReader(b.subarray(0, end));
      InputBuffers.decode(r);
      r.finish();
    }, BadSnapshot, `truncated at ${end}`);
  }
});
