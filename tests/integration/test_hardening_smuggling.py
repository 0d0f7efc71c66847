"""Request smuggling and malformed input, end to end: raw bytes over loopback to a real
``edgeworker run`` whose only location proxies to a recording backend (tests/backends/recorder.py).

For every vector the test checks both sides: what edgeworker answers (400, 405, 408,
413, 414, 431, 501, 505, then close) and what the backend received — nothing, or exactly the
valid requests that came before the bad one. After each vector a valid "fence" request goes
through on a fresh connection; the backend numbers every request it receives, so the fence
must be the very next one: nothing of the vector was forwarded, even late.

The rejection tables of tests/data/http_rejections.json (request line, header syntax, Host,
Content-Length, Transfer-Encoding, chunk syntax), which tests/unit/test_http_protocol.py feeds to
the protocol alone, are sent as they are; tests/data/smuggling.json adds classic CL.TE / TE.CL
payloads with a smuggled request behind them (a CL-framing front or back end would pass it on)
and TE obfuscations from the smuggler / smugglex catalogues; the tests here add pipelining and
size limits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..data import rejections, vectors
from ..support import Server, free_port, split_responses, wait_port

RECORDER = Path(__file__).resolve().parents[1] / "backends" / "recorder.py"
BODY_LIMIT = 1024

CONFIG = """
[http]
client_header_timeout = "1s"
client_body_timeout = "1s"

[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "= /local"
  return = {{{{ status = 200, body = "local" }}}}
  [[server.location]]
  match = "/"
  proxy_pass = "http://127.0.0.1:{backend}"
  client_max_body_size = "{limit}"
"""


class Edge:
    """edgeworker in front of the recorder; ``records()`` is what the backend received."""

    def __init__(self, tmp: Path) -> None:
        self.record_file = tmp / "recorded.jsonl"
        self.record_file.touch()
        self.backend_port = free_port()
        self.backend = subprocess.Popen(
            [sys.executable, str(RECORDER), str(self.backend_port), str(self.record_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_port(self.backend_port, proc=self.backend)
        toml = CONFIG.format(backend=self.backend_port, limit=BODY_LIMIT)
        self.srv = Server(tmp / "edge", toml, workers=1).start()

    def records(self) -> list[dict]:
        lines = self.record_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def count(self) -> int:
        return len(self.records())

    def fence(self) -> int:
        """A valid request on a fresh connection; returns the number the backend gave it."""
        data, closed = exchange(self.srv.port, b"GET /fence HTTP/1.1\r\nHost: fence\r\n"
                                b"Connection: close\r\n\r\n")
        (status, _, body), = split_responses(data)
        assert status == 200, data
        return int(body.split()[1])

    def stop(self) -> None:
        self.srv.stop()
        os.killpg(self.backend.pid, signal.SIGKILL)
        self.backend.wait(5)


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    e = Edge(tmp_path_factory.mktemp("smuggling"))
    try:
        yield e
    finally:
        e.stop()


def exchange(port: int, data: bytes, timeout: float = 5.0, pause: float = 0.0,
             shut: bool = False) -> tuple[bytes, bool]:
    """Send ``data``; read until the server closes. Returns (bytes, closed by the server)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if pause:
            time.sleep(pause)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return b"".join(chunks), True
            if not b:
                return b"".join(chunks), True
            chunks.append(b)
        return b"".join(chunks), False


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    return split_responses(data)


def assert_rejected(edge: Edge, data: bytes, status: int, forwarded: int = 0, **kw) -> list:
    """Send a vector; the last answer is ``status`` with close, the connection is closed,
    and exactly ``forwarded`` requests (the valid ones before it) reached the backend."""
    before = edge.count()
    raw, closed = exchange(edge.srv.port, data, **kw)
    assert closed, f"connection left open after {raw!r}"
    got = responses(raw)
    assert got, "no answer"
    last_status, last_headers, _ = got[-1]
    assert last_status == status, raw
    assert last_headers.get("connection") == "close", raw
    assert [s for s, _, _ in got[:-1]] == [200] * forwarded, raw
    fence = edge.fence()
    assert fence == before + forwarded + 1, (
        f"the backend received {fence - before - 1} request(s), expected {forwarded}: "
        f"{edge.records()[before:]}"
    )
    return edge.records()[before:before + forwarded]


def _params(*tables: list) -> list:
    return [pytest.param(d, s, id=n) for table in tables for n, d, s in table]


# ------------------------------------------------------------------ the unit-level catalogues

@pytest.mark.parametrize(
    "data,status",
    _params(rejections()),
)
def test_protocol_vector_is_answered_and_never_forwarded(edge, data: bytes, status: int) -> None:
    assert_rejected(edge, data, status)


# ------------------------------------------------------------------ smuggling payloads

SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
P = b"POST /s HTTP/1.1\r\nHost: h\r\n"

SMUGGLING_VECTORS = vectors("smuggling.json", "smuggling")


@pytest.mark.parametrize("data,status", _params(SMUGGLING_VECTORS))
def test_smuggling_vector_is_answered_and_never_forwarded(edge, data: bytes, status: int) -> None:
    assert_rejected(edge, data, status)


# ------------------------------------------------------------------ accepted, with framing rebuilt

def _one_record(edge: Edge, data: bytes) -> bytes:
    before = edge.count()
    raw, _ = exchange(edge.srv.port, data)
    got = [r for r in responses(raw) if r[0] != 100]  # 100 Continue comes from edgeworker
    assert [s for s, _, _ in got] == [200], raw
    recs = edge.records()[before:]
    assert len(recs) == 1, recs
    return recs[0]["raw"].encode("latin-1")


def _upstream_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [tuple(x.strip() for x in line.split(b":", 1)) for line in head.split(b"\r\n")[1:]]


@pytest.mark.parametrize("te", [b"Chunked", b"CHUNKED", b"\tchunked", b"  chunked  ", b"chunked"])
def test_accepted_chunked_is_reframed_upstream(edge, te: bytes) -> None:
    data = (P + b"Transfer-Encoding: " + te + b"\r\nConnection: close\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    raw = _one_record(edge, data)
    names = [n.lower() for n, _ in _upstream_headers(raw)]
    assert b"transfer-encoding" not in names and b"x-trailer" not in names
    assert (b"content-length", b"11") in [(n.lower(), v) for n, v in _upstream_headers(raw)]
    assert raw.endswith(b"\r\n\r\nhello world")


def test_te_trailing_tab_never_reaches_a_handler(edge) -> None:
    # llhttp does not take "chunked<HTAB>" as chunked; the protocol refuses it with the head
    raw, closed = exchange(edge.srv.port, b"POST /local HTTP/1.1\r\nHost: h\r\n"
                           b"Transfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n")
    assert closed and responses(raw)[0][0] == 400, raw


def test_hop_by_hop_and_framing_headers_are_not_passed(edge) -> None:
    data = (P + b"Content-Length: 3\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n"
            b"TE: trailers\r\nTrailer: X-T\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\n"
            b"Expect: 100-continue\r\n\r\nabc")
    raw = _one_record(edge, data)
    names = {n.lower() for n, _ in _upstream_headers(raw)}
    for hop in (b"x-secret", b"te", b"trailer", b"keep-alive", b"proxy-connection", b"expect",
                b"transfer-encoding"):
        assert hop not in names, raw
    assert raw.endswith(b"\r\n\r\nabc")


def test_underscore_header_is_not_a_second_transfer_encoding(edge) -> None:
    # A back end that maps "_" to "-" (CGI/WSGI environ) must not see a second framing header
    # that edgeworker ignored: either it is dropped, or the body is framed by edgeworker's CL.
    data = P + b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    raw = _one_record(edge, data)
    assert raw.endswith(b"\r\n\r\nhello")
    assert (b"content-length", b"5") in [(n.lower(), v) for n, v in _upstream_headers(raw)]


# ------------------------------------------------------------------ pipelining

GOOD = b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize(
    "bad,status",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="dup host"),
        pytest.param(P + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
                     id="CL+TE"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, id="HTTP/2.0"),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, id="long line"),
        pytest.param(b"TRACE / HTTP/1.1\r\nHost: h\r\n\r\n", 405, id="TRACE"),
    ],
)
def test_valid_request_before_a_bad_one_is_forwarded_alone(edge, bad: bytes, status: int) -> None:
    recs = assert_rejected(edge, GOOD + bad + GOOD, status, forwarded=1)
    assert recs[0]["raw"].startswith("GET /one HTTP/1.1\r\n")


def test_body_that_looks_like_a_request_stays_a_body(edge) -> None:
    data = P + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED + GOOD
    before = edge.count()
    raw, _ = exchange(edge.srv.port, data + b"GET /last HTTP/1.1\r\nHost: h\r\n"
                      b"Connection: close\r\n\r\n")
    assert [s for s, _, _ in responses(raw)] == [200, 200, 200]
    recs = [r["raw"] for r in edge.records()[before:]]
    assert len(recs) == 3
    assert recs[0].startswith("POST /s ") and recs[0].endswith(SMUGGLED.decode())
    assert recs[1].startswith("GET /one ") and recs[2].startswith("GET /last ")
    assert not any(r.startswith("GET /admin") for r in recs)


def test_chunked_body_then_pipelined_request(edge) -> None:
    data = (P + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    before = edge.count()
    raw, closed = exchange(edge.srv.port, data)
    assert closed and [s for s, _, _ in responses(raw)] == [200, 200]
    recs = [r["raw"] for r in edge.records()[before:]]
    assert recs[0].startswith("POST /s ") and recs[0].endswith("\r\n\r\nabc")
    assert recs[1].startswith("GET /two ")


def test_nothing_after_connection_close_is_forwarded(edge) -> None:
    data = (b"GET /one HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + SMUGGLED)
    before = edge.count()
    raw, closed = exchange(edge.srv.port, data)
    assert closed and [s for s, _, _ in responses(raw)] == [200]
    assert edge.fence() == before + 2


def test_request_cut_by_eof_is_400_and_not_forwarded(edge) -> None:
    assert_rejected(edge, P + b"Content-Length: 10\r\n\r\nabc", 400, shut=True)
    assert_rejected(edge, P + b"Transfer-Encoding: chunked\r\n\r\n5\r\nab", 400, shut=True)
    assert_rejected(edge, b"GET / HTTP/1.1\r\nHost: h\r\nX-Half: ", 400, shut=True)


def test_http10_without_keepalive_closes_after_one(edge) -> None:
    before = edge.count()
    raw, closed = exchange(edge.srv.port, b"GET /a HTTP/1.0\r\n\r\n" + GOOD)
    assert closed and [s for s, _, _ in responses(raw)] == [200]
    assert edge.fence() == before + 2


# ------------------------------------------------------------------ size limits and timeouts

def test_request_line_over_limit_is_414(edge) -> None:
    assert_rejected(edge, b"GET /" + b"x" * 8200 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414)


def test_endless_request_line_is_cut_with_414(edge) -> None:
    # no end of line ever comes: the server answers once the limit is crossed
    assert_rejected(edge, b"GET /" + b"x" * 20000, 414)


def test_header_section_over_limit_is_431(edge) -> None:
    assert_rejected(edge, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431)


def test_endless_header_is_cut_with_431(edge) -> None:
    assert_rejected(edge, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 50000, 431)


def test_too_many_headers_is_431(edge) -> None:
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    assert_rejected(edge, b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n", 431)


def test_trailers_over_limit_are_431(edge) -> None:
    trailers = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    assert_rejected(edge, P + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + trailers
                    + b"\r\n", 431)


def test_declared_body_over_limit_is_413(edge) -> None:
    assert_rejected(edge, P + b"Content-Length: %d\r\n\r\n" % (BODY_LIMIT + 1)
                    + b"a" * (BODY_LIMIT + 1), 413)


def test_chunked_body_over_limit_is_413(edge) -> None:
    body = b"".join(b"100\r\n" + b"a" * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    assert_rejected(edge, P + b"Transfer-Encoding: chunked\r\n\r\n" + body, 413)


def test_body_at_limit_is_forwarded(edge) -> None:
    raw = _one_record(edge, P + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % BODY_LIMIT
                      + b"a" * BODY_LIMIT)
    assert raw.endswith(b"a" * BODY_LIMIT)


def test_incomplete_head_is_408_at_client_header_timeout(edge) -> None:
    t0 = time.monotonic()
    assert_rejected(edge, b"GET / HTTP/1.1\r\nHost: h\r\n", 408)
    assert time.monotonic() - t0 < 4  # 1 s timeout, 0.1 s watchdog, generous slack


def test_incomplete_body_is_408_at_client_body_timeout(edge) -> None:
    t0 = time.monotonic()
    assert_rejected(edge, P + b"Content-Length: 10\r\n\r\nabc", 408)
    assert time.monotonic() - t0 < 4
