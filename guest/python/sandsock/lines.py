"""``LineHandler``: a ``Handler`` that hands its subclass one line at a time."""

from .runtime import Handler


class LineHandler(Handler):
    """Splits each connection's input into ``\\n``-terminated lines and calls
    ``on_line(conn, line)`` for each, in order.

    ``line`` has no ``\\n`` (nor a ``\\r`` before it) unless ``keep_ends`` is true, in
    which case it is exactly as sent. A line longer than ``max_line`` bytes (not
    counting its end) calls ``on_line_too_long(conn)`` (default: write
    ``ERROR line too long`` and close) and ends that connection's lines: the
    stream cannot be resynchronised. An unfinished line is held with
    ``conn.unread``, so it crosses a hot swap with the SDK's own state.

    Subclasses that override ``on_data`` must call ``super().on_data``.
    """

    max_line = 64 * 1024
    keep_ends = False

    def on_line(self, conn, line):
        """One complete line of ``conn``."""

    def on_line_too_long(self, conn):
        conn.write(b"ERROR line too long\n")
        conn.close()

    def on_data(self, conn, data):
        max_line = self.max_line
        keep = self.keep_ends
        start = 0
        end = data.find(b"\n")
        while end >= 0:
            if end - start > max_line:
                return self.on_line_too_long(conn)
            if keep:
                line = data[start:end + 1]
            elif end > start and data[end - 1] == 13:  # \r\n
                line = data[start:end - 1]
            else:
                line = data[start:end]
            self.on_line(conn, line)
            if not conn.open or conn.closing:
                return
            start = end + 1
            end = data.find(b"\n", start)
        if start < len(data):
            if len(data) - start > max_line:
                return self.on_line_too_long(conn)
            conn.unread(data[start:])

