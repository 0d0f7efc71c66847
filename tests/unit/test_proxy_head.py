"""The upstream request head the proxy builds (``upstream_head`` in edgeworker/proxy/handler.py).

The proxy tests check what a backend receives end to end; here the builder gets inputs, common
and odd, and must give the exact bytes.
"""

from __future__ import annotations

import random

from edgeworker.http.framing import split_tokens
from edgeworker.proxy.handler import _REQ_DROP, upstream_head

LINES = (
    b"10.0.0.1",
    b"X-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n",
    b"X-Real-IP: 10.0.0.1\r\n",
)


def test_the_usual_request():
    raw = [
        (b"Host", b"edge.example"),
        (b"User-Agent", b"curl/8"),
        (b"Accept", b"*/*"),
        (b"Connection", b"keep-alive"),
        (b"x-request-id", b"abc"),
    ]
    head = upstream_head(
        "GET", b"/a?b=1", b"Host: backend\r\n", raw, _REQ_DROP, True, LINES, b"\r\n"
    )
    assert head == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: backend\r\nUser-Agent: curl/8\r\nAccept: */*\r\n"
        b"x-request-id: abc\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n\r\n"
    )


def test_connection_tokens_and_forwarded_for():
    raw = [
        (b"Host", b"h"),
        (b"X-Forwarded-For", b"1.1.1.1"),
        (b"X-Hop", b"1"),
        (b"Connection", b"Keep-Alive, x-hop"),
        (b"x-forwarded-for", b"2.2.2.2, 3.3.3.3"),
        (b"Close", b"?"),
        (b"connection", b" close ,\tX-Other "),
        (b"X-Other", b"2"),
        (b"X-Kept", b"3"),
    ]
    head = upstream_head(
        "POST", b"/p", b"", raw, _REQ_DROP, True, LINES, b"Content-Length: 3\r\n\r\n"
    )
    assert head == (
        b"POST /p HTTP/1.1\r\nX-Kept: 3\r\n"
        b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n"
        b"Content-Length: 3\r\n\r\n"
    )
    # X-Forwarded-For set by proxy_set_header: the client's is dropped, not kept in front
    head = upstream_head(
        "GET", b"/", b"X-Forwarded-For: $x\r\n", raw[:2], _REQ_DROP, False, LINES, b"\r\n"
    )
    assert (
        head == b"GET / HTTP/1.1\r\nX-Forwarded-For: $x\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X-Real-IP: 10.0.0.1\r\n\r\n"
    )


def test_a_name_with_a_colon_is_compared_up_to_it():
    # (a handler-set name) "a:b" is named by the token "a", ":c" by the empty token
    raw = [(b"a:b", b"1"), (b":c", b"2"), (b"Connection", b"a, ,x")]
    head = upstream_head("GET", b"/", b"", raw, _REQ_DROP, True, LINES, b"\r\n")
    assert head == b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n\r\n"
    raw[2] = (b"Connection", b"x")
    head = upstream_head("GET", b"/", b"", raw, _REQ_DROP, True, LINES, b"\r\n")
    assert head == (
        b"GET / HTTP/1.1\r\na:b: 1\r\n:c: 2\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X-Real-IP: 10.0.0.1\r\n\r\n"
    )


def test_many_fields_and_connection_tokens():
    many = [(b"X-%d" % i, b"v") for i in range(200)]
    head = upstream_head("GET", b"/", b"", many, _REQ_DROP, False, LINES, b"\r\n")
    assert head == (
        b"GET / HTTP/1.1\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(200))
        + LINES[1]
        + b"\r\n"
    )
    tokens = [(b"Connection", b",".join(b"t%d" % i for i in range(100)))]
    kept = [(b"T%d" % i, b"v") for i in range(0, 120, 7)]  # t0 .. t98 named, t105 .. not
    head = upstream_head("GET", b"/", b"", tokens + kept, _REQ_DROP, False, LINES, b"\r\n")
    assert head == b"GET / HTTP/1.1\r\nT105: v\r\nT112: v\r\nT119: v\r\n" + LINES[1] + b"\r\n"


def test_lower_case_names_as_parsed():
    # the request's fields as parsed: names lower-case, not lowered again (lowered=True)
    raw = [
        (b"host", b"edge.example"),
        (b"user-agent", b"curl/8"),
        (b"connection", b"keep-alive"),
        (b"x-request-id", b"abc"),
    ]
    want = (
        b"GET /a HTTP/1.1\r\nHost: backend\r\nuser-agent: curl/8\r\nx-request-id: abc\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n\r\n"
    )
    for lowered in (True, False):
        head = upstream_head(
            "GET", b"/a", b"Host: backend\r\n", raw, _REQ_DROP, True, LINES, b"\r\n", lowered
        )
        assert head == want
    # lowered=True trusts the names: a capital letter is not lowered, the field is not dropped
    head = upstream_head(
        "GET", b"/", b"", [(b"Host", b"h")], _REQ_DROP, False, LINES, b"\r\n", True
    )
    assert head == b"GET / HTTP/1.1\r\nHost: h\r\n" + LINES[1] + b"\r\n"


def test_connection_values_that_name_nothing_more():
    # keep-alive (skipped without splitting), tokens that are all dropped anyway (split, no
    # second pass), and a token that names a kept field (second pass)
    fields = [(b"close", b"1"), (b"te", b"trailers"), (b"x-a", b"2")]
    expect = {
        b"keep-alive": b"close: 1\r\nx-a: 2\r\n",
        b"Keep-Alive": b"close: 1\r\nx-a: 2\r\n",
        b"KEEP-ALIVE": b"close: 1\r\nx-a: 2\r\n",
        b"te, upgrade": b"close: 1\r\nx-a: 2\r\n",
        b"close": b"x-a: 2\r\n",
        b"keep-alive, X-A": b"close: 1\r\n",
    }
    for value, kept in expect.items():
        for lowered in (True, False):
            raw = [(b"connection", value), *fields]
            head = upstream_head("GET", b"/", b"", raw, _REQ_DROP, True, LINES, b"\r\n", lowered)
            assert head == b"GET / HTTP/1.1\r\n" + kept + LINES[1] + b"\r\n", value


def _reference(method, target, fixed, raw, drop, add_xff, lines, tail):
    """The rules of upstream_head written the plain way (every field lowered, then dropped)."""
    tokens = set()
    for name, value in raw:
        if name.lower() == b"connection":
            tokens.update(split_tokens(value))
    kept = [
        name + b": " + value + b"\r\n"
        for name, value in raw
        if name.lower() not in drop and name.split(b":", 1)[0].lower() not in tokens
    ]
    xff = [v for n, v in raw if n.lower() == b"x-forwarded-for"] if add_xff else []
    forwarded = (
        b"X-Forwarded-For: " + b", ".join([*xff, lines[0]]) + b"\r\n" + lines[2]
        if xff
        else lines[1]
    )
    return b"".join(
        [method.encode(), b" ", target, b" HTTP/1.1\r\n", fixed, *kept, forwarded, tail]
    )


def test_random_heads_match_the_plain_rules():
    rng = random.Random(7)
    names = [
        b"host",
        b"Host",
        b"connection",
        b"Connection",
        b"x-forwarded-for",
        b"X-Forwarded-For",
        b"te",
        b"close",
        b"keep-alive",
        b"x-a",
        b"X-B",
        b"x-b:c",
        b"upgrade",
        b"accept",
        b"x-real-ip",
    ]
    values = [
        b"keep-alive",
        b"Keep-Alive",
        b"close",
        b"x-a",
        b"X-B, x-a",
        b"te, upgrade",
        b"",
        b"1.2.3.4",
        b" x-b ,close",
        b"v",
    ]
    for _ in range(3000):
        raw = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randrange(8))]
        add_xff = rng.random() < 0.5
        want = _reference("PUT", b"/t", b"Host: b\r\n", raw, _REQ_DROP, add_xff, LINES, b"\r\n")
        got = upstream_head("PUT", b"/t", b"Host: b\r\n", raw, _REQ_DROP, add_xff, LINES, b"\r\n")
        assert got == want, raw
        lower = [(n.lower(), v) for n, v in raw]
        want = _reference("PUT", b"/t", b"", lower, _REQ_DROP, add_xff, LINES, b"\r\n")
        assert (
            upstream_head("PUT", b"/t", b"", lower, _REQ_DROP, add_xff, LINES, b"\r\n", True)
            == want
        ), raw
