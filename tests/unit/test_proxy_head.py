"""The upstream request head the proxy builds (``upstream_head`` in edgeworker/proxy/handler.py).

The proxy tests check what a backend receives end to end; here the builder gets inputs, common
and odd, and must give the exact bytes.
"""

from __future__ import annotations

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
