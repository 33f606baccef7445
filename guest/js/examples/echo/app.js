// echo: sends every byte back, in order.
//
// The whole guest is one onData. The SDK does the rest: it queues what the host
// cannot take yet, stops reading a client that sends without reading back
// (backpressure), and, through the default onEof, closes a connection once the
// client has finished sending and everything has been echoed. When the host shuts
// down, every connection is closed once what it was sent has been echoed.

import { Handler, closeAll, serve } from "./sandsock.js";

export class Echo extends Handler {
  onData(conn, bytes) {
    conn.write(bytes);
  }

  onShutdown() {
    closeAll();
  }
}

serve(new Echo());
