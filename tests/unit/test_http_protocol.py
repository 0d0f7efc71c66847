"""The sans-IO HTTP/1.1 server protocol: framing, rejection rules, limits, pipelining.

Every test feeds raw bytes to ``ServerProtocol`` and looks at the events. The rejection vectors
follow the HTTP Garden / Http11Probe catalogues (edge-features.md §7): request line, header
syntax, Host rules, Content-Length / Transfer-Encoding framing, chunk syntax, sizes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeworker.http.protocol import (
    END,
    Data,
    EndOfMessage,
    Limits,
    ProtocolError,
    RequestHead,
    ServerProtocol,
)

from ..data import vectors

HOST = b"Host: example.com\r\n"


def feed_all(data: bytes, limits: Limits | None = None) -> list:
    return ServerProtocol(limits).feed(data)


def feed_pieces(pieces: list[bytes], limits: Limits | None = None) -> list:
    proto = ServerProtocol(limits)
    events: list = []
    for piece in pieces:
        events.extend(proto.feed(piece))
    return events


def feed_bytewise(data: bytes, limits: Limits | None = None) -> list:
    return feed_pieces([data[i : i + 1] for i in range(len(data))], limits)


def merged(events: list) -> list:
    """Events with adjacent Data pieces joined (splitting may cut a body anywhere)."""
    out: list = []
    for ev in events:
        if isinstance(ev, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def body_of(events: list) -> bytes:
    return b"".join(ev.data for ev in events if isinstance(ev, Data))


def rejection(data: bytes, limits: Limits | None = None) -> ProtocolError:
    """The ProtocolError a stream ends in, checked both in one read and byte by byte."""
    whole = feed_all(data, limits)
    assert whole and isinstance(whole[-1], ProtocolError), whole
    bytewise = feed_bytewise(data, limits)
    assert bytewise and isinstance(bytewise[-1], ProtocolError), bytewise
    assert bytewise[-1].status == whole[-1].status
    return whole[-1]


def reads_until_events(proto: ServerProtocol, piece: bytes, limit: int) -> tuple[int, list]:
    """Feed ``piece`` repeatedly until events come out: (number of reads, those events)."""
    for count in range(1, limit + 1):
        events = proto.feed(piece)
        if events:
            return count, events
    return limit, []


def single_head(data: bytes) -> RequestHead:
    events = feed_all(data)
    assert isinstance(events[0], RequestHead), events
    assert events[-1] is END, events
    assert merged(feed_bytewise(data)) == merged(events)
    return events[0]


# --------------------------------------------------------------------------- valid requests


def test_simple_get_fields() -> None:
    head = single_head(b"GET /a%20b?x=1&y HTTP/1.1\r\nHost: example.com:8080\r\nX-A:  v \t\r\n\r\n")
    assert head.method == "GET"
    assert head.target == b"/a%20b?x=1&y"
    assert head.path == b"/a%20b"
    assert head.query == b"x=1&y"
    assert head.version == "1.1"
    assert head.headers == [(b"host", b"example.com:8080"), (b"x-a", b"v")]
    assert head.keep_alive is True
    assert head.content_length is None
    assert head.chunked is False
    assert head.expect_continue is False
    assert head.upgrade is None
    assert head.host == b"example.com:8080"


def test_get_events_are_head_then_end() -> None:
    events = feed_all(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert len(events) == 2
    assert isinstance(events[0], RequestHead)
    assert events[1] is END and isinstance(events[1], EndOfMessage)


def test_header_names_lowercased_and_order_kept() -> None:
    head = single_head(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-B: 1\r\nx-a: 2\r\nX-B: 3\r\nCookie: a=b; c=d\r\n\r\n"
    )
    assert head.headers == [
        (b"host", b"h"),
        (b"x-b", b"1"),
        (b"x-a", b"2"),
        (b"x-b", b"3"),
        (b"cookie", b"a=b; c=d"),
    ]


def test_obs_text_in_value_is_kept() -> None:
    head = single_head(b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xe9\x80\r\n\r\n")
    assert head.headers[1] == (b"x", b"caf\xe9\x80")


def test_empty_header_value() -> None:
    head = single_head(b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Spaces:   \r\n\r\n")
    assert head.headers[1:] == [(b"x-empty", b""), (b"x-spaces", b"")]


def test_leading_empty_lines_are_ignored() -> None:
    head = single_head(b"\r\n\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert head.path == b"/"


def test_head_method() -> None:
    head = single_head(b"HEAD /x HTTP/1.1\r\n" + HOST + b"\r\n")
    assert head.method == "HEAD" and head.content_length is None


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"])
def test_known_methods(method: str) -> None:
    assert single_head(method.encode() + b" / HTTP/1.1\r\n" + HOST + b"\r\n").method == method


def test_http10_defaults_to_close_and_needs_no_host() -> None:
    head = single_head(b"GET / HTTP/1.0\r\n\r\n")
    assert head.version == "1.0" and head.keep_alive is False and head.host is None


def test_http10_keep_alive() -> None:
    data = b"GET /1 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"
    events = feed_all(data)
    assert [e.path for e in events if isinstance(e, RequestHead)] == [b"/1", b"/2"]
    assert events[0].keep_alive is True and events[2].keep_alive is False


def test_connection_close_ends_the_stream() -> None:
    proto = ServerProtocol()
    events = proto.feed(
        b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert len(events) == 2 and events[0].keep_alive is False and events[1] is END
    assert proto.feed(b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n") == []
    assert proto.feed(b"") == []


def test_close_wins_over_keep_alive_and_stops_parsing() -> None:
    proto = ServerProtocol()
    events = proto.feed(
        b"GET /1 HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"
    )
    assert len(events) == 2 and events[0].keep_alive is False and events[1] is END
    assert proto.feed(b"GET /3 HTTP/1.0\r\n\r\n") == []


def test_connection_tokens_list() -> None:
    head = single_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n")
    assert head.keep_alive is False
    head = single_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: TE\r\nConnection: x\r\n\r\n")
    assert head.keep_alive is True


def test_http_1x_minor_is_served_as_1_1() -> None:
    head = single_head(b"GET / HTTP/1.2\r\n" + HOST + b"\r\n")
    assert head.version == "1.1" and head.keep_alive is True


def test_content_length_body() -> None:
    events = feed_all(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert events[0].content_length == 5 and not events[0].chunked
    assert events[1:] == [Data(b"hello"), END]


def test_content_length_with_trailing_ows() -> None:
    events = feed_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3 \r\n\r\nabc")
    assert events[0].content_length == 3 and body_of(events) == b"abc"


def test_content_length_leading_zeros_are_digits() -> None:
    events = feed_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 005\r\n\r\nhello")
    assert events[0].content_length == 5 and body_of(events) == b"hello"


def test_chunk_size_hex_either_case() -> None:
    data = CH + b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"
    assert body_of(feed_all(data)) == b"0123456789" * 2


def test_content_length_zero() -> None:
    events = feed_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert events[0].content_length == 0 and events[1] is END


def test_body_is_emitted_as_it_arrives() -> None:
    proto = ServerProtocol()
    first = proto.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    assert isinstance(first[0], RequestHead) and first[1:] == [Data(b"abc")]
    assert not proto.idle and not proto.in_head
    assert proto.feed(b"defg") == [Data(b"defg")]
    assert proto.feed(b"hij") == [Data(b"hij"), END]
    assert proto.idle


def test_chunked_body_with_extensions_and_trailers() -> None:
    data = (
        b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b'6;q="quoted ext"\r\n world\r\n'
        b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    events = feed_all(data)
    head = events[0]
    assert head.chunked is True and head.content_length is None
    assert body_of(events) == b"hello world" and events[-1] is END
    assert head.headers == [(b"host", b"h"), (b"transfer-encoding", b"chunked")]  # no trailers
    assert merged(feed_bytewise(data)) == merged(events)


def test_chunked_case_insensitive_and_ows() -> None:
    events = feed_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  Chunked \r\n\r\n0\r\n\r\n"
    )
    assert events[0].chunked and events[-1] is END


def test_chunk_size_with_leading_zeros() -> None:
    events = feed_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n005\r\nhello\r\n0\r\n\r\n"
    )
    assert body_of(events) == b"hello"


def test_chunked_pipelined_after_body() -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    events = feed_all(data)
    assert [type(e).__name__ for e in events] == [
        "RequestHead",
        "Data",
        "EndOfMessage",
        "RequestHead",
        "EndOfMessage",
    ]
    assert events[3].path == b"/next"


def test_pipelined_requests_in_one_feed_and_bytewise_match() -> None:
    data = (
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
        b"HEAD /3 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"DELETE /4?x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    events = feed_all(data)
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [(h.method, h.path) for h in heads] == [
        ("GET", b"/1"),
        ("POST", b"/2"),
        ("HEAD", b"/3"),
        ("DELETE", b"/4"),
    ]
    assert events.count(END) == 4
    assert merged(feed_bytewise(data)) == merged(events)


def test_expect_100_continue() -> None:
    head = single_head(
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n"
    )
    assert head.expect_continue is True


def test_expect_ignored_in_http10_and_other_values() -> None:
    assert not single_head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue
    assert not single_head(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: foo\r\n\r\n").expect_continue


def test_expect_continue_head_arrives_before_body() -> None:
    proto = ServerProtocol()
    events = proto.feed(
        b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    )
    assert len(events) == 1 and events[0].expect_continue
    assert proto.feed(b"abc") == [Data(b"abc"), END]


def test_absolute_form_target_takes_host_from_target() -> None:
    head = single_head(b"GET http://Example.org:81/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    assert head.host == b"Example.org:81"
    assert head.path == b"/p/q" and head.query == b"x=1"
    assert head.target == b"http://Example.org:81/p/q?x=1"


def test_absolute_form_without_path() -> None:
    head = single_head(b"GET HTTPS://example.org?a HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert head.host == b"example.org" and head.path == b"/" and head.query == b"a"


def test_options_asterisk() -> None:
    head = single_head(b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n")
    assert head.path == b"*" and head.query == b""


def test_ipv6_host() -> None:
    assert single_head(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").host == b"[::1]:8080"


def test_host_with_empty_port() -> None:
    assert single_head(b"GET / HTTP/1.1\r\nHost: example.com:\r\n\r\n").host == b"example.com:"


# --------------------------------------------------------------------------- state and EOF


def test_idle_and_in_head() -> None:
    proto = ServerProtocol()
    assert proto.idle and not proto.in_head
    assert proto.feed(b"GET / HT") == []
    assert proto.in_head and not proto.idle
    events = proto.feed(b"TP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n")
    assert len(events) == 1
    assert not proto.in_head and not proto.idle
    assert proto.feed(b"ok") == [Data(b"ok"), END]
    assert proto.idle and not proto.in_head


def test_empty_lines_between_requests_keep_idle() -> None:
    proto = ServerProtocol()
    proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert proto.feed(b"\r\n") == [] and proto.idle


def test_eof_between_requests() -> None:
    proto = ServerProtocol()
    assert len(proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")) == 2
    assert proto.feed(b"") == []


def test_eof_on_fresh_connection() -> None:
    assert ServerProtocol().feed(b"") == []


def test_eof_in_head_is_400() -> None:
    proto = ServerProtocol()
    proto.feed(b"GET / HTTP/1.1\r\nHo")
    [err] = proto.feed(b"")
    assert isinstance(err, ProtocolError) and err.status == 400


def test_eof_in_body_is_400() -> None:
    proto = ServerProtocol()
    proto.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
    [err] = proto.feed(b"")
    assert err.status == 400


def test_eof_in_chunked_body_is_400() -> None:
    proto = ServerProtocol()
    proto.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
    assert proto.feed(b"")[-1].status == 400


def test_nothing_after_an_error() -> None:
    proto = ServerProtocol()
    events = proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nBAD\x00 / HTTP/1.1\r\n\r\n")
    assert isinstance(events[0], RequestHead) and events[1] is END
    assert isinstance(events[2], ProtocolError) and len(events) == 3
    assert proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []
    assert proto.feed(b"") == []


def test_good_request_before_a_bad_one_is_still_delivered() -> None:
    events = feed_all(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGET /bad HTTP/1.1\r\n\r\n")
    assert events[0].path == b"/ok" and events[1] is END
    assert events[2] == ProtocolError(400, "missing Host header")


# --------------------------------------------------------------------------- upgrade


def test_upgrade_hands_over_following_bytes() -> None:
    proto = ServerProtocol()
    events = proto.feed(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"
    )
    assert events[0].upgrade == b"websocket" and events[1] is END and len(events) == 2
    assert proto.upgraded() == b"\x81\x05hello"
    assert proto.feed(b"more") == []


def test_upgrade_header_without_connection_upgrade_is_plain() -> None:
    head = single_head(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
    assert head.upgrade is None


def test_declined_upgrade_parses_following_bytes_as_http() -> None:
    proto = ServerProtocol()
    events = proto.feed(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\nGET /next HTTP/1.1\r\n"
    )
    assert events[0].upgrade == b"h2c" and len(events) == 2
    events = proto.feed(b"Host: h\r\n\r\n")
    assert events[0].path == b"/next" and events[1] is END


def test_declined_upgrade_then_eof_still_parses_the_rest() -> None:
    data = (
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
        b"GET /x HTTP/1.1\r\nHost: h\r\n\r\nGET /broken"
    )
    proto = ServerProtocol()
    assert len(proto.feed(data)) == 2
    events = proto.feed(b"")
    assert events[0].path == b"/x" and events[1] is END
    assert events[2].status == 400 and len(events) == 3


def test_upgrade_request_with_connection_close_is_final_if_declined() -> None:
    proto = ServerProtocol()
    events = proto.feed(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, upgrade\r\nUpgrade: ws\r\n\r\nabc"
    )
    assert events[0].upgrade == b"ws" and events[0].keep_alive is False
    assert proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []


def test_upgraded_without_upgrade_raises() -> None:
    with pytest.raises(RuntimeError):
        ServerProtocol().upgraded()


def test_upgrade_with_body_is_rejected() -> None:
    err = rejection(
        b"POST / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: x\r\n"
        b"Content-Length: 4\r\n\r\nGET "
    )
    assert err.status == 400


# --------------------------------------------------------------------------- rejections

REJECTIONS = "http_rejections.json"
REQUEST_LINE_VECTORS = vectors(REJECTIONS, "request_line")
HEADER_VECTORS = vectors(REJECTIONS, "header")
HOST_VECTORS = vectors(REJECTIONS, "host")
CONTENT_LENGTH_VECTORS = vectors(REJECTIONS, "content_length")
TRANSFER_ENCODING_VECTORS = vectors(REJECTIONS, "transfer_encoding")
CHUNK_VECTORS = vectors(REJECTIONS, "chunk")

TE = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
CH = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "data,status",
    [pytest.param(d, s, id=n) for n, d, s in REQUEST_LINE_VECTORS],
)
def test_request_line_rejected(data: bytes, status: int) -> None:
    assert rejection(data).status == status


@pytest.mark.parametrize("data,status", [pytest.param(d, s, id=n) for n, d, s in HEADER_VECTORS])
def test_header_syntax_rejected(data: bytes, status: int) -> None:
    assert rejection(data).status == status


@pytest.mark.parametrize("data,status", [pytest.param(d, s, id=n) for n, d, s in HOST_VECTORS])
def test_host_rules(data: bytes, status: int) -> None:
    assert rejection(data).status == status


@pytest.mark.parametrize(
    "data,status", [pytest.param(d, s, id=n) for n, d, s in CONTENT_LENGTH_VECTORS]
)
def test_content_length_rules(data: bytes, status: int) -> None:
    err = rejection(data)
    assert err.status == status
    # Nothing of the body reached the application as a request.
    assert not any(isinstance(e, RequestHead) for e in feed_all(data))


@pytest.mark.parametrize(
    "data,status", [pytest.param(d, s, id=n) for n, d, s in TRANSFER_ENCODING_VECTORS]
)
def test_transfer_encoding_rules(data: bytes, status: int) -> None:
    assert rejection(data).status == status
    assert not any(isinstance(e, RequestHead) for e in feed_all(data))


@pytest.mark.parametrize("data,status", [pytest.param(d, s, id=n) for n, d, s in CHUNK_VECTORS])
def test_chunk_syntax_rejected(data: bytes, status: int) -> None:
    events = feed_all(data)
    assert events[-1].status == status
    assert END not in events  # the request never completes
    assert rejection(data).status == status


def test_smuggled_request_in_cl_te_body_is_not_parsed() -> None:
    # CL.TE: a front end using Content-Length would forward the "GET /admin" as body.
    data = (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    events = feed_all(data)
    assert len(events) == 1 and events[0].status == 400


def test_smuggled_request_after_rejected_te_is_not_parsed() -> None:
    data = TE + b"gzip, chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
    assert feed_all(data) == [ProtocolError(501, "unsupported transfer coding")]


def test_trailer_cannot_carry_framing() -> None:
    events = feed_all(CH + b"1\r\na\r\n0\r\nContent-Length: 5\r\n\r\nhello")
    assert isinstance(events[-1], ProtocolError) and END not in events


# --------------------------------------------------------------------------- limits


def _line_of(length: int, method: bytes = b"GET") -> bytes:
    """A request line of exactly ``length`` bytes (without CRLF)."""
    target = b"/" + b"a" * (length - len(method) - 2 - 8 - 1)
    line = method + b" " + target + b" HTTP/1.1"
    assert len(line) == length
    return line


@pytest.mark.parametrize("method", [b"GET", b"OPTIONS"])
def test_request_line_at_limit_is_accepted(method: bytes) -> None:
    limits = Limits(max_request_line=200)
    data = _line_of(200, method) + b"\r\nHost: h\r\n\r\n"
    assert isinstance(feed_all(data, limits)[0], RequestHead)
    assert isinstance(feed_bytewise(data, limits)[0], RequestHead)


@pytest.mark.parametrize("method", [b"GET", b"OPTIONS"])
def test_request_line_over_limit_is_414(method: bytes) -> None:
    limits = Limits(max_request_line=200)
    assert rejection(_line_of(201, method) + b"\r\nHost: h\r\n\r\n", limits).status == 414


def test_default_request_line_limit() -> None:
    ok = _line_of(8192) + b"\r\nHost: h\r\n\r\n"
    assert isinstance(feed_all(ok)[0], RequestHead)
    assert feed_all(_line_of(8193) + b"\r\nHost: h\r\n\r\n")[-1].status == 414


def test_endless_request_line_is_cut_early() -> None:
    proto = ServerProtocol(Limits(max_request_line=8192))
    assert proto.feed(b"GET /") == []
    reads, events = reads_until_events(proto, b"a" * 1000, 100)
    assert events == [ProtocolError(414, "request line too long")]
    assert reads == 9  # cut in the read that crossed 8192 bytes


def _head_with_section(size: int, count: int = 2) -> bytes:
    """A request whose header section ("name: value\\r\\n" lines) is exactly ``size`` bytes."""
    fields = [b"Host: h\r\n"]
    filler = size - len(fields[0]) - (count - 2) * len(b"X-N: v\r\n")
    fields += [b"X-N: v\r\n"] * (count - 2)
    fields.append(b"X-Fill: " + b"f" * (filler - len(b"X-Fill: \r\n")) + b"\r\n")
    section = b"".join(fields)
    assert len(section) == size
    return b"GET / HTTP/1.1\r\n" + section + b"\r\n"


def test_header_section_at_limit_is_accepted() -> None:
    limits = Limits(max_header_size=1000)
    data = _head_with_section(1000)
    assert isinstance(feed_all(data, limits)[0], RequestHead)
    assert isinstance(feed_bytewise(data, limits)[0], RequestHead)
    assert isinstance(feed_pieces([data[:500], data[500:]], limits)[0], RequestHead)


def test_header_section_over_limit_is_431() -> None:
    limits = Limits(max_header_size=1000)
    assert rejection(_head_with_section(1001), limits).status == 431


def test_header_section_over_limit_after_pipelined_request() -> None:
    limits = Limits(max_header_size=1000)
    data = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" + _head_with_section(1001)
    events = feed_all(data, limits)
    assert events[1] is END and events[-1].status == 431


def test_default_header_section_limit() -> None:
    assert isinstance(feed_all(_head_with_section(8192))[0], RequestHead)
    assert feed_all(_head_with_section(8193))[-1].status == 431


def test_header_count_at_limit_and_over() -> None:
    limits = Limits(max_headers=10)
    ok = _head_with_section(200, count=10)
    assert isinstance(feed_all(ok, limits)[0], RequestHead)
    assert rejection(_head_with_section(200, count=11), limits).status == 431


def test_default_header_count_limit() -> None:
    assert isinstance(feed_all(_head_with_section(2000, count=100))[0], RequestHead)
    assert feed_all(_head_with_section(2000, count=101))[-1].status == 431


def test_many_tiny_headers_in_slow_reads_are_cut() -> None:
    proto = ServerProtocol(Limits(max_headers=100, max_header_size=1 << 20))
    proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
    _, events = reads_until_events(proto, b"a: b\r\n", 200)
    assert events and events[-1].status == 431


def test_endless_header_value_is_cut_early() -> None:
    proto = ServerProtocol(Limits(max_header_size=8192))
    assert proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: ") == []
    reads, events = reads_until_events(proto, b"v" * 1000, 100)
    assert events == [ProtocolError(431, "request header too large")]
    assert reads <= 9


def test_endless_header_in_one_big_read_is_cut() -> None:
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 65536
    assert feed_all(data) == [ProtocolError(431, "request header too large")]


def test_endless_header_names_are_cut() -> None:
    proto = ServerProtocol()
    proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
    _, events = reads_until_events(proto, b"n" * 1000, 100)
    assert events and events[-1].status == 431


def test_ows_padding_counts_toward_the_limit() -> None:
    proto = ServerProtocol(Limits(max_header_size=2000))
    proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX:")
    _, events = reads_until_events(proto, b" " * 500, 100)
    assert events and events[-1].status == 431


def test_trailer_section_over_limit_is_431() -> None:
    limits = Limits(max_header_size=1000)
    data = CH + b"0\r\nX-T: " + b"t" * 1000 + b"\r\n\r\n"
    events = feed_all(data, limits)
    assert events[-1].status == 431 and END not in events


def test_too_many_trailers_is_431() -> None:
    limits = Limits(max_headers=5)
    data = CH + b"0\r\n" + b"X-T: 1\r\n" * 6 + b"\r\n"
    assert feed_all(data, limits)[-1].status == 431


def test_endless_chunk_extension_is_cut() -> None:
    proto = ServerProtocol()
    assert isinstance(proto.feed(CH + b"5;ext=")[0], RequestHead)
    reads, events = reads_until_events(proto, b"x" * 1000, 200)
    assert events and events[-1].status == 400
    assert reads <= 13


def test_large_body_streams_without_limit_here() -> None:
    # client_max_body_size (413) belongs to the location; the protocol just streams.
    proto = ServerProtocol()
    proto.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
    total = 0
    for _ in range(100):
        for ev in proto.feed(b"z" * 10000):
            if isinstance(ev, Data):
                total += len(ev.data)
                assert len(ev.data) <= 10000
    assert total == 1000000 and proto.idle


def test_many_small_chunks_are_not_mistaken_for_a_stall() -> None:
    data = CH + b"1\r\na\r\n" * 5000 + b"0\r\n\r\n"
    events = feed_pieces([data[i : i + 4096] for i in range(0, len(data), 4096)])
    assert body_of(events) == b"a" * 5000 and events[-1] is END


# --------------------------------------------------------------------------- property test

_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_value = st.text(
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789-_.;=/\t", min_size=0, max_size=30
).map(lambda s: s.strip(" \t"))
_path = st.lists(st.text("abcxyz019%-._~", min_size=0, max_size=8), min_size=1, max_size=4)


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"]))
    path = "/" + "/".join(draw(_path))
    if draw(st.booleans()):
        path += "?" + draw(st.text("abc=&123", max_size=10))
    lines = [f"{method} {path} HTTP/1.1", "Host: example.com"]
    for name in draw(st.lists(_token, max_size=6)):
        if name in (
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "upgrade",
            "expect",
        ):
            continue
        lines.append(f"X-{name}: {draw(_value)}")
    body = draw(st.binary(max_size=60))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    payload = b""
    if framing == "length" or (framing == "none" and body):
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        payload = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n"
        if draw(st.booleans()):
            payload += b"X-Trailer: t\r\n"
        payload += b"\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


@settings(max_examples=150, deadline=None)
@given(
    requests=st.lists(_request(), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_random_splits_of_pipelined_stream_give_identical_events(
    requests: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(requests)
    reference = merged(feed_all(stream))
    assert reference.count(END) == len(requests)
    assert not any(isinstance(e, ProtocolError) for e in reference)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    pieces = [p for p in pieces if p]  # (b"" would mean end of input)
    assert merged(feed_pieces(pieces)) == reference
    assert merged(feed_pieces(pieces + [b""])) == reference  # clean EOF after the last request


# --------------------------------------------------------------------------- speed (reported)


def test_small_get_parse_cost_is_reported() -> None:
    """Not a timing assertion: prints µs per keep-alive GET for the report (-s to see it)."""
    import time

    req = (
        b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk/4.2\r\n"
        b"Accept: */*\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n"
    )
    proto = ServerProtocol()
    feed = proto.feed
    n = 20000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            feed(req)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    assert len(feed(req)) == 2
    print(f"\nServerProtocol.feed: {best:.2f} µs per small keep-alive GET")


# --------------------------------------------------------------------------- robustness (fuzz)

_STATUSES = {400, 405, 414, 431, 501, 505}


def _check_grammar(events: list) -> None:
    """(Head Data* END)* [Head Data*] [ProtocolError], the error only last."""
    in_request = False
    for i, ev in enumerate(events):
        if isinstance(ev, ProtocolError):
            assert i == len(events) - 1 and ev.status in _STATUSES, events
        elif isinstance(ev, RequestHead):
            assert not in_request
            in_request = True
        elif isinstance(ev, Data):
            assert in_request and ev.data
        else:
            assert ev is END and in_request
            in_request = False


@st.composite
def _mutated_stream(draw: st.DrawFn) -> bytes:
    stream = bytearray(b"".join(draw(st.lists(_request(), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(stream)))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        junk = draw(st.sampled_from([b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"0", b"x"]))
        if action == "insert":
            stream[at:at] = junk
        elif action == "replace" and at < len(stream):
            stream[at : at + 1] = junk
        elif at < len(stream):
            del stream[at]
    return bytes(stream)


@settings(max_examples=300, deadline=None)
@given(
    stream=st.one_of(_mutated_stream(), st.binary(max_size=300)),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=8),
)
def test_hostile_input_never_raises_and_errors_come_last(stream: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    proto = ServerProtocol()
    events: list = []
    for piece in [p for p in pieces if p] + [b""]:
        events.extend(proto.feed(piece))
    _check_grammar(events)
    whole = ServerProtocol()
    one_read = whole.feed(stream) if stream else []
    one_read += whole.feed(b"")
    _check_grammar(one_read)
    # Splitting never changes which requests are accepted, nor the verdict. (Body bytes just
    # before an error may differ: llhttp drops the piece of a span cut by the error.)
    assert [e for e in events if not isinstance(e, Data)] == [
        e for e in one_read if not isinstance(e, Data)
    ]
    if not events or not isinstance(events[-1], ProtocolError):
        assert merged(events) == merged(one_read)
    assert proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []


def test_size_counts_the_request_as_received() -> None:
    data = b"POST /up HTTP/1.1\r\nHost: a\r\nX-A:  v \t\r\nContent-Length: 5\r\n\r\nhello"
    head = feed_all(data)[0]
    assert head.size == len(data)  # one read: exact, OWS and body included
    # split over reads: counted from the fields as "name: value" lines, plus the body
    split = feed_bytewise(data)[0]
    expected = len(b"POST /up HTTP/1.1\r\nHost: a\r\nX-A: v\r\nContent-Length: 5\r\n\r\n") + 5
    assert split.size == expected
    # a pipelined second request is counted on its own
    proto = ServerProtocol()
    first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    second = b"GET /22 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"
    heads = [ev for ev in proto.feed(first + second) if isinstance(ev, RequestHead)]
    assert [h.size for h in heads] == [len(first), len(second)]


def test_request_id_field_is_carried_on_the_head() -> None:
    proto = ServerProtocol(id_field=b"x-request-id")
    events = proto.feed(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: one\r\nx-request-id: two\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    heads = [ev for ev in events if isinstance(ev, RequestHead)]
    assert [h.request_id for h in heads] == [b"one", None]  # the first value only
    plain = [ev for ev in ServerProtocol().feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: z\r\n\r\n")
             if isinstance(ev, RequestHead)]
    assert plain[0].request_id is None  # no id field asked for


def test_fields_named_with_underscores_are_dropped_when_asked() -> None:
    """nginx's default (underscores_in_headers off, ignore_invalid_headers on): a field such as
    ``X_User_Id`` never reaches a handler or a backend, where a CGI-style server would read it
    as ``X-User-Id`` (HTTP_X_USER_ID)."""
    request = (b"GET / HTTP/1.1\r\nHost: a\r\nX_User_Id: admin\r\nX-User-Id: real\r\n"
               b"my_field: 1\r\n\r\n")
    heads = [ev for ev in ServerProtocol(underscores=False).feed(request * 2)
             if isinstance(ev, RequestHead)]
    assert [h.headers for h in heads] == [[(b"host", b"a"), (b"x-user-id", b"real")]] * 2
    assert heads[0].size == len(request)  # they were received all the same
    # a head without such a field keeps its list as parsed
    (head, _) = ServerProtocol(underscores=False).feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head.headers == [(b"host", b"a")]
    # kept by default (underscores_in_headers on, or ignore_invalid_headers off)
    (kept, _) = ServerProtocol().feed(request)
    assert (b"x_user_id", b"admin") in kept.headers and (b"my_field", b"1") in kept.headers


def test_dropped_underscore_fields_still_count_against_the_limits() -> None:
    limits = Limits(max_headers=3)
    fields = b"".join(b"X_F%d: v\r\n" % i for i in range(4))
    (error,) = ServerProtocol(limits, underscores=False).feed(
        b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
    assert isinstance(error, ProtocolError) and error.status == 431
    limits = Limits(max_header_size=200)
    (error,) = ServerProtocol(limits, underscores=False).feed(
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Big: " + b"v" * 300 + b"\r\n\r\n")
    assert isinstance(error, ProtocolError) and error.status == 431
