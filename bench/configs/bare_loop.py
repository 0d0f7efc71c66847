"""The floor under edgeworker's hello route: a bare gevent + httptools loop (no routing, no
phases, no Request object, no limits or timeouts), for the context line of bench/http_bench.py.

Run: ``python bare_loop.py HOST PORT WORKERS``. The master binds the socket, forks WORKERS
processes that each patch gevent and serve it, and waits; SIGTERM stops them all. Every request
gets a fixed ``hello`` response (``Date`` refreshed once a second) and keep-alive.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time


def serve(listener: socket.socket) -> None:
    from gevent import monkey

    monkey.patch_all()
    import httptools
    from gevent.server import StreamServer

    head = [b"", 0]

    def response() -> bytes:
        now = int(time.time())
        if head[1] != now:
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
            head[0] = (b"HTTP/1.1 200 OK\r\nServer: bare\r\nDate: " + date
                       + b"\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
                       b"Connection: keep-alive\r\n\r\nhello\n")
            head[1] = now
        return head[0]

    class Protocol:
        __slots__ = ("done", "url", "fields")

        def __init__(self) -> None:
            self.done = 0
            self.url = b""
            self.fields: list[tuple[bytes, bytes]] = []

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields.append((name, value))

        def on_message_complete(self) -> None:
            self.done += 1

    def handle(sock, _addr) -> None:
        proto = Protocol()
        parser = httptools.HttpRequestParser(proto)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                parser.feed_data(data)
                while proto.done:
                    proto.done -= 1
                    proto.fields = []
                    sock.sendall(response())
        except (OSError, httptools.HttpParserError):
            return

    from gevent import socket as gsocket

    StreamServer(gsocket.socket(fileno=listener.detach()), handle).serve_forever()


def main() -> None:
    host, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            serve(listener)
            os._exit(0)
        children.append(pid)

    def stop(_sig, _frame) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue


if __name__ == "__main__":
    main()
