"""HTTP/2 limits and abuse defences against one real `edgeworker run` (cleartext ``http2``,
small limits), with the ``h2`` library as a hostile client on a raw socket: streams past
``http2_max_concurrent_streams``, rapid reset, CONTINUATION flood, HPACK bomb, SETTINGS / PING /
empty DATA / WINDOW_UPDATE floods, a window held shut, stream-id exhaustion, an oversized
header list, ``keepalive_requests``, ``keepalive_timeout``, the preface deadline, and the
worker's drain (GOAWAY, in-flight streams finish). After each attack other clients are still
served."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Encoder

from ..h2_client import H2Client
from ..support import Server

APP = """
import edgeworker

def hello(req):
    return "hello\\n"

def slow(req):
    edgeworker.sleep(float(req.args.get("t", "1")))
    return "slow\\n"

def big(req):
    return b"z" * 1_000_000
"""

TOML = """
[http]
keepalive_requests = 400
keepalive_timeout = "2s"
client_header_timeout = "1s"
send_timeout = "1s"
http2_max_concurrent_streams = 4
max_header_size = "4k"

[[server]]
listen = ["127.0.0.1:{port} http2"]

  [[server.location]]
  match = "/"
  content = "app:hello"

  [[server.location]]
  match = "/slow"
  content = "app:slow"

  [[server.location]]
  match = "/big"
  content = "app:big"
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("h2abuse"), TOML, {"app.py": APP})
    server.start()
    yield server
    server.stop()


def served(srv) -> None:
    """Another client is served (the attack hurt only its own connection)."""
    c = H2Client(srv.port)
    r = c.get("/")
    c.close()
    assert r.status == 200 and r.body == b"hello\n"


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", sid)
        + payload
    )


def headers_block(path: str = "/") -> bytes:
    return Encoder().encode(
        [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "localhost")]
    )


class RawConn:
    """A client that sends the preface and an empty SETTINGS, then frames as they are, and
    reads the server's frames (type, flags, stream id, payload) itself."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frames(self, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                kind, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                payload, self.buf = self.buf[9 : 9 + n], self.buf[9 + n :]
                yield kind, flags, sid, payload
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return
            if not chunk:
                return
            self.buf += chunk

    def read_until(self, test) -> bool:
        return any(test(f) for f in self.frames())

    def goaway(self) -> int | None:
        """The error code of the server's GOAWAY (None: none came before it closed)."""
        for kind, _flags, _sid, payload in self.frames():
            if kind == 7:
                return int.from_bytes(payload[4:8], "big")
        return None

    def close(self) -> None:
        self.sock.close()


def goaway_code(c: H2Client) -> int | None:
    c.wait_closed(5)
    return None if c.goaway is None else c.goaway.error_code


# --------------------------------------------------------------------------- limits
def test_streams_past_the_limit_are_refused(srv):
    c = H2Client(srv.port)
    # sent before the server's SETTINGS arrive: the client does not know the limit yet
    sids = [c.request("/slow?t=0.5") for _ in range(6)]
    got = c.wait(sids, timeout=5)
    refused = [r for r in got if r.reset == ErrorCodes.REFUSED_STREAM]
    assert len(refused) == 2 and sum(r.status == 200 for r in got) == 4
    assert not c.closed  # the connection stays
    assert c.get("/").status == 200
    c.close()


def test_keepalive_requests_then_goaway_after_the_last_stream(srv):
    c = H2Client(srv.port)
    for _ in range(133):  # 399 streams, 3 at a time (the limit is 4)
        got = c.wait([c.request("/") for _ in range(3)])
        assert all(r.status == 200 for r in got)
    last = c.request("/")
    (r,) = c.wait([last])
    assert r.status == 200
    assert goaway_code(c) == ErrorCodes.NO_ERROR
    assert c.goaway.last_stream_id == last


def test_idle_connection_closes_after_keepalive_timeout(srv):
    c = H2Client(srv.port)
    assert c.get("/").status == 200
    t0 = time.monotonic()
    assert c.wait_closed(6)
    assert 1.5 < time.monotonic() - t0 < 5
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.NO_ERROR


def test_a_preface_late_or_wrong_closes(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"PRI * HTTP/2.0\r\n")  # a partial preface, then nothing
    t0 = time.monotonic()
    assert s.recv(100) == b""  # closed silently by client_header_timeout
    assert time.monotonic() - t0 < 4
    s.close()
    raw = RawConn(srv.port)
    raw.send(frame(7, 0, 1, b"\0" * 8))  # GOAWAY on a stream: a protocol error
    assert raw.goaway() == ErrorCodes.PROTOCOL_ERROR
    raw.close()
    served(srv)


def test_an_oversized_header_list_gets_431(srv):
    c = H2Client(srv.port)
    r = c.get("/", headers=[("x-big", "v" * 5000)])  # over max_header_size (4k)
    assert r.status == 431
    assert c.get("/").status == 200  # the connection goes on
    c.close()


# --------------------------------------------------------------------------- abuse
def test_rapid_reset_gets_enhance_your_calm(srv):
    c = H2Client(srv.port)
    for _ in range(300):
        sid = c.request("/")
        c.h2.reset_stream(sid, ErrorCodes.CANCEL)
        c.flush()
        if c.closed:
            break
    assert goaway_code(c) == ErrorCodes.ENHANCE_YOUR_CALM
    served(srv)


def test_continuation_flood_is_cut_early(srv):
    raw = RawConn(srv.port)
    raw.send(frame(1, 0, 1, headers_block()))  # HEADERS without END_HEADERS
    code = None
    sent = 0
    for _ in range(200):  # CONTINUATION frames of junk, never ending the block
        try:
            raw.send(frame(9, 0, 1, b"\x40" * 4096))
        except OSError:
            break
        sent += 4096
        got = [f for f in raw.frames(0.02) if f[0] == 7]
        if got:
            code = int.from_bytes(got[0][3][4:8], "big")
            break
    raw.close()
    assert code == ErrorCodes.ENHANCE_YOUR_CALM
    assert sent <= 20 * 4096  # cut at 64 KiB of header block, not at the end of the flood
    served(srv)


def test_hpack_bomb_is_bounded(srv):
    c = H2Client(srv.port)
    c.read_some(0.2)
    enc = Encoder()
    big = ("x-bomb", "b" * 4000)  # into the dynamic table once, then 1 byte per reference
    block = enc.encode(
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "localhost"), big]
        + [big] * 500
    )
    assert len(block) < 6000  # ~2 MB decoded
    c.raw(frame(1, 0x5, 1, block))
    assert goaway_code(c) == ErrorCodes.ENHANCE_YOUR_CALM
    served(srv)


@pytest.mark.parametrize(
    "kind",
    ["settings", "ping", "empty_data", "window_update", "priority"],
)
def test_control_frame_floods_get_goaway(srv, kind):
    c = H2Client(srv.port)
    c.read_some(0.2)
    if kind == "empty_data":
        c.raw(frame(1, 0x4, 1, headers_block("/slow?t=3")))  # a stream that stays open
    frames = {
        "settings": frame(4, 0, 0, b""),
        "ping": frame(6, 0, 0, b"12345678"),
        "empty_data": frame(0, 0, 1, b""),
        "window_update": frame(8, 0, 0, struct.pack(">I", 1)),
        "priority": frame(2, 0, 3, struct.pack(">IB", 0, 15)),
    }[kind]
    for _ in range(30):
        c.raw(frames * 100)
        if c.closed:
            break
    assert goaway_code(c) == ErrorCodes.ENHANCE_YOUR_CALM
    served(srv)


def test_a_window_held_shut_is_bounded_by_send_timeout(srv):
    c = H2Client(srv.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
    sid = c.request("/big")
    t0 = time.monotonic()
    (r,) = c.wait([sid], timeout=5)
    assert r.status == 200 and r.body == b""
    assert r.reset == ErrorCodes.CANCEL  # send_timeout (1s) later
    assert 0.8 < time.monotonic() - t0 < 4
    # the connection's own window shut: the whole connection closes
    c2 = H2Client(srv.port, auto_ack=False)
    sid = c2.request("/big")
    t0 = time.monotonic()
    assert c2.wait_closed(6)
    assert len(c2.responses[sid].body) <= 65535
    assert c2.goaway is not None and c2.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    served(srv)


def test_stream_id_exhaustion(srv):
    raw = RawConn(srv.port)
    top = 2**31 - 1
    raw.send(frame(1, 0x5, top, headers_block()))  # the last stream id a client has
    seen = raw.read_until(lambda f: f[0] == 0 and f[2] == top and b"hello" in f[3])
    assert seen, "the stream with the last id was not served"
    raw.send(frame(1, 0x5, 5, headers_block()))  # a lower id after it: a protocol error
    assert raw.goaway() == ErrorCodes.PROTOCOL_ERROR
    raw.close()
    served(srv)


# --------------------------------------------------------------------------- drain
def test_reload_sends_goaway_and_in_flight_streams_finish(srv):
    c = H2Client(srv.port)
    c.read_some(0.2)
    sid = c.request("/slow?t=3")
    time.sleep(0.3)
    srv.cli("reload", check=True)
    (r,) = c.wait([sid], timeout=10)
    assert r.status == 200 and r.body == b"slow\n"
    assert goaway_code(c) == ErrorCodes.NO_ERROR
    assert c.goaway.last_stream_id == sid
    served(srv)


def test_no_unexpected_error_was_logged(srv):
    assert "unexpected error" not in srv.errors(), srv.errors()[-3000:]


# --------------------------------------------------------------------------- malformed
_REQ = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"localhost"),
]
MALFORMED = {
    "uppercase name": _REQ + [(b"X-Upper", b"1")],
    "colon in a name": _REQ + [(b"x:colon", b"1")],
    "space in a name": _REQ + [(b"x-sp ace", b"1")],
    "empty name": _REQ + [(b"", b"1")],
    "connection": _REQ + [(b"connection", b"close")],
    "transfer-encoding": _REQ + [(b"transfer-encoding", b"chunked")],
    "te other than trailers": _REQ + [(b"te", b"gzip")],
    "LF in a value": _REQ + [(b"x-a", b"a\nb")],
    "CRLF in a value": _REQ + [(b"x-a", b"a\r\nx-injected: 1")],
    "NUL in a value": _REQ + [(b"x-a", b"a\x00b")],
    "space around a value": _REQ + [(b"x-a", b" padded")],
    "CRLF in :path": [*_REQ[:2], (b":path", b"/ HTTP/1.1\r\nx-injected: 1"), _REQ[3]],
    "host other than :authority": _REQ + [(b"host", b"other.example")],
    "two hosts": _REQ[:3] + [(b"host", b"localhost"), (b"host", b"localhost")],
    "pseudo-header after a field": _REQ[:3] + [(b"x-a", b"1"), _REQ[3]],
    "repeated pseudo-header": _REQ + [(b":path", b"/again")],
    "unknown pseudo-header": [(b":foo", b"1"), *_REQ],
    ":protocol": _REQ + [(b":protocol", b"websocket")],
    "no :method": _REQ[1:],
    "no :scheme": [_REQ[0], *_REQ[2:]],
    "empty :path": [*_REQ[:2], (b":path", b""), _REQ[3]],
}


@pytest.mark.parametrize("fields", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_request_resets_its_stream_only(srv, fields):
    raw = RawConn(srv.port)
    enc = Encoder()
    raw.send(frame(1, 0x5, 1, enc.encode(fields)))
    code = ErrorCodes.PROTOCOL_ERROR
    assert raw.read_until(
        lambda f: f[0] == 3 and f[2] == 1 and int.from_bytes(f[3][:4], "big") == code
    ), "no RST_STREAM PROTOCOL_ERROR"
    raw.send(frame(1, 0x5, 3, enc.encode(_REQ)))  # the connection goes on
    assert raw.read_until(lambda f: f[0] == 0 and f[2] == 3 and b"hello" in f[3])
    raw.close()


def test_te_trailers_and_a_matching_host_are_well_formed(srv):
    raw = RawConn(srv.port)
    fields = [*_REQ, (b"te", b"trailers"), (b"host", b"localhost"), (b"x-empty", b"")]
    raw.send(frame(1, 0x5, 1, Encoder().encode(fields)))
    assert raw.read_until(lambda f: f[0] == 0 and f[2] == 1 and b"hello" in f[3])
    raw.close()
