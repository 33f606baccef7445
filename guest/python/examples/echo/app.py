"""echo: sends every byte back, in order.

The whole guest is one ``on_data``. The SDK does the rest: it queues what the host
cannot take yet, stops reading a client that sends without reading back
(backpressure), and, through the default ``on_eof``, closes a connection once the
client has finished sending and everything has been echoed.
"""

import sandsock


class Echo(sandsock.Handler):
    def on_data(self, conn, data):
        conn.write(data)

    def on_shutdown(self):
        # Nothing is in flight beyond what is queued, which a graceful close sends.
        sandsock.close_all()


WitWorld, State = sandsock.serve(Echo())
