"""A recording HTTP/1.1 backend: every request it receives is written, raw, to a file.

Run: ``python recorder.py PORT RECORD_FILE``. Each complete request (head and body, exactly
the bytes that came over the wire) is appended to RECORD_FILE as one JSON line
``{"n": <count>, "conn": <connection number>, "raw": <bytes as latin-1>}`` *before* it is
answered, so a test that got its response can read the file at once. The answer is
``200`` with body ``recorded <n>`` and keep-alive.

The backend parses only what edgeworker sends upstream (Content-Length or chunked framing,
which edgeworker rebuilds itself). Anything it cannot frame is recorded too, with
``"broken": true``, and the connection is closed: a test then sees that something reached the
backend even if it was garbage.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

_lock = threading.Lock()
_count = [0, 0]  # requests, connections


def _record(path: str, conn_no: int, raw: bytes, broken: bool = False) -> int:
    with _lock:
        _count[0] += 1
        n = _count[0]
        doc = {"n": n, "conn": conn_no, "raw": raw.decode("latin-1")}
        if broken:
            doc["broken"] = True
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(doc) + "\n")
    return n


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.taken = b""  # bytes of the current request, as received

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\r\n")
        self.taken += line + b"\r\n"
        return line

    def exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        data, self.buf = self.buf[:n], self.buf[n:]
        self.taken += data
        return data


def _one_request(r: _Reader) -> bool | None:
    """Read one request; True when complete, None at a clean EOF, False when unframeable."""
    r.taken = b""
    first = r.line()
    if first is None:
        return None if not r.taken and not r.buf else False
    length = 0
    chunked = False
    while True:
        line = r.line()
        if line is None:
            return False
        if not line:
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return False
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size_line = r.line()
            if size_line is None:
                return False
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                return False
            if size == 0:
                while True:  # trailers, up to the empty line
                    t = r.line()
                    if t is None:
                        return False
                    if not t:
                        return True
            if r.exact(size + 2) is None:
                return False
    if length and r.exact(length) is None:
        return False
    return True


def _serve(sock: socket.socket, path: str, conn_no: int) -> None:
    r = _Reader(sock)
    try:
        while True:
            ok = _one_request(r)
            if ok is None:
                return
            if not ok:
                if r.taken or r.buf:
                    _record(path, conn_no, r.taken + r.buf, broken=True)
                return
            n = _record(path, conn_no, r.taken)
            body = b"recorded %d" % n
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
    except OSError:
        pass
    finally:
        sock.close()


def main(port: int, path: str) -> None:
    """Listen on 127.0.0.1:``port`` and record forever (one thread per connection)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    while True:
        sock, _ = srv.accept()
        with _lock:
            _count[1] += 1
            conn_no = _count[1]
        threading.Thread(target=_serve, args=(sock, path, conn_no), daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
