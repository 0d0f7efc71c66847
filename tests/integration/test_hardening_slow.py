"""Slow and idle clients on a real server: slowloris, slow body, a client that never reads,
and thousands of idle connections. Timeouts here are short (1 s) so the tests stay quick;
the per-worker watchdog checks deadlines every 0.1 s, and the bounds asserted leave slack.
"""

from __future__ import annotations

import resource
import socket
import time

import pytest

from ..support import Server, read_all, split_responses, status_of

APP = """
BIG = b"x" * (32 << 20)

def big(req):
    return BIG

def echo_len(req):
    return str(len(req.read_body())) + "\\n"

def hello(req):
    return "hello\\n"
"""

CONFIG = """
[main]
worker_connections = 2100

[http]
client_header_timeout = "1s"
client_body_timeout = "1s"
send_timeout = "1s"
keepalive_timeout = "60s"

[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  match = "= /big"
  content = "app:big"
  [[server.location]]
  match = "= /body"
  content = "app:echo_len"
  [[server.location]]
  match = "/"
  content = "app:hello"
"""

HELLO = b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192)
    if soft < want:  # the server inherits it; 2000 + 2000 descriptors are needed
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    s = Server(tmp_path_factory.mktemp("slow"), CONFIG, files={"app.py": APP}).start()
    try:
        yield s
    finally:
        s.stop()


def connect(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def hello_ok(srv, timeout: float = 5.0) -> float:
    """One fresh request; returns how long it took (asserts a 200)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        raw = read_all(s, timeout)
    assert status_of(raw) == 200, raw
    return time.monotonic() - t0


def test_slowloris_head_trickled_gets_408_at_client_header_timeout(srv) -> None:
    """The deadline is for the whole head: one byte every 0.1 s never resets it."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(srv) as s:
        t0 = time.monotonic()
        s.settimeout(0.1)
        got = b""
        for byte in head:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            got += data
            if not data or got.endswith(b"</html>\r\n"):
                break
            if time.monotonic() - t0 > 8:
                break
        elapsed = time.monotonic() - t0
        s.settimeout(3)
        got += read_all(s, 3)
    assert status_of(got) == 408, got
    assert b"\r\nConnection: close\r\n" in got
    assert 0.9 <= elapsed < 3.0, elapsed  # 1 s header timeout, not 200 × 1 s


def test_idle_connection_that_never_sends_is_closed_at_client_header_timeout(srv) -> None:
    with connect(srv) as s:
        t0 = time.monotonic()
        raw = read_all(s, 5)
        elapsed = time.monotonic() - t0
    # nothing was sent: nginx closes such a connection without an answer; a 408 is also fine
    assert raw == b"" or status_of(raw) == 408, raw
    assert elapsed < 3.0


def test_slow_body_gets_408_at_client_body_timeout(srv) -> None:
    with connect(srv) as s:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
        t0 = time.monotonic()
        raw = read_all(s, 5)
        elapsed = time.monotonic() - t0
    assert status_of(raw) == 408, raw
    assert b"\r\nConnection: close\r\n" in raw
    assert 0.9 <= elapsed < 3.0, elapsed


def test_body_trickled_faster_than_the_timeout_is_served(srv) -> None:
    """client_body_timeout is between two reads (like nginx), not for the whole body."""
    with connect(srv) as s:
        s.sendall(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n")
        for piece in (b"ab", b"cd", b"ef"):
            time.sleep(0.6)
            s.sendall(piece)
        raw = _read_one(s)
    assert status_of(raw) == 200 and raw.endswith(b"\r\n\r\n6\n"), raw


def _read_one(s: socket.socket) -> bytes:
    s.settimeout(5)
    data = b""
    while True:
        data += s.recv(65536)
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(body) >= length:
                return data


def _closed_within(s: socket.socket, timeout: float) -> bool:
    """True when the server closes ``s`` (EOF or reset) within ``timeout`` (data is skipped)."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_reader_that_never_reads_is_dropped_at_send_timeout(srv) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    try:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        # the worker is free for others while this client does not read
        time.sleep(0.3)
        assert hello_ok(srv) < 2.0
        time.sleep(2.5)  # > send_timeout (1 s) + watchdog resolution + slack
        received = 0
        s.settimeout(5)
        closed = False
        while True:
            try:
                b = s.recv(1 << 20)
            except ConnectionResetError:
                closed = True
                break
            if not b:
                closed = True
                break
            received += len(b)
            if received > (32 << 20):
                break
    finally:
        s.close()
    assert closed, "the connection was not closed"
    assert received < (32 << 20), "the whole body was delivered: the client was not dropped"
    assert hello_ok(srv) < 2.0


def test_thousands_of_idle_connections_do_not_starve_new_ones(srv) -> None:
    """1000 connections that sent nothing yet and 1000 idle keep-alive ones, held by one
    worker with worker_connections = 2100: new requests are still served at once, and the
    idle keep-alive connections still work afterwards."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4200:
        pytest.skip("the descriptor limit is too low for 2000 + 2000 sockets")
    fresh: list[socket.socket] = []
    kept: list[socket.socket] = []
    try:
        for _ in range(1000):
            kept.append(connect(srv))
        for s in kept:  # one request each, answers read later: they stay open (keep-alive)
            s.sendall(HELLO)
        for s in kept:
            assert status_of(_read_one(s)) == 200
        for _ in range(1000):
            fresh.append(connect(srv))
        time.sleep(0.3)
        times = [hello_ok(srv) for _ in range(20)]
        assert max(times) < 2.0, times
        # the idle keep-alive connections are still open and served
        for s in kept[::50]:
            s.sendall(HELLO)
            assert status_of(_read_one(s)) == 200
        # the fresh ones are cut at client_header_timeout (1 s): the slots come back
        time.sleep(1.5)
        for s in fresh[::100]:
            assert _closed_within(s, 2.0)
    finally:
        for s in fresh + kept:
            s.close()
    assert hello_ok(srv) < 2.0
    assert "are not enough" not in srv.errors()


def test_pipelined_flood_is_answered_in_order(srv) -> None:
    """500 pipelined requests in one write: every one answered, in order, nothing dropped."""
    n = 500
    reqs = b"".join(b"GET /n%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(n - 1))
    reqs += b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    with connect(srv) as s:
        s.sendall(reqs)
        raw = read_all(s, 10)
    got = split_responses(raw)
    assert len(got) == n and all(status == 200 for status, _, _ in got)
