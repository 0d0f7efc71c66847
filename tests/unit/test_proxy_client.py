"""The proxy's upstream client on gevent sockets (``edgeworker.proxy.client``), in process.

A real gevent listener on loopback plays the upstream; the client side is an ``UpConn`` on a
gevent socket without timeout (as the proxy's ``connect(..., timed=True)`` makes it), so reads
and writes take the fast path: the non-blocking socket underneath, waits on the socket's own
read watcher, deadlines on the worker's watchdog.
"""

from __future__ import annotations

import gc
import time
import weakref

import gevent
import pytest
from gevent import socket as gsocket

from edgeworker.proxy.client import (
    MAX_HEAD,
    ProxyResponse,
    Response,
    UpConn,
    UpstreamError,
    UpstreamTimeout,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


class Upstream:
    """A loopback listener whose one connection is served by ``script(sock)``."""

    def __init__(self, script) -> None:
        self.listener = gsocket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.addr = self.listener.getsockname()
        self.received = bytearray()
        self.script = script
        self.greenlet = gevent.spawn(self._serve)

    def _serve(self) -> None:
        sock, _ = self.listener.accept()
        try:
            self.script(self, sock)
        finally:
            sock.close()

    def read_request(self, sock) -> bytes:
        """Read up to the end of one request head (no body)."""
        while b"\r\n\r\n" not in self.received:
            data = sock.recv(65536)
            if not data:
                break
            self.received += data
        head, _, rest = bytes(self.received).partition(b"\r\n\r\n")
        self.received = bytearray(rest)
        return head

    def close(self) -> None:
        self.greenlet.kill()
        self.listener.close()


def up_conn(addr) -> UpConn:
    sock = gsocket.create_connection(addr, timeout=5)
    sock.settimeout(None)
    return UpConn(sock, addr, timed=True)


def run(fn, timeout: float = 10.0):
    """Run ``fn`` in a greenlet (the watchdog throws into it) and return its result."""
    g = gevent.spawn(fn)
    g.join(timeout)
    assert g.ready(), "client greenlet did not finish"
    return g.get()


def test_keepalive_exchanges_take_the_fast_path_and_free_the_response_without_gc() -> None:
    def script(up, sock):
        for _ in range(2):
            up.read_request(sock)
            sock.sendall(OK)
        up.read_request(sock)

    up = Upstream(script)
    try:
        conn = up_conn(up.addr)
        assert conn.plain  # a plain gevent socket: the fast path is used

        def client():
            out = []
            for _ in range(2):
                conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5)
                resp = Response(conn, 5)
                resp.read_head()
                body = b"".join(resp.body())
                out.append((resp.status, body, resp.reusable))
                ref = weakref.ref(resp)
                resp.release()
                del resp
                out.append(ref() is None)  # freed at once: no cycle left for the GC
            return out

        was = gc.isenabled()
        gc.disable()
        try:
            result = run(client)
        finally:
            if was:
                gc.enable()
        assert result == [(200, b"hello", True), True, (200, b"hello", True), True]
        conn.close()
    finally:
        up.close()


def test_read_timeout_on_the_fast_path_is_an_upstream_timeout() -> None:
    def script(up, sock):
        up.read_request(sock)
        gevent.sleep(5)  # never answers

    up = Upstream(script)
    try:
        conn = up_conn(up.addr)

        def client():
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5)
            t0 = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                Response(conn, 0.3).read_head()
            return time.monotonic() - t0

        took = run(client)
        assert 0.25 <= took < 3.0  # the watchdog fires up to RESOLUTION late
        conn.close()
    finally:
        up.close()


def test_eof_before_any_answer_is_an_upstream_error() -> None:
    def script(up, sock):
        up.read_request(sock)  # then close without answering

    up = Upstream(script)
    try:
        conn = up_conn(up.addr)

        def client():
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5)
            with pytest.raises(UpstreamError) as info:
                Response(conn, 5).read_head()
            return info.value.reason

        assert "without answering" in run(client)
        conn.close()
    finally:
        up.close()


def test_an_endless_response_head_is_refused_once_past_the_bound() -> None:
    sent = []

    def script(up, sock):
        up.read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        try:
            for _ in range(1000):  # ~1 MB of fields, never a blank line
                sock.sendall(line)
                sent.append(len(line))
        except OSError:
            pass  # the client closed on us

    up = Upstream(script)
    try:
        conn = up_conn(up.addr)

        def client():
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5)
            resp = Response(conn, 5)
            with pytest.raises(UpstreamError) as info:
                resp.read_head()
            return info.value.reason, resp.received

        reason, received = run(client)
        assert reason == "upstream sent too big header"
        # cut within one read past the bound, long before the upstream is done
        assert MAX_HEAD < received <= MAX_HEAD + 65536
        conn.close()
    finally:
        up.close()


def test_a_send_larger_than_the_socket_buffers_completes_whole() -> None:
    size = 16 * 1024 * 1024  # far more than loopback socket buffers take at once

    def script(up, sock):
        got = 0
        while got < size:
            data = sock.recv(1 << 20)
            if not data:
                break
            got += len(data)
            gevent.sleep(0.001)  # a slow reader: the client must wait for writability
        up.received = bytearray(str(got).encode())
        sock.sendall(OK)

    up = Upstream(script)
    try:
        conn = up_conn(up.addr)
        payload = b"x" * size

        def client():
            conn.send(payload, 5)
            resp = Response(conn, 5)
            resp.read_head()
            return resp.status

        assert run(client, timeout=30) == 200
        assert int(up.received) == size
        conn.close()
    finally:
        up.close()


def test_after_close_the_connection_is_no_longer_used_raw() -> None:
    def script(up, sock):
        up.read_request(sock)

    up = Upstream(script)
    try:
        conn = up_conn(up.addr)
        conn.close()
        assert conn.io.raw.fileno() == -1  # closed: a later use fails (below)
        with pytest.raises(UpstreamError):
            run(lambda: conn.send(b"GET / HTTP/1.1\r\n\r\n", 1))
    finally:
        up.close()


def test_proxy_response_sorts_fields_as_they_arrive_and_forgets_interim_ones() -> None:
    head = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
        b"Connection: X-Hop\r\nX-Hop: 1\r\nX-A: a\r\nServer: up\r\n"
        b"Content-Type: text/plain\r\n\r\nok"
    )

    def script(up, sock):
        up.read_request(sock)
        sock.sendall(head)

    up = Upstream(script)
    try:
        conn = up_conn(up.addr)

        def client():
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5)
            resp = ProxyResponse(conn, 5)
            resp.read_head()
            return resp

        resp = run(client)
        assert resp.status == 200 and resp.length == 2 and resp.done
        assert resp.version == "1.1"
        f = resp.fields
        assert f.kept == [(b"X-Hop", b"1"), (b"X-A", b"a"), (b"Content-Type", b"text/plain")]
        assert f.wire == b"\r\nX-Hop: 1\r\nX-A: a\r\nContent-Type: text/plain"
        assert f.has_ct
        assert f.connection == b"keep-alive,X-Hop"  # the proxy drops what it names
        assert [n for n, _ in f.hop] == [b"Content-Length", b"Connection", b"Connection", b"Server"]
        assert (b"Link", b"</a.css>") not in resp.raw_headers  # the 103's field
        assert len(resp.raw_headers) == 7
        conn.close()
    finally:
        up.close()
