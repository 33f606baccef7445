"""raises: echoes, but raises an uncaught exception when a chunk contains ``boom``.

For the host's trap test: the exception leaves ``handle`` (the SDK never catches
handler exceptions), componentize-py turns it into a trap, and the host contains
it: it logs the trap, and a fresh instance serves the next connection.
"""

import sandsock


class Raises(sandsock.Handler):
    def on_data(self, conn, data):
        if b"boom" in data:
            raise RuntimeError("boom: the test guest was asked to fail")
        conn.write(data)


WitWorld, State = sandsock.serve(Raises())
