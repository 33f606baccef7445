// kv: a key-value store over a line protocol, its data in the store the host keeps
// (contract 1.1): every worker, every generation and every connection sees the
// same keys, and `--store PATH` keeps them across restarts. The same protocol as
// the Rust and Python `kv` examples:
//
//   SET key value   ->  OK              (the value is the rest of the line)
//   GET key         ->  VALUE value  |  NOT_FOUND
//   DEL key         ->  DELETED      |  NOT_FOUND
//   anything else   ->  ERROR unknown command
//
// One reply line per request line, in order, so a client may pipeline: each line
// becomes one store operation, and its reply waits in the connection's queue
// until every reply before it is there. A client that finishes sending is closed
// once its last reply is out.

import {
  Handler, LineBuffers, closeAll, concat, openBucket, serve, text, trimLine, utf8,
} from "./sandsock.js";

// Replies one connection may wait for before its input is paused.
const MAX_WAITING = 1024;

const ERRORS = {
  "namespace-full": "ERROR store full\n",
  "key-too-large": "ERROR key too large\n",
  "value-too-large": "ERROR value too large\n",
  unavailable: "ERROR store unavailable\n",
  "timed-out": "ERROR store timed out\n",
  busy: "ERROR store busy\n",
};

// [command, key, value] of a request line (bytes, no line end), or the reply to a
// bad one (a string).
function parse(line) {
  const space = line.indexOf(32);
  const command = text(space < 0 ? line : line.subarray(0, space));
  const rest = space < 0 ? null : line.subarray(space + 1);
  if (command === "SET" && rest !== null) {
    const gap = rest.indexOf(32);
    if (gap > 0) return [command, text(rest.subarray(0, gap)), rest.subarray(gap + 1)];
  } else if ((command === "GET" || command === "DEL") && rest?.length && rest.indexOf(32) < 0) {
    return [command, text(rest), null];
  }
  return "ERROR unknown command\n";
}

function reply(command, answer) {
  if (answer.error !== null) return ERRORS[answer.error] ?? "ERROR store failed\n";
  if (command === "SET") return "OK\n";
  if (!answer.ok) return "NOT_FOUND\n";
  if (command === "GET") return concat([utf8("VALUE "), answer.value, utf8("\n")]);
  return "DELETED\n";
}

class Kv extends Handler {
  constructor() {
    super();
    this.lines = new LineBuffers(64 * 1024);
    this.bucket = null;
    this.replies = new Map(); // Conn -> [{ reply }] in request order; null while waiting
    this.asked = new Map(); // op -> [Conn, its slot, the command]
    this.finished = new Set(); // Conns closed once their last reply is out
  }

  onData(conn, bytes) {
    const fed = this.lines.feed(conn, bytes, (line) => this.request(conn, trimLine(line)));
    if (fed === false) {
      this.queue(conn).push({ reply: "ERROR line too long\n" });
      this.flush(conn);
      conn.close();
      return;
    }
    this.flush(conn);
  }

  request(conn, line) {
    const queue = this.queue(conn);
    const request = parse(line);
    if (typeof request === "string") {
      queue.push({ reply: request });
      return;
    }
    const [command, key, value] = request;
    this.bucket ??= openBucket("kv");
    const op =
      command === "SET" ? this.bucket.set(key, value)
        : command === "GET" ? this.bucket.get(key)
          : this.bucket.delete(key);
    const slot = { reply: null };
    queue.push(slot);
    this.asked.set(op, [conn, slot, command]);
    if (queue.length >= MAX_WAITING) conn.pauseReading();
  }

  onStore(op, answer) {
    const asked = this.asked.get(op);
    if (asked === undefined) return; // its connection is gone
    this.asked.delete(op);
    const [conn, slot, command] = asked;
    slot.reply = reply(command, answer);
    this.flush(conn);
  }

  queue(conn) {
    let queue = this.replies.get(conn);
    if (queue === undefined) this.replies.set(conn, (queue = []));
    return queue;
  }

  // Sends the replies that are ready, in order, up to the first still waiting.
  flush(conn) {
    const queue = this.replies.get(conn);
    if (queue === undefined) return;
    const wasFull = queue.length >= MAX_WAITING;
    let ready = 0;
    while (ready < queue.length && queue[ready].reply !== null) conn.write(queue[ready++].reply);
    queue.splice(0, ready);
    if (wasFull && queue.length < MAX_WAITING / 2) conn.resumeReading();
    if (queue.length === 0) {
      this.replies.delete(conn);
      if (this.finished.delete(conn)) conn.close();
    }
  }

  onEof(conn) {
    if (this.replies.has(conn)) this.finished.add(conn);
    else conn.close();
  }

  onClose(conn) {
    this.lines.forget(conn);
    this.replies.delete(conn);
    this.finished.delete(conn);
    for (const [op, [c]] of this.asked) if (c === conn) this.asked.delete(op);
  }

  onShutdown() {
    closeAll();
  }
}

serve(new Kv());
