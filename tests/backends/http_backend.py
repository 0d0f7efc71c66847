"""A small real HTTP/1.1 backend for the proxy and client tests (stdlib only, threaded).

Run: ``python http_backend.py PORT [NAME [CERT,KEY[,CLIENT_CA]]]`` (HTTPS; with CLIENT_CA a
client certificate signed by it is required). Keep-alive is on. Paths:

- any other path (any method): JSON ``{"name", "method", "target", "headers": [[k, v]…],
  "body_len", "body_sha256", "body" (first 200 bytes, latin-1), "conn": peer port}``;
  chunked request bodies are de-chunked here.
- ``/name``: the backend's NAME as text.
- ``/big?n=BYTES&chunked=1``: a body of BYTES bytes (``x``), with Content-Length unless
  ``chunked=1``.
- ``/slow?delay=S``: waits S seconds, then answers "slow".
- ``/stall?after=BYTES``: sends the head (Content-Length 10 MB) and BYTES body bytes, then stalls.
- ``/cut?after=BYTES``: head promising 1 MB, BYTES body bytes, then closes the connection.
- ``/die?after=BYTES``: like cut, but the whole backend process exits (killed mid-response).
- ``/reset``: resets the connection (RST) without answering.
- ``/never``: reads the request and never answers.
- ``/garbage``: answers bytes that are not HTTP.
- ``/close``: answers "bye" with ``Connection: close``.
- ``/headers``: a response with hop-by-hop headers (``Connection: X-Hop``, ``X-Hop``,
  ``Keep-Alive``, ``Proxy-Foo``) and ``X-Kept``.
- ``/redirect?to=URL``: 302 with ``Location: URL`` (``HOST`` in it becomes the request's
  Host); with ``&refresh=1``, 200 with ``Refresh: 3; url=URL``.
- ``/status/CODE``: answers CODE; with ``?on=NAME`` only the backend NAME does, the others
  answer 200 with their name.
- A backend whose NAME starts with ``reset`` resets every request; ``never``: never answers.
- WebSocket (``Upgrade: websocket``): completes the handshake and echoes every text/binary
  frame back (unmasked), answering close with close.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = "backend"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, ctype: str = "text/plain",
              extra: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _any(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if NAME.startswith("reset"):  # a backend that resets every request
            path = "/reset"
        elif NAME.startswith("never"):  # a backend that never answers
            path = "/never"
        if path.endswith("/redirect"):  # under any prefix (a proxy passing the URI unchanged)
            path = "/redirect"
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        known = ("/name", "/big", "/slow", "/stall", "/cut", "/die", "/reset", "/never",
                 "/garbage", "/close", "/headers", "/redirect")
        if path not in known and not path.startswith("/status/"):
            body = self._read_body()
            doc = {
                "name": NAME,
                "method": self.command,
                "target": self.path,
                "version": self.request_version,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body": body[:200].decode("latin-1"),
                "conn": self.client_address[1],
            }
            return self._send(200, json.dumps(doc).encode(), "application/json")
        self._read_body()
        if path == "/name":
            return self._send(200, NAME.encode())
        if path == "/big":
            n = int(q.get("n", "0"))
            block = b"x" * 262144
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            chunked = q.get("chunked") == "1"
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(n))
            self.end_headers()
            if self.command == "HEAD":
                return
            left = n
            while left > 0:
                piece = block if left >= len(block) else block[:left]
                if chunked:
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
                left -= len(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/slow":
            time.sleep(float(q.get("delay", "1")))
            return self._send(200, b"slow")
        if path in ("/stall", "/cut", "/die"):
            after = int(q.get("after", "1000"))
            total = 10_000_000 if path == "/stall" else 1_000_000
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                             b"Content-Type: application/octet-stream\r\n\r\n" % total)
            self.wfile.write(b"y" * after)
            self.wfile.flush()
            if path == "/stall":
                time.sleep(3600)
            if path == "/die":
                time.sleep(0.05)
                os._exit(1)
            self.close_connection = True
            return
        if path == "/reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if path == "/never":
            time.sleep(3600)
            return
        if path == "/garbage":
            self.wfile.write(b"this is not http\r\n\r\n")
            self.close_connection = True
            return
        if path == "/close":
            self.close_connection = True
            return self._send(200, b"bye", extra=[("Connection", "close")])
        if path == "/redirect":  # ?to=URL (HOST: the request's Host), &refresh=1
            to = q.get("to", "/").replace("HOST", self.headers.get("Host", ""))
            if q.get("refresh"):
                return self._send(200, b"soon", extra=[("Refresh", f"3; url={to}")])
            return self._send(302, b"moved", extra=[("Location", to)])
        if path == "/headers":
            return self._send(200, b"h", extra=[
                ("Connection", "X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
                ("X-Kept", "yes"), ("Server", "backend/1"),
            ])
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            if q.get("on", NAME) != NAME:  # ?on=NAME: only that backend answers CODE
                return self._send(200, NAME.encode())
            return self._send(code, f"status {code}".encode())
        raise AssertionError(path)  # pragma: no cover

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any

    # ------------------------------------------------------------------ websocket
    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        self.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n")
        self.wfile.flush()
        rf = self.rfile
        while True:
            hdr = rf.read(2)
            if len(hdr) < 2:
                break
            opcode = hdr[0] & 0x0F
            masked = hdr[1] & 0x80
            n = hdr[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", rf.read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", rf.read(8))[0]
            mask = rf.read(4) if masked else b"\0\0\0\0"
            data = bytearray(rf.read(n))
            for i in range(len(data)):
                data[i] ^= mask[i % 4]
            self.wfile.write(ws_frame(opcode, bytes(data)))
            self.wfile.flush()
            if opcode == 8:
                break
        self.close_connection = True


def ws_frame(opcode: int, data: bytes, mask: bytes | None = None) -> bytes:
    """One final WebSocket frame (masked when ``mask`` is given, as clients must)."""
    head = bytes([0x80 | opcode])
    n = len(data)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        head += mask
    return head + data


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main() -> None:
    global NAME
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        NAME = sys.argv[2]
    srv = Server(("127.0.0.1", port), Handler)
    if len(sys.argv) > 3:  # CERT,KEY: serve HTTPS
        import ssl

        cert, key, *client_ca = sys.argv[3].split(",")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_ca:  # CERT,KEY,CLIENT_CA: mutual TLS, a client certificate is required
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca[0])
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.current_thread().name = NAME
    srv.serve_forever()


if __name__ == "__main__":
    main()
