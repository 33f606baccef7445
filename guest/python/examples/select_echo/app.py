"""select_echo: select_server.py, as a sandsock guest.

The numbers refer to the same numbers in select_server.py; README.md has the
whole mapping. What is missing here is missing on purpose: the host owns the
listening socket and the loop (1)-(3), and the SDK keeps each connection's
queue and its place in the "outputs" list (6), (8).
"""

import sandsock


class SelectEcho(sandsock.Handler):
    def on_accept(self, conn):
        # (4) accept(), setblocking(False), inputs.append(): done by the host.
        # message_queues[conn] = Queue(): every Conn has its own queue.
        pass

    def on_data(self, conn, data):
        # (5) recv() returned data; (6) put it on the queue and ask for writability.
        conn.write(data)

    def on_eof(self, conn):
        # (7) recv() returned b"": the client is done. close() waits until the
        # queue is sent; the old server dropped what was still queued.
        conn.close()

    def on_close(self, conn, reason):
        # (9) the connection is gone (reason None: we closed it; 'reset': the
        # "exceptional" list, or a ConnectionError from recv/send). Drop any state
        # kept for conn here (this server keeps none).
        pass


WitWorld, State = sandsock.serve(SelectEcho())
