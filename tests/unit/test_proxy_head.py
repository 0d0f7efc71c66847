"""The upstream request head the proxy builds (``upstream_head`` in edgeworker/proxy/handler.py)
and its C twin (``upstream_head`` in edgeworker/_speedups.c), which must give the same bytes.

The proxy tests check what a backend receives end to end; here the two builders get the same
inputs, common and odd, and must agree (the C one may hand a case back with None).
"""

from __future__ import annotations

import random

import pytest

from edgeworker.http.fields import accel
from edgeworker.proxy import handler
from edgeworker.proxy.handler import _REQ_DROP, upstream_head

pytestmark = pytest.mark.skipif(accel is None, reason="the C module is not built")

LINES = (b"10.0.0.1", b"X-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n",
         b"X-Real-IP: 10.0.0.1\r\n")


def both(*args):
    c = accel.upstream_head(*args)
    py = upstream_head(*args)
    return c, py


def test_the_usual_request():
    raw = [(b"Host", b"edge.example"), (b"User-Agent", b"curl/8"), (b"Accept", b"*/*"),
           (b"Connection", b"keep-alive"), (b"x-request-id", b"abc")]
    c, py = both("GET", b"/a?b=1", b"Host: backend\r\n", raw, _REQ_DROP, True, LINES, b"\r\n")
    assert c == py == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: backend\r\nUser-Agent: curl/8\r\nAccept: */*\r\n"
        b"x-request-id: abc\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n\r\n")


def test_connection_tokens_and_forwarded_for():
    raw = [(b"Host", b"h"), (b"X-Forwarded-For", b"1.1.1.1"), (b"X-Hop", b"1"),
           (b"Connection", b"Keep-Alive, x-hop"), (b"x-forwarded-for", b"2.2.2.2, 3.3.3.3"),
           (b"Close", b"?"), (b"connection", b" close ,\tX-Other "), (b"X-Other", b"2"),
           (b"X-Kept", b"3")]
    c, py = both("POST", b"/p", b"", raw, _REQ_DROP, True, LINES,
                 b"Content-Length: 3\r\n\r\n")
    assert c == py == (
        b"POST /p HTTP/1.1\r\nX-Kept: 3\r\n"
        b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n"
        b"Content-Length: 3\r\n\r\n")
    # X-Forwarded-For set by proxy_set_header: the client's is dropped, not kept in front
    c, py = both("GET", b"/", b"X-Forwarded-For: $x\r\n", raw[:2], _REQ_DROP, False, LINES,
                 b"\r\n")
    assert c == py == b"GET / HTTP/1.1\r\nX-Forwarded-For: $x\r\nX-Forwarded-For: 10.0.0.1\r\n" \
        b"X-Real-IP: 10.0.0.1\r\n\r\n"


def test_odd_inputs_are_handed_back_or_agree():
    # not pairs of bytes: the Python function decides (and raises where it must)
    for raw in ([("Host", "h")], [(b"Host",)], [(b"a", b"b", b"c")], [[b"a", b"b"]]):
        assert accel.upstream_head("GET", b"/", b"", raw, _REQ_DROP, True, LINES, b"\r\n") is None
    assert accel.upstream_head("GÉT", b"/", b"", [], _REQ_DROP, True, LINES, b"\r\n") is None
    many = [(b"X-%d" % i, b"v") for i in range(200)]
    assert accel.upstream_head("GET", b"/", b"", many, _REQ_DROP, True, LINES, b"\r\n") is None
    tokens = [(b"Connection", b",".join(b"t%d" % i for i in range(100)))]
    assert accel.upstream_head("GET", b"/", b"", tokens, _REQ_DROP, True, LINES, b"\r\n") is None
    with pytest.raises(TypeError):
        accel.upstream_head("GET", b"/")
    # a handler-set name with a colon: compared up to it, as the Python function does
    raw = [(b"a:b", b"1"), (b":c", b"2"), (b"Connection", b"a, ,x")]
    c, py = both("GET", b"/", b"", raw, _REQ_DROP, True, LINES, b"\r\n")
    assert c == py


_NAMES = [b"Host", b"User-Agent", b"Accept", b"Cookie", b"X-Hop", b"x-hop", b"X-Other", b"Close",
          b"Keep-Alive", b"keep-alive", b"Upgrade", b"TE", b"Connection", b"connection",
          b"X-Forwarded-For", b"x-forwarded-for", b"X-Real-IP", b"Content-Length",
          b"Transfer-Encoding", b"Expect", b"Proxy-Authorization", b"X-Set", b"x_under", b"A"]
_VALUES = [b"", b"1", b"keep-alive", b"close", b"Keep-Alive, X-Hop", b"x-other ,\t x-set",
           b", ,", b"upgrade", b"1.2.3.4", b"TE, close", b"caf\xe9", b"a" * 100]


def test_random_heads_agree():
    rnd = random.Random(29112026)
    drops = [_REQ_DROP, _REQ_DROP | {b"x-set"}, frozenset()]
    lines = [LINES, (b"::1", b"X-Forwarded-For: ::1\r\n", b""), (b"a", b"", b"")]
    handed_back = 0
    for _ in range(3000):
        raw = [(rnd.choice(_NAMES), rnd.choice(_VALUES)) for _ in range(rnd.randrange(12))]
        args = (rnd.choice(["GET", "POST", "PURGE"]), rnd.choice([b"/", b"/a?b", b"*"]),
                rnd.choice([b"", b"Host: up\r\n", b"Host: up\r\nX-Set: 1\r\n"]), raw,
                rnd.choice(drops), rnd.random() < 0.7, rnd.choice(lines),
                rnd.choice([b"\r\n", b"Content-Length: 5\r\n\r\n"]))
        c, py = both(*args)
        if c is None:
            handed_back += 1
        else:
            assert c == py, args
    assert handed_back == 0  # every one of these is the C function's


def test_the_handler_uses_the_c_function_when_built():
    assert handler._upstream_head is accel.upstream_head
