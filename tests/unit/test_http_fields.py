"""The per-field parser callbacks (edgeworker/http/fields.py), and the common whole request
parsed in C (``parse_request`` in edgeworker/_speedups.c), which must give the same events as
llhttp with the Python rules for any input.
"""

from __future__ import annotations

import os
import random
import re
import time

import pytest

from edgeworker.http import fields
from edgeworker.http.protocol import Limits

IMPLS = [pytest.param((fields.RequestFields, fields.ResponseFields), id="python")]

REQ_ATTRS = ("list", "id_field", "host", "nhost", "conn", "te", "cl", "cl_error", "expect",
             "upgrade", "rid", "te_ows", "underscore", "size")
RESP_ATTRS = ("kept", "wire", "hop", "connection", "redirects", "length", "has_ct", "framed")


def state(obj, attrs):
    return {a: getattr(obj, a) for a in attrs}


def req_state(impl, pairs, id_field=b"x-request-id"):
    f = impl[0](id_field)
    for name, value in pairs:
        f.add(name, value)
    return state(f, REQ_ATTRS)


def resp_state(impl, pairs):
    f = impl[1]()
    for name, value in pairs:
        f.add(name, value)
    return state(f, RESP_ATTRS)


@pytest.mark.skipif(
    bool(os.environ.get("EDGEWORKER_NO_ACCEL")), reason="EDGEWORKER_NO_ACCEL: the Python path only"
)
def test_the_c_module_is_built_and_used():
    """make builds edgeworker/_speedups.c: a failed build must not pass unnoticed."""
    assert fields.accel is not None
    from edgeworker.http import protocol
    from edgeworker.proxy import client

    assert protocol._parse_request is fields.accel.parse_request
    assert client._parse_head is fields.accel.parse_response_head


@pytest.mark.parametrize("impl", IMPLS)
def test_request_fields_sorted(impl):
    s = req_state(impl, [
        (b"Host", b"example.com  "), (b"X_Thing", b"1"), (b"Connection", b"keep-alive"),
        (b"connection", b"Upgrade"), (b"Upgrade", b"websocket"), (b"Expect", b"100-Continue"),
        (b"X-Request-Id", b"abc"), (b"x-request-id", b"def"), (b"Content-Length", b"12\t"),
    ])
    assert s["list"] == [
        (b"host", b"example.com"), (b"x_thing", b"1"), (b"connection", b"keep-alive"),
        (b"connection", b"Upgrade"), (b"upgrade", b"websocket"), (b"expect", b"100-Continue"),
        (b"x-request-id", b"abc"), (b"x-request-id", b"def"), (b"content-length", b"12"),
    ]
    assert s["host"] == b"example.com" and s["nhost"] == 1
    assert s["conn"] == b"keep-alive,Upgrade" and s["upgrade"] == b"websocket"
    assert s["expect"] is True and s["rid"] == b"abc" and s["cl"] == 12
    assert s["cl_error"] is None and s["underscore"] is True and s["te_ows"] is False
    assert s["te"] is None
    assert s["size"] == sum(len(n) + len(v) + 4 for n, v in s["list"])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("values", "cl", "error"), [
    ([b"5"], 5, None),
    ([b"0005"], 5, None),
    ([b"5", b"5"], 5, "duplicate Content-Length"),
    ([b"abc"], None, "invalid Content-Length"),
    ([b""], None, "invalid Content-Length"),
    ([b"-1"], None, "invalid Content-Length"),
    ([b"1" * 18], int(b"1" * 18), None),
    ([b"1" * 19], None, "invalid Content-Length"),
    ([b"x", b"5"], 5, "invalid Content-Length"),  # the first problem is the one answered
    ([b"5", b"x"], 5, "duplicate Content-Length"),
    ([b"\xd9\xa3"], None, "invalid Content-Length"),  # a non-ASCII digit is not a digit
])
def test_content_length(impl, values, cl, error):
    s = req_state(impl, [(b"Content-Length", v) for v in values])
    assert (s["cl"], s["cl_error"]) == (cl, error)


@pytest.mark.parametrize("impl", IMPLS)
def test_transfer_encoding_and_ows(impl):
    s = req_state(impl, [(b"Transfer-Encoding", b"gzip "), (b"TRANSFER-ENCODING", b"chunked")])
    assert s["te"] == b"gzip,chunked" and s["te_ows"] is False
    s = req_state(impl, [(b"Transfer-Encoding", b"chunked \t ")])
    assert s["te"] == b"chunked" and s["te_ows"] is True
    s = req_state(impl, [(b"X-Other", b"a\t")])  # a tab elsewhere does not matter
    assert s["te_ows"] is False


@pytest.mark.parametrize("impl", IMPLS)
def test_request_id_field(impl):
    assert req_state(impl, [(b"X-Request-Id", b"a")], id_field=None)["rid"] is None
    assert req_state(impl, [(b"X-Trace", b"t")], id_field=b"x-trace")["rid"] == b"t"
    with pytest.raises(TypeError):
        impl[0]("x-trace")


@pytest.mark.parametrize("impl", IMPLS)
def test_routing_fields_are_the_ones_sorted_out(impl):
    """ROUTING_FIELDS (what config keeps request_id_header out of) names exactly the fields
    add() takes for itself: such a field is never the request id, any other can be."""
    for name in sorted(fields.ROUTING_FIELDS) + ["x-request-id", "x-trace"]:
        f = impl[0](name.encode())
        f.add(name.encode(), b"1")
        assert (f.rid is None) is (name in fields.ROUTING_FIELDS), name


@pytest.mark.parametrize("impl", IMPLS)
def test_reset_and_bad_arguments(impl):
    f = impl[0](b"x-request-id")
    f.add(b"Host", b"a")
    first = f.list
    f.reset()
    assert f.list == [] and f.list is not first and first == [(b"host", b"a")]
    assert state(f, REQ_ATTRS) == state(impl[0](b"x-request-id"), REQ_ATTRS)
    for bad in [("a", b"b"), (b"a", "b"), (b"a", None)]:
        with pytest.raises(TypeError):
            f.add(*bad)
    with pytest.raises(TypeError):
        f.add(b"a")
    assert f.list == []
    r = impl[1]()
    r.add(b"Location", b"/x")
    r.reset()
    assert state(r, RESP_ATTRS) == state(impl[1](), RESP_ATTRS)
    with pytest.raises(TypeError):
        r.add(b"a", 1)


@pytest.mark.parametrize("impl", IMPLS)
def test_response_fields_sorted(impl):
    s = resp_state(impl, [
        (b"Server", b"nginx"), (b"Date", b"today"), (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"120"), (b"Connection", b"keep-alive"), (b"ETag", b'"x"'),
        (b"Location", b"http://a/"), (b"Refresh", b"5; url=/b"), (b"Keep-Alive", b"timeout=5"),
        (b"connection", b"X-Secret"), (b"X-Secret", b"1"),
    ])
    assert s["kept"] == [(b"Content-Type", b"text/plain"), (b"ETag", b'"x"'),
                         (b"Location", b"http://a/"), (b"Refresh", b"5; url=/b"),
                         (b"X-Secret", b"1")]
    assert s["wire"] == b"".join(b"\r\n%b: %b" % f for f in s["kept"])
    assert [n for n, _ in s["hop"]] == [b"Server", b"Date", b"Content-Length", b"Connection",
                                        b"Keep-Alive", b"connection"]
    assert s["connection"] == b"keep-alive,X-Secret" and s["redirects"] == [2, 3]
    assert s["length"] == 120 and s["framed"] is True and s["has_ct"] is True


@pytest.mark.parametrize("impl", IMPLS)
def test_response_framing(impl):
    s = resp_state(impl, [(b"Content-Length", b"12"), (b"Transfer-Encoding", b"chunked")])
    assert s["length"] is None and s["framed"] is True
    s = resp_state(impl, [(b"content-length", b"1x")])
    assert s["length"] is None and s["framed"] is True
    s = resp_state(impl, [(b"X", b"1")])
    assert s["length"] is None and s["framed"] is False and s["redirects"] is None


# ----------------------------------------------------------------------------- parse_request
# The common request that is a whole read is parsed in C (parse_request) when the C module is
# built; anything unusual goes to llhttp and the Python code. The two must give the same
# events for any input.

def _events(stream: list[bytes], monkeypatch, whole=None, **kw) -> list:
    """The events of ``stream``, with ``whole`` as the protocol's ``_parse_request`` (None:
    llhttp and the Python code do it)."""
    from edgeworker.http import protocol

    monkeypatch.setattr(protocol, "_parse_request", whole)
    proto = protocol.ServerProtocol(**kw)
    out = []
    for piece in stream:
        for ev in proto.feed(piece):
            if isinstance(ev, protocol.RequestHead):
                out.append(("head",) + tuple(getattr(ev, a) for a in protocol.RequestHead.__slots__))
            elif isinstance(ev, protocol.ProtocolError):
                out.append(("error", ev.status, ev.reason))
            elif isinstance(ev, protocol.Data):
                out.append(("data", ev.data))
            else:
                out.append(("end",))
    return out


def _recording(fn, into: list):
    """``fn``, appending each of its results to ``into`` (to see which way was taken)."""

    def recorded(*args):
        out = fn(*args)
        into.append(out)
        return out

    return recorded


def _seeds() -> list[bytes]:
    from .test_fuzz_protocol import SEEDS

    return list(SEEDS)


HEAD_LINES = [b"Host: h", b"Host: example.com:8080", b"host: h", b"Host: bad host", b"Host:",
              b"Connection: close", b"Connection: Keep-Alive", b"Connection: upgrade",
              b"Connection: close, te", b"Content-Length: 0", b"Content-Length: 3",
              b"Content-Length: x", b"Transfer-Encoding: chunked", b"Expect: 100-continue",
              b"Upgrade: websocket", b"X-Request-Id: abc", b"X_Under: 1", b"Accept: */*",
              b"User-Agent: t  ", b"Cookie: a=b"]
CLEAN_LINES = [b"Connection: close", b"Connection: Keep-Alive", b"Content-Length: 0",
               b"Content-Length: 3", b"Expect: 100-continue", b"X-Request-Id: abc",
               b"Accept: */*", b"User-Agent: t  ", b"Cookie: a=b"]
REQUEST_LINES = [b"GET / HTTP/1.1", b"GET /a?b=c HTTP/1.1", b"GET /a#f HTTP/1.1",
                 b"HEAD /x HTTP/1.1", b"POST /p HTTP/1.1", b"OPTIONS * HTTP/1.1",
                 b"GET http://h/x HTTP/1.1", b"GET / HTTP/1.0", b"TRACE / HTTP/1.1",
                 b"GET / HTTP/1.2", b"PURGE /c HTTP/1.1", b"GET //x? HTTP/1.1"]


@pytest.mark.skipif(fields.accel is None, reason="the C module is not built")
def test_parse_request_gives_the_python_events(monkeypatch):
    rng = random.Random(112926)
    streams = _seeds()
    for _ in range(1500):
        heads = []
        clean = rng.random() < 0.5  # a common request: what the C path takes
        for _ in range(rng.choice([1, 1, 2, 3])):
            lines = [rng.choice(REQUEST_LINES[:2] if clean else REQUEST_LINES)]
            if clean:
                lines += [b"Host: h"] + [rng.choice(CLEAN_LINES) for _ in range(rng.randrange(4))]
            else:
                lines += [rng.choice(HEAD_LINES) for _ in range(rng.randrange(6))]
            body = b"abc" if b"Content-Length: 3" in lines else b""
            heads.append(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        streams.append(b"".join(heads))
    configs = [{}, {"id_field": b"x-request-id"}, {"underscores": False},
               {"limits": Limits(max_request_line=64, max_header_size=64, max_headers=3)}]
    whole_taken: list = []
    parse_request = _recording(fields.accel.parse_request, whole_taken)
    for data in streams:
        cut = rng.randrange(1, len(data) + 1)
        for stream in ([data], [data[:cut], data[cut:]]):
            kw = rng.choice(configs)
            slow = _events(stream, monkeypatch, **kw)
            fast = _events(stream, monkeypatch, parse_request, **kw)
            assert fast == slow, (stream, kw)
    # both ways were compared, many times
    used = sum(head is not None for head in whole_taken)
    assert 300 < used < len(whole_taken)


@pytest.mark.skipif(fields.accel is None, reason="the C module is not built")
def test_parse_request_takes_a_whole_common_request_and_leaves_the_rest(monkeypatch):
    from edgeworker.http import protocol

    results: list = []
    counting = _recording(protocol.accel.parse_request, results)
    monkeypatch.setattr(protocol, "_parse_request", counting)
    # llhttp reports GET and the Host first (the tables parse_request reads), then it is C's
    protocol.ServerProtocol().feed(b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n")
    proto = protocol.ServerProtocol(id_field=b"x-request-id")
    req = (b"GET /a?b HTTP/1.1\r\nHost: h.example\r\nX-Request-Id: r1\r\nUser-Agent:\t t \r\n"
           b"Content-Length: 0\r\n\r\n")
    results.clear()
    events = proto.feed(req)
    assert len(results) == 1 and results[0] is not None and events[1] is protocol.END
    head = events[0]
    assert (head.method, head.target, head.path, head.query, head.version) == (
        "GET", b"/a?b", b"/a", b"b", "1.1")
    assert head.headers == [(b"host", b"h.example"), (b"x-request-id", b"r1"),
                            (b"user-agent", b"t"), (b"content-length", b"0")]
    assert (head.keep_alive, head.content_length, head.host, head.request_id, head.size) == (
        True, 0, b"h.example", b"r1", len(req))
    # the protocol goes on as after llhttp's request: a chunked one (llhttp's), then C again
    results.clear()
    events = proto.feed(b"POST /p HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n"
                        b"\r\n3\r\nabc\r\n0\r\n\r\n")
    assert results == [None]
    assert [type(e).__name__ for e in events] == ["RequestHead", "Data", "EndOfMessage"]
    events = proto.feed(b"GET /z HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n")
    assert results[-1] is not None and not events[0].keep_alive
    assert proto.feed(b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n") == []  # closed after it
    # left to llhttp (and the Python code), with the same events as without the C function
    others = [
        b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 2\r\n\r\nxy",  # a body
        b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 2\r\n\r\n",  # body to come
        b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\nGET / HTTP/1.1\r\nHost: h.example\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: h.example\r\n\r\n",  # an empty line first
        b"GET / HTTP/1.1\r\nHost: h.example\r\n",  # not whole
        b"get / HTTP/1.1\r\nHost: h.example\r\n\r\n",
        b"BREW / HTTP/1.1\r\nHost: h.example\r\n\r\n",  # not a method llhttp reported
        b"GET /a\x01 HTTP/1.1\r\nHost: h.example\r\n\r\n",
        b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h.example\r\n\r\n",
        b"GET /a#f HTTP/1.1\r\nHost: h.example\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: h.example\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: h.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n",  # a Host not yet validated
        b"GET / HTTP/1.1\r\nHost: h.example\r\nA: \x7f\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h.example\r\nA: b\r\n c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h.example\r\nA: b\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h.example\r\nA : b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h.example\r\nHost: h.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h.example\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 00x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h.example\r\nConnection: keep-alive, te\r\n\r\n",
        b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: h.example\r\n\r\n",  # past max_url
        b"TRACE / HTTP/1.1\r\nHost: h.example\r\n\r\n",  # refused: the Python code's 405
        b"GET / HTTP/1.1\r\nHost: h.example\r\nProxy-Connection: close\r\n\r\n",
        b"PROPFIND / HTTP/1.1\r\nHost: h.example\r\n\r\n",  # not one of the usual methods
    ]
    limits = Limits(max_request_line=200, max_header_size=8192, max_headers=100)
    for other in others:
        results.clear()
        with_c = _events([other], monkeypatch, counting, limits=limits)
        assert results in ([None], []), other
        assert with_c == _events([other], monkeypatch, None, limits=limits), other
    # the limits apply as in the Python code: too many fields, underscores dropped
    for kw, data in [({"limits": Limits(max_headers=1)},
                      b"GET / HTTP/1.1\r\nHost: h.example\r\nA: b\r\n\r\n"),
                     ({"underscores": False},
                      b"GET / HTTP/1.1\r\nHost: h.example\r\nX_A: b\r\n\r\n")]:
        results.clear()
        assert _events([data], monkeypatch, counting, **kw) == _events(
            [data], monkeypatch, None, **kw)
        assert results == [None]
    # llhttp reads Proxy-Connection as Connection: after "close" it refuses what follows
    stream = [b"GET / HTTP/1.1\r\nHost: h.example\r\nProxy-Connection: close\r\n\r\n",
              b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n"]
    both_ways = _events(stream, monkeypatch, counting)
    assert both_ways == _events(stream, monkeypatch)
    # ... so the connection closes after the response (not a 400 for the next request)
    assert [e[0] for e in both_ways] == ["head", "end"] and both_ways[0][7] is False
    # a method llhttp takes only in an RTSP request line, reported (and cached) from one: an
    # HTTP/1.1 request with it is still llhttp's (400), not C's
    rtsp = b"DESCRIBE / RTSP/1.0\r\nHost: h.example\r\n\r\n"
    http = b"DESCRIBE / HTTP/1.1\r\nHost: h.example\r\n\r\n"
    protocol.ServerProtocol().feed(rtsp)
    results.clear()
    assert _events([http], monkeypatch, counting) == _events([http], monkeypatch)
    assert results == [None]
    assert _events([http], monkeypatch)[-1][:2] == ("error", 400)
    with pytest.raises(TypeError):
        protocol.accel.parse_request(b"", protocol.RequestFields(), False, 1, 1)
    with pytest.raises(TypeError):
        protocol.accel.parse_request("GET", protocol.RequestFields(), False, 1, 1, 1)


# ------------------------------------------------------------------------ fast_response_head

@pytest.mark.skipif(fields.accel is None, reason="the C module is not built")
def test_fast_response_head_gives_the_python_head(monkeypatch):
    from types import SimpleNamespace

    from edgeworker import server
    from edgeworker.http.headers import Headers
    from edgeworker.http.protocol import ServerProtocol
    from edgeworker.request import Request

    head = ServerProtocol().feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")[0]
    conn = SimpleNamespace()
    app = SimpleNamespace(rid_field=None, rid_prefix=None)
    plain = SimpleNamespace(add_header=(), content_type_line=b"\r\nContent-Type: text/plain")
    added = SimpleNamespace(add_header=((b"X-A", "1"),),
                            content_type_line=b"\r\nContent-Type: text/html")
    taken: list = []
    fast = _recording(fields.accel.fast_response_head, taken)

    # response fields: none, a proxied response's prepared block (with and without its own
    # Content-Type), the same once decoded (no block), and fields set by a handler
    proxied = [(b"ETag", b'"x"'), (b"Content-Type", b"text/css")]

    def prepared(has_ct):
        kept = proxied if has_ct else proxied[:1]
        return lambda: Headers.from_wire(b"".join(b"\r\n%b: %b" % f for f in kept), has_ct)

    def decoded():
        rh = prepared(True)()
        rh.get("etag")  # decoding forgets the prepared block
        return rh

    resp_fields = (lambda: None, prepared(True), prepared(False), decoded,
                   lambda: Headers({"X-Own": "1"}))
    cases = []
    for status in (200, 201, 204, 304, 404, 500, 599, 103):
        for loc in (plain, added, None):
            for keep in (True, False):
                for lines in (b"", b"\r\nX-Request-Id: abc"):
                    for ctype in (None, "application/json"):
                        for length in (0, 7, 123456, None):
                            for rh in resp_fields:
                                cases.append((status, loc, keep, lines, ctype, length, rh))
    # odd values the C declines: a status that is no int, an odd keep-alive value, a negative
    # length, header lines that are no bytes (what the Python code does with them)
    for status, keep, length in ((200.0, True, 5), (200, 1, 5), (200, True, -1)):
        cases.append((status, plain, keep, b"", None, length, lambda: None))
    cases.append((200, plain, True, bytearray(b"\r\nX-A: 1"), None, 5, lambda: None))
    # both callers: _head_bytes, and send_response (which calls the C itself) with a body
    written: list = []
    this = SimpleNamespace(_sendall=written.append)
    this._send = lambda data: written.append(data) or len(data)  # (all taken at once)
    this._head_bytes = lambda req, length: server.Connection._head_bytes(this, req, length)

    def new_request(status, loc, keep, lines, ctype, rh):
        req = Request(conn, head, app)
        req.status, req.location, req.keep_alive = status, loc, keep
        req.header_lines, req.content_type, req.resp_fields = lines, ctype, rh()
        return req

    for closing in (False, True, None):
        this.closing = bool(closing)
        for status, loc, keep, lines, ctype, length, rh in cases:
            if closing is None:
                server._date_line[0] = -1  # no Server/Date line of this second yet
            else:
                server._server_date()  # this second's Server/Date line, as a response would
            heads = []
            for f in (None, fast):
                monkeypatch.setattr(server, "_fast_response_head", f)
                req = new_request(status, loc, keep, lines, ctype, rh)
                out = server.Connection._head_bytes(this, req, length)
                sent = None
                if length is not None and length >= 0:
                    written.clear()
                    req = new_request(status, loc, keep, lines, ctype, rh)
                    server.Connection.send_response(this, req, b"b" * length)
                    sent = (b"".join(written), req.keep_alive, req.body_bytes_sent)
                # (the second may tick between the two: the Date value is not compared)
                heads.append((re.sub(rb"Date: [^\r]*", b"Date: -", out), req.keep_alive))
                if sent is not None:
                    heads.append((re.sub(rb"Date: [^\r]*", b"Date: -", sent[0]), *sent[1:]))
            half = len(heads) // 2
            assert heads[:half] == heads[half:], (status, loc, keep, lines, ctype, length, rh)
    used = sum(out is not None for out in taken)
    assert 100 <= used < len(taken)  # both ways compared, many times
    with pytest.raises(TypeError):
        fields.accel.fast_response_head(1)

    # values that are not what they should be: None (the Python code's case), never a crash
    def call(i=None, bad=None):
        for _ in range(3):  # (again if the second ticked in between)
            args = [
                200,
                5,
                i != 9,
                b"",
                (b"", False),
                b"\r\nContent-Type: text/plain",
                server._STATUS_LINES,
                [int(time.time()), b"D"],
                b"K",
                b"C",
            ]
            if i is not None:
                args[i] = bad() if callable(bad) else bad
            out = fields.accel.fast_response_head(*args)
            if out is not None or args[7][0] == int(time.time()):
                return out

    assert call() == b"HTTP/1.1 200 OK\r\nD\r\nContent-Type: text/plain\r\nContent-Length: 5K"
    assert call(4, (b"\r\nA: b", True)) == b"HTTP/1.1 200 OK\r\nD\r\nA: b\r\nContent-Length: 5K"
    assert call(9, b"C").endswith(b"Content-Length: 5C")
    for i, bad in [
        (1, 2**64),
        (4, (b"",)),
        (4, (b"", 1)),
        (4, [b"", False]),
        (4, ("", False)),
        (5, "text"),
        (6, {}),
        (6, {200: "line"}),
        (7, (0, b"D")),
        (7, [b"D"]),
        (7, lambda: [float(int(time.time())), b"D"]),
        (7, lambda: [int(time.time()), "D"]),
        (8, "K"),
        (9, None),
    ]:
        assert call(i, bad) is None, (i, bad)


@pytest.mark.skipif(fields.accel is None, reason="the C module is not built")
def test_parse_request_never_writes_into_shared_bytes():
    """Names of one character: CPython shares one bytes object per character (what a slice of
    length 1 returns), so lower-casing a name in place would change ``b"X"`` in the whole
    worker (a client sending ``X: 1`` then corrupted every later one-byte ``"X"``)."""
    from edgeworker.http import protocol  # (configures the C module's method table)

    # (two requests in one read: llhttp parses them, and the method becomes known to C)
    protocol.ServerProtocol().feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 2)
    parse = protocol._parse_request
    for name in (b"X", b"A", b"Z", b"Q"):
        out = parse(b"GET / HTTP/1.1\r\nHost: h\r\n" + name + b": 1\r\n\r\n",
                    True, 100, 8192, 8192, None)
        assert out is not None
        assert (name.lower(), b"1") in out[5]  # the names it gives are lower case
        # (compared as numbers: a one-byte literal here is that shared object too)
        assert [b"_XAZQ"[i : i + 1][0] for i in range(1, 5)] == [88, 65, 90, 81]
