"""The upstream response head parsed in C (``parse_response_head`` in edgeworker/_speedups.c).

A ``ProxyResponse`` hands its first read to ``parse_response_head``, which takes the common
response (whole in that read) and gives way to httptools for anything else. Every case here is
read twice over a real socket pair, once with the C function and once with httptools alone, and
the two readings must agree: status, framing, keep-alive, body, every field as the proxy sorts
it, or the same error.
"""

from __future__ import annotations

import random

import gevent
import pytest
from gevent import socket as gsocket

from edgeworker.http.fields import accel
from edgeworker.proxy import client
from edgeworker.proxy.client import ProxyResponse, UpConn, UpstreamError

pytestmark = pytest.mark.skipif(accel is None, reason="the C module is not built")

FIELD_ATTRS = ("kept", "wire", "hop", "connection", "redirects", "length", "has_ct", "framed")


def read(data: bytes, head_only: bool) -> tuple:
    """Everything a proxy reads of ``data`` sent by an upstream, which then closes."""
    a, b = gsocket.socketpair()
    b.settimeout(None)
    conn = UpConn(b, ("test", 0), timed=True)

    def client_side():
        try:
            resp = ProxyResponse(conn, 5.0, head_only)
            resp.read_head()
            fields = {name: getattr(resp.fields, name) for name in FIELD_ATTRS}
            head = (resp.status, resp.length, resp.done, resp.version)
            body = b"" if head_only else resp.read_all()
            return ("ok", head, fields, body, resp.reusable, resp.received)
        except UpstreamError as exc:
            return ("error", type(exc).__name__, str(exc))

    try:
        a.sendall(data)
        a.shutdown(gsocket.SHUT_WR)
        g = gevent.spawn(client_side)
        g.join(10)
        assert g.ready(), "the client greenlet did not finish"
        return g.get()
    finally:
        a.close()
        conn.close()


def both(data: bytes, head_only: bool, monkeypatch) -> tuple[tuple, tuple, bool]:
    """(read with the C function, read with httptools alone, whether the C function took it)."""
    taken = []

    def spy(*args):
        got = accel.parse_response_head(*args)
        taken.append(got is not None)
        return got

    monkeypatch.setattr(client, "_parse_head", spy)
    fast = read(data, head_only)
    monkeypatch.setattr(client, "_parse_head", None)
    slow = read(data, head_only)
    return fast, slow, any(taken)


COMMON = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 29 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 5\r\nLast-Modified: x\r\n"
    b"Connection: keep-alive\r\nETag: \"a-5\"\r\nAccept-Ranges: bytes\r\n\r\nhello",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 302\r\nLocation: http://up/a\r\nRefresh: 3; url=http://up/b\r\n"
    b"Content-Length: 2\r\nConnection: Close\r\n\r\nok",
    b"HTTP/1.1 500 \r\nX-Empty:\r\nX-Tab:\t a\tb \t\r\nX-Obs: caf\xe9\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"1\"\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
]


@pytest.mark.parametrize("data", COMMON)
def test_common_responses_are_taken_in_c_and_read_alike(data, monkeypatch):
    fast, slow, taken = both(data, False, monkeypatch)
    assert taken
    assert fast == slow
    assert fast[0] == "ok"


def test_a_head_response_is_taken_in_c(monkeypatch):
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/html\r\n\r\n"
    fast, slow, taken = both(data, True, monkeypatch)
    assert taken and fast == slow
    assert fast[1][:3] == (200, 1000, True) and fast[4]  # done, the connection reusable


UNCOMMON = [
    # framing the C function leaves to httptools
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nlonger",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1 \r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0000000000000000001\r\n\r\nx",
    b"HTTP/1.1 204 No Content\r\n\r\nstray",
    # versions, statuses, status lines
    b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 600 Odd\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1  200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 O\x01K\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 20x OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\nx",
    b"ICE/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"SSH-2.0-OpenSSH_9.2\r\n",
    # fields
    b"HTTP/1.1 200 OK\r\nA : b\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nA: b\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nA: b\r\rContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nA: x\x7fy\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nA: x\x00y\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nX-\xe9: 1\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\n: empty-name\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 1\r\n\r\nx",
    # llhttp reads Proxy-Connection as Connection: the connection is not reused
    b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\nProxy-Connection: close\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",  # the head is not whole
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(101))
    + b"Content-Length: 1\r\n\r\nx",
]


@pytest.mark.parametrize("data", UNCOMMON)
def test_uncommon_responses_go_to_httptools(data, monkeypatch):
    fast, slow, taken = both(data, False, monkeypatch)
    assert not taken
    assert fast == slow


@pytest.mark.parametrize("byte", [b"\x00", b"\x01", b"\x1f", b"\n", b"\x7f"])
def test_a_control_byte_anywhere_in_a_long_value_is_left_to_httptools(byte, monkeypatch):
    # values are checked eight bytes at a time: a bad byte at every offset of a word
    for at in range(20):
        value = bytearray(b"v" * 20)
        value[at:at + 1] = byte
        data = b"HTTP/1.1 200 OK\r\nX-V: " + bytes(value) + b"\r\nContent-Length: 1\r\n\r\nx"
        fast, slow, taken = both(data, False, monkeypatch)
        assert not taken, at
        assert fast == slow


def test_tabs_and_obs_text_anywhere_in_a_long_value_are_taken(monkeypatch):
    for at in range(1, 19):
        for byte in (b"\t", b"\x80", b"\xff", b" ", b"~"):
            value = bytearray(b"v" * 20)
            value[at:at + 1] = byte
            data = b"HTTP/1.1 200 OK\r\nX-V: " + bytes(value) + b"\r\nContent-Length: 0\r\n\r\n"
            fast, slow, taken = both(data, False, monkeypatch)
            assert taken, (at, byte)
            assert fast == slow
            assert fast[2]["kept"] == [(b"X-V", bytes(value))]


# pieces the random responses are made of: common ones, and every kind of odd one now and then
_STATUS_LINES = [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 301", b"HTTP/1.1 204 ",
                 b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 503 Busy\t(x)", b"HTTP/1.1 200 \x80\xff"]
_ODD_STATUS_LINES = [b"HTTP/1.0 200 OK", b"HTTP/1.1 199 X", b"HTTP/1.1 100 Continue",
                     b"HTTP/1.1 2000 OK", b"HTTP/2 200", b"HTTP/1.1 200 a\x7fb", b"HTTP/1.1 200"
                     b" OK\r\n"]
_FIELDS = [b"Content-Type: text/plain", b"Server: up", b"Date: x", b"X-A: a", b"x-b:b",
           b"Location: /x", b"Refresh: 1; url=/y", b"Keep-Alive: timeout=5",
           b"Connection: keep-alive", b"Connection: close", b"X-Trail: v \t", b"X-Lead:\t\t v",
           b"X-Empty:", b"X-Obs: \xe9\xff", b"Set-Cookie: a=b; Path=/", b"Set-Cookie: c=d",
           b"ETag: \"1\"", b"X_Under: 1", b"Proxy-Authenticate: Basic"]
_ODD_FIELDS = [b"Connection: upgrade", b"Connection: X-A", b"Transfer-Encoding: chunked",
               b"Upgrade: h2c", b"X-Ctl: a\x01b", b"X-Sp : 1", b" folded", b"\tfolded",
               b"X-Del: \x7f", b"Content-Length: 3", b"Content-Length: 0", b"Content-Length: x",
               b"Content-Length:", b"Content-Length: 99999999999999999999", b"X-\xe9: 1", b": v"]
_BODIES = [b"abc", b"abc", b"abc", b"", b"abcd", b"0\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n",
           b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]


def _random_response(rnd: random.Random) -> bytes:
    odd = rnd.random() < 0.1
    lines = [rnd.choice(_ODD_STATUS_LINES if odd else _STATUS_LINES)]
    for _ in range(rnd.randint(0, 8)):
        lines.append(rnd.choice(_ODD_FIELDS if rnd.random() < 0.08 else _FIELDS))
    if rnd.random() < 0.8:
        lines.insert(rnd.randint(1, len(lines)), b"Content-Length: 3")
    eol = b"\r\n" if rnd.random() < 0.95 else rnd.choice([b"\n", b"\r", b"\r\r\n"])
    return eol.join(lines) + eol + eol + rnd.choice(_BODIES)


def test_random_responses_read_alike_both_ways(monkeypatch):
    rnd = random.Random(20261129)
    taken_count = 0
    for i in range(1000):
        data = _random_response(rnd)
        head_only = rnd.random() < 0.2
        fast, slow, taken = both(data, head_only, monkeypatch)
        assert fast == slow, (i, data, head_only)
        taken_count += taken
    assert taken_count > 100  # the common shapes came up and were taken in C


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError):
        accel.parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(TypeError):
        accel.parse_response_head("HTTP/1.1 200 OK\r\n\r\n", False)
    with pytest.raises(TypeError):
        accel.parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n", object(), False)
    got = accel.parse_response_head(b"HTTP/1.1 204 X\r\nA: b\r\n\r\n", False)
    assert got == (204, True, b"", None, b"\r\nA: b", b"", None, None, False, False)
    assert accel.parse_response_head(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nrest", False) is None
