"""The classic non-blocking echo server with select(): run it with
``python3 select_server.py PORT`` (it listens on 127.0.0.1).

One thread, one loop: the listening socket and every client are in ``inputs``;
a client with something to send back is also in ``outputs``; what it is to be
sent waits in its entry of ``message_queues``. README.md maps each part onto
the sandsock guest in app.py.
"""

import queue
import select
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 10000

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)       # (1)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.setblocking(False)
server.bind(("127.0.0.1", port))
server.listen(128)
print(f"listening on 127.0.0.1:{port}", flush=True)

inputs = [server]                                                # (2)
outputs = []
message_queues = {}


def drop(s):                                                     # (9)
    if s in outputs:
        outputs.remove(s)
    inputs.remove(s)
    s.close()
    del message_queues[s]


while inputs:
    readable, writable, exceptional = select.select(inputs, outputs, inputs)  # (3)

    for s in readable:
        if s is server:                                          # (4)
            connection, client_address = s.accept()
            connection.setblocking(False)
            inputs.append(connection)
            message_queues[connection] = queue.Queue()
        else:
            try:
                data = s.recv(1024)                              # (5)
            except ConnectionError:
                drop(s)
                continue
            if data:
                message_queues[s].put(data)                      # (6)
                if s not in outputs:
                    outputs.append(s)
            else:
                drop(s)                                          # (7)

    for s in writable:
        if s not in message_queues:
            continue  # dropped above, in this same turn
        try:
            next_msg = message_queues[s].get_nowait()            # (8)
        except queue.Empty:
            outputs.remove(s)
        else:
            try:
                sent = s.send(next_msg)
            except ConnectionError:
                drop(s)
                continue
            if sent < len(next_msg):
                # A short send: the rest goes first next time.
                rest = queue.Queue()
                rest.put(next_msg[sent:])
                while not message_queues[s].empty():
                    rest.put(message_queues[s].get_nowait())
                message_queues[s] = rest

    for s in exceptional:
        if s in message_queues:
            drop(s)                                              # (9)
