// http: an HTTP/1.1 server that answers every GET with `hello\n`, as the Rust
// example (guest/examples/http) does.
//
// Every GET is answered `200 OK` (`Content-Type: text/plain`, `Content-Length: 6`,
// body `hello\n`), every HEAD with the same head and no body, any other method with
// `405`. Connections are kept alive as HTTP/1.1 says (HTTP/1.0 only with
// `Connection: keep-alive`), `Connection: close` is honoured, pipelined requests
// are answered in order, a request may arrive split anywhere (byte by byte), a
// body announced by Content-Length is skipped, and empty lines before a request
// are ignored (RFC 9112 §2.2; they count toward the 16 KiB head limit). A malformed request is answered
// `400 Bad Request` (`bad request\n`) and the connection ends; a head past 16 KiB
// or 32 headers `431`, a body past 64 KiB `413`, Transfer-Encoding `501`.
//
// A refused request may still be arriving when the refusal goes out; closing at
// once could make the kernel answer the rest with a reset that destroys the
// refusal. So the connection shuts down its write side, then reads and drops what
// still comes until the peer's end or DRAIN_MS (a lingering close).
//
// The HTTP part (`answerAll`) does no I/O and is exported for the unit tests. At a
// hot swap each connection's unfinished request goes into the snapshot, in the
// Rust example's layout.

import {
  Handler, InputBuffers, SnapshotReader, SnapshotWriter, BadSnapshot, IoError,
  serve, utf8, conns, getConn, setTimer, cancelTimer,
} from "./sandsock.js";

const MAX_HEAD = 16 * 1024;
const MAX_HEADERS = 32;
const MAX_BODY = 64 * 1024;
const DRAIN_MS = 5000;
const SNAPSHOT_VERSION = 1;

export const HELLO = "hello\n";

// tchar (RFC 9110): the bytes of a method or a header name.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1;
}

function response(status, extra, body, connection, sendBody) {
  const conn = connection === "close" ? "Connection: close\r\n"
    : connection === "keep-alive" ? "Connection: keep-alive\r\n" : "";
  return utf8(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ` +
    `${utf8(body).length}\r\n${conn}${extra}\r\n${sendBody ? body : ""}`);
}

// Every response this server sends, built once: [connection][send body].
function variants(status, extra, body) {
  const v = {};
  for (const c of ["default", "keep-alive", "close"]) {
    v[c] = [response(status, extra, body, c, false), response(status, extra, body, c, true)];
  }
  return v;
}

/** The responses for a GET body of `body` (the hot-swap tests use another). */
export function responses(body = HELLO) {
  return {
    ok: variants("200 OK", "", body),
    notAllowed: variants("405 Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n"),
    bad: response("400 Bad Request", "", "bad request\n", "close", true),
    bodyTooLarge: response("413 Content Too Large", "", "request body too large\n", "close", true),
    headTooLarge: response("431 Request Header Fields Too Large", "", "request header fields too large\n", "close", true),
    notImplemented: response("501 Not Implemented", "", "transfer-encoding not supported\n", "close", true),
  };
}

const INCOMPLETE = 0;
const ANSWERED = 1;
const REJECTED = 2;

function lower(b) {
  return b >= 65 && b <= 90 ? b + 32 : b;
}

// Whether input[start, end) is `word`, ignoring ASCII case.
function equalsIgnoreCase(input, start, end, word) {
  if (end - start !== word.length) return false;
  for (let i = 0; i < word.length; i++) {
    if (lower(input[start + i]) !== word.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Answers the request at input[start...] into `out` (an array of Uint8Arrays).
 * Returns [INCOMPLETE], [ANSWERED, consumed, close] or [REJECTED].
 */
function answerOne(input, start, out, last, rs) {
  const end = input.length;
  // Empty lines before the request-line are ignored (RFC 9112 §2.2), as httparse
  // does for the Rust example: they are part of what this request consumes, and
  // count toward MAX_HEAD, so a stream of them is refused (431), not held for ever.
  let reqStart = start;
  for (;;) {
    if (input[reqStart] === 10) reqStart++;
    else if (input[reqStart] === 13 && input[reqStart + 1] === 10) reqStart += 2;
    else break;
  }
  // The method, checked as it arrives so that garbage is refused at once (a CR at
  // the very end may still be an empty line: it waits).
  let i = reqStart;
  while (i < end && TCHAR[input[i]]) i++;
  if (i === end || (i === reqStart && i === end - 1 && input[i] === 13)) {
    return end - start > MAX_HEAD ? reject(out, rs.headTooLarge) : [INCOMPLETE];
  }
  if (input[i] !== 32 || i === reqStart) return reject(out, rs.bad);
  const methodEnd = i;
  // Where the head ends: the first empty line (lines end in \r\n or \n).
  let headEnd = -1;
  for (let j = methodEnd; j < end; j++) {
    if (input[j] === 10) {
      if (j + 1 < end && input[j + 1] === 10) {
        headEnd = j + 2;
        break;
      }
      if (j + 2 < end && input[j + 1] === 13 && input[j + 2] === 10) {
        headEnd = j + 3;
        break;
      }
    }
    if (j - start >= MAX_HEAD) return reject(out, rs.headTooLarge);
  }
  if (headEnd < 0) return end - start > MAX_HEAD ? reject(out, rs.headTooLarge) : [INCOMPLETE];
  if (headEnd - start > MAX_HEAD) return reject(out, rs.headTooLarge);

  // The request line: METHOD SP TARGET SP HTTP/1.x
  i = methodEnd + 1;
  const targetStart = i;
  while (i < headEnd && input[i] > 32 && input[i] !== 127) i++;
  if (i === targetStart || input[i] !== 32) return reject(out, rs.bad);
  i++;
  if (headEnd - i < 9 || input[i] !== 72 || input[i + 1] !== 84 || input[i + 2] !== 84 ||
      input[i + 3] !== 80 || input[i + 4] !== 47 || input[i + 5] !== 49 || input[i + 6] !== 46 ||
      (input[i + 7] !== 48 && input[i + 7] !== 49)) {
    return reject(out, rs.bad);
  }
  const http10 = input[i + 7] === 48;
  i += 8;
  if (input[i] === 13) i++;
  if (input[i] !== 10) return reject(out, rs.bad);
  i++;

  // The headers.
  let headers = 0;
  let contentLength = -1;
  let closeRequested = false;
  let keepAliveRequested = false;
  for (;;) {
    if (input[i] === 10) break;
    if (input[i] === 13 && input[i + 1] === 10) break;
    if (++headers > MAX_HEADERS) return reject(out, rs.headTooLarge);
    const nameStart = i;
    while (TCHAR[input[i]]) i++;
    if (i === nameStart || input[i] !== 58) return reject(out, rs.bad);
    const nameEnd = i;
    i++;
    while (input[i] === 32 || input[i] === 9) i++;
    const valueStart = i;
    let valueEnd = i;
    for (;;) {
      const b = input[i];
      if (b === 10 || b === 13) break;
      if ((b < 32 && b !== 9) || b === 127) return reject(out, rs.bad);
      i++;
      if (b !== 32 && b !== 9) valueEnd = i;
    }
    if (input[i] === 13) {
      if (input[i + 1] !== 10) return reject(out, rs.bad);
      i++;
    }
    i++;
    const n = nameEnd - nameStart;
    if (n === 14 && equalsIgnoreCase(input, nameStart, nameEnd, "content-length")) {
      if (valueEnd === valueStart) return reject(out, rs.bad);
      let length = 0;
      for (let k = valueStart; k < valueEnd; k++) {
        const d = input[k] - 48;
        if (d < 0 || d > 9) return reject(out, rs.bad);
        length = Math.min(length * 10 + d, Number.MAX_SAFE_INTEGER);
      }
      // Two different lengths make the framing ambiguous (request smuggling).
      if (contentLength >= 0 && contentLength !== length) return reject(out, rs.bad);
      contentLength = length;
    } else if (n === 17 && equalsIgnoreCase(input, nameStart, nameEnd, "transfer-encoding")) {
      return reject(out, rs.notImplemented);
    } else if (n === 10 && equalsIgnoreCase(input, nameStart, nameEnd, "connection")) {
      let k = valueStart;
      while (k < valueEnd) {
        let e = k;
        while (e < valueEnd && input[e] !== 44) e++;
        let s = k;
        let t = e;
        while (s < t && (input[s] === 32 || input[s] === 9)) s++;
        while (t > s && (input[t - 1] === 32 || input[t - 1] === 9)) t--;
        if (equalsIgnoreCase(input, s, t, "close")) closeRequested = true;
        else if (equalsIgnoreCase(input, s, t, "keep-alive")) keepAliveRequested = true;
        k = e + 1;
      }
    }
  }
  if (contentLength > MAX_BODY) return reject(out, rs.bodyTooLarge);
  const consumed = headEnd - start + Math.max(contentLength, 0);
  if (end - start < consumed) return [INCOMPLETE];

  const close = last || closeRequested || (http10 && !keepAliveRequested);
  const connection = close ? "close" : http10 ? "keep-alive" : "default";
  const m = methodEnd - reqStart;
  const get = m === 3 && input[reqStart] === 71 && input[reqStart + 1] === 69 &&
    input[reqStart + 2] === 84;
  const head = !get && m === 4 && input[reqStart] === 72 && input[reqStart + 1] === 69 &&
    input[reqStart + 2] === 65 && input[reqStart + 3] === 68;
  if (get || head) out.push(rs.ok[connection][get ? 1 : 0]);
  else out.push(rs.notAllowed[connection][1]);
  return [ANSWERED, consumed, close];
}

function reject(out, refusal) {
  out.push(refusal);
  return [REJECTED];
}

const DEFAULT = responses();

/**
 * Answers every complete request in `input`, in order, pushing the responses to
 * `out`; stops after a request that closes the connection, and at the first
 * refused one (its refusal pushed). With `last`, answers one request, with
 * `Connection: close`. Returns `{consumed, close, rejected}`.
 */
export function answerAll(input, out, { last = false, rs = DEFAULT } = {}) {
  let consumed = 0;
  while (consumed < input.length) {
    const r = answerOne(input, consumed, out, last, rs);
    if (r[0] === INCOMPLETE) break;
    if (r[0] === REJECTED) return { consumed, close: true, rejected: true };
    consumed += r[1];
    if (r[2]) return { consumed, close: true, rejected: false };
  }
  return { consumed, close: false, rejected: false };
}

/** The server: feeds each connection's bytes to answerAll, writes the responses. */
export class Hello extends Handler {
  constructor(body = HELLO) {
    super();
    this.rs = responses(body);
    // The start of a request that arrived split across chunks, per connection.
    this.unfinished = new InputBuffers();
    // Connections whose request was refused: input dropped until the peer's end or
    // the drain timer (whose id is the connection's handle).
    this.draining = new Set();
    this.shuttingDown = false;
  }

  onData(conn, bytes) {
    if (this.draining.has(conn.id)) return;
    const out = [];
    const last = this.shuttingDown;
    let answers;
    this.unfinished.feed(conn, bytes, (input) => {
      answers = answerAll(input, out, { last, rs: this.rs });
      return answers.close ? input.length : answers.consumed;
    });
    for (let i = 0; i < out.length; i++) conn.write(out[i]);
    if (answers.rejected) {
      this.refuse(conn);
    } else if (answers.close) {
      conn.close();
    }
  }

  onClose(conn) {
    this.unfinished.forget(conn);
    if (this.draining.delete(conn.id)) cancelTimer(conn.id);
  }

  // A refused connection's drain ran out: it closes, whatever still comes.
  onTimer(id) {
    if (this.draining.delete(id)) getConn(id)?.close();
  }

  onShutdown() {
    this.shuttingDown = true;
    for (const conn of conns()) {
      if (!this.unfinished.isHolding(conn) && !this.draining.has(conn.id)) conn.close();
    }
  }

  // Sends the refusal (already written) and ends the write side; the connection
  // stays open, dropping its input, until the peer's end (the default onEof closes
  // it) or the drain timer.
  refuse(conn) {
    conn.shutdownWrite();
    try {
      setTimer(conn.id, DRAIN_MS);
      this.draining.add(conn.id);
    } catch (e) {
      if (!(e instanceof IoError)) throw e;
      conn.close(); // no timer to bound the drain: close now
    }
  }

  // The unfinished requests, in the Rust example's layout: version 1, then the
  // InputBuffers (a count, then per connection its handle and the bytes).
  snapshot() {
    const w = new SnapshotWriter();
    w.u8(SNAPSHOT_VERSION);
    this.unfinished.encode(w);
    return w.finish();
  }

  // All of it is read before any of it is taken up: a bad snapshot (a BadSnapshot,
  // which the SDK turns into a refusal) leaves this instance as it was.
  restore(bytes) {
    const r = new SnapshotReader(bytes);
    if (r.u8() !== SNAPSHOT_VERSION) throw new BadSnapshot("unknown http snapshot version");
    const unfinished = InputBuffers.decode(r);
    r.finish();
    this.unfinished.merge(unfinished);
  }
}

serve(new Hello());
