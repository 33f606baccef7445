// An HTTP/1.1 hello: every request (a head ending in an empty line; bodies are not
// expected) is answered `200 hello`, on the same connection. Start from here.

import {
  Handler, InputBuffers, SnapshotReader, SnapshotWriter, BadSnapshot, serve, utf8,
} from "./sandsock.js";

const ANSWER = utf8("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n");
const TOO_LARGE = utf8(
  "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
);
// A head longer than this is refused: a client cannot make the guest hold more.
const MAX_HEAD = 8 * 1024;
// The layout of this guest's own part of a snapshot (see `snapshot`).
const SNAPSHOT_VERSION = 1;

// Where the head starting at `from` ends: the index after "\r\n\r\n", or -1.
function headEnd(bytes, from) {
  for (let i = from; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i + 4;
    }
  }
  return -1;
}

class Hello extends Handler {
  constructor() {
    super();
    // Each connection's unfinished request (a head split across chunks).
    this.unfinished = new InputBuffers();
  }

  onData(conn, bytes) {
    this.unfinished.feed(conn, bytes, (input) => {
      let used = 0;
      for (let end = headEnd(input, 0); end >= 0; end = headEnd(input, used)) {
        conn.write(ANSWER);
        used = end;
      }
      if (input.length - used > MAX_HEAD) {
        conn.write(TOO_LARGE);
        conn.close();
        return input.length;
      }
      return used;
    });
  }

  onClose(conn) {
    this.unfinished.forget(conn);
  }

  // At a hot swap (or a recycle), unfinished requests go to the next instance.
  snapshot() {
    const w = new SnapshotWriter();
    w.u8(SNAPSHOT_VERSION);
    this.unfinished.encode(w);
    return w.finish();
  }

  restore(bytes) {
    const r = new SnapshotReader(bytes);
    if (r.u8() !== SNAPSHOT_VERSION) throw new BadSnapshot("another snapshot layout");
    const unfinished = InputBuffers.decode(r);
    r.finish();
    this.unfinished.merge(unfinished);
  }
}

serve(new Hello());
