// throws: echoes, but throws an uncaught Error when a chunk contains `boom`.
//
// For the host's trap test: the exception leaves `handle` (the SDK never catches
// what a handler throws), the host contains it as a trap, closes this instance's
// connections and lets a fresh instance serve the next ones.

import { Handler, serve, text } from "./sandsock.js";

export class Throws extends Handler {
  onData(conn, bytes) {
    if (text(bytes).includes("boom")) {
      throw new Error("boom: the throws guest was told to throw");
    }
    conn.write(bytes);
  }
}

serve(new Throws());
