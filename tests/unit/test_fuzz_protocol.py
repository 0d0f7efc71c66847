"""Fuzz target for the sans-IO HTTP protocol, beyond tests/unit/test_http_protocol.py.

That file already fuzzes mutated *valid* streams with default limits (grammar of events and
split invariance). This one starts from the *hostile* catalogues (every rejection vector,
classic smuggling payloads), mutates them with framing tokens, runs them under tiny limits so
the 414/431 paths are hit at random split points, and checks what a handler or proxy would
rely on in every ``RequestHead`` that comes out:

- the event grammar ``(Head Data* End)* [Head Data*] [ProtocolError]``, one error at most, last;
- a head is well-formed: known upper-case method, target without spaces or control bytes,
  lower-case token names, values without CR/LF/NUL or edge whitespace, at most one Host
  (required in 1.1), never both a length and chunked, version 1.0 or 1.1;
- a completed Content-Length body has exactly that many bytes; a body never has more;
- feeding the same stream in one read or split at random points gives the same verdict.

Default run: ``EW_FUZZ_EXAMPLES`` (200) per target. Longer by hand:
``EW_FUZZ_EXAMPLES=50000 pytest tests/unit/test_fuzz_protocol.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeworker.http.protocol import END, Data, Limits, ProtocolError, RequestHead, ServerProtocol

from ..data import rejections, vectors

EXAMPLES = int(os.environ.get("EW_FUZZ_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=1000,
                    suppress_health_check=[HealthCheck.too_slow])

STATUSES = {400, 405, 408, 413, 414, 431, 501, 505}
METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "PROPPATCH",
           "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "REPORT", "MKACTIVITY",
           "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "ACL", "BIND",
           "UNBIND", "REBIND", "LINK", "UNLINK", "MKCALENDAR", "QUERY", "SOURCE", "DESCRIBE",
           "ANNOUNCE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER",
           "REDIRECT", "RECORD", "FLUSH"}
TCHAR = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")

SEEDS = [d for _, d, _ in rejections() + vectors("smuggling.json", "smuggling")]
SEEDS += [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]
TOKENS = [b"\r\n", b"\r\n\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b",", b";", b"0",
          b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n",
          b"Content-Length: 0\r\n", b"Host: h\r\n", b"Connection: close\r\n",
          b"GET / HTTP/1.1\r\n", b"ffffffffffffffff", b"\xff", b"\x7f", b"HTTP/1.1", b"chunked"]


@st.composite
def hostile_stream(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=3))
    stream = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, len(stream)))
        action = draw(st.sampled_from(["insert", "replace", "delete", "dup"]))
        token = draw(st.sampled_from(TOKENS))
        if action == "insert":
            stream[at:at] = token
        elif action == "replace":
            stream[at:at + len(token)] = token
        elif action == "delete":
            del stream[at:at + draw(st.integers(1, 4))]
        else:
            stream[at:at] = stream[at:at + draw(st.integers(1, 40))]
    return bytes(stream)


LIMITS = st.one_of(
    st.just(None),
    st.builds(Limits, st.integers(16, 80), st.integers(16, 160), st.integers(1, 6)),
)


def check_head(head: RequestHead) -> None:
    assert head.method in METHODS, head.method
    assert head.version in ("1.0", "1.1"), head.version
    for b in head.target:
        assert 0x20 < b < 0x7F, head.target
    names = [n for n, _ in head.headers]
    for name, value in head.headers:
        assert name and set(name) <= TCHAR, name
        assert not ({0, 10, 13} & set(value)), value
        assert value == value.strip(b" \t"), value
    assert names.count(b"host") <= 1
    if head.version == "1.1":
        assert head.host is not None
    assert not (head.chunked and head.content_length is not None)
    assert head.content_length is None or head.content_length >= 0


def check_events(events: list) -> None:
    """Grammar, heads well-formed, body sizes consistent with the framing."""
    head: RequestHead | None = None
    body = 0
    for i, ev in enumerate(events):
        if isinstance(ev, ProtocolError):
            assert i == len(events) - 1, events
            assert ev.status in STATUSES, ev
            if head is not None and not head.chunked and head.content_length is None:
                # a head without a body is complete: only EOF-in-body or framing errors may
                # follow a head, so llhttp and edgeworker disagreed on this head
                raise AssertionError(f"error right after a bodiless head: {events}")
        elif isinstance(ev, RequestHead):
            assert head is None, events
            check_head(ev)
            head, body = ev, 0
        elif isinstance(ev, Data):
            assert head is not None and ev.data
            body += len(ev.data)
            if head.content_length is not None:
                assert body <= head.content_length
        else:
            assert ev is END and head is not None, events
            if head.content_length is not None:
                assert body == head.content_length
            head = None


def feed_split(stream: bytes, cuts: list[int], limits: Limits | None) -> list:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    proto = ServerProtocol(limits)
    events: list = []
    for piece in [p for p in pieces if p] + [b""]:
        events.extend(proto.feed(piece))
    check_events(events)
    if events and isinstance(events[-1], ProtocolError):  # nothing after an error, ever
        assert proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []
    return events


def same_verdict(a: list, b: list, limits: Limits | None) -> None:
    """The same requests accepted and the same outcome. Under custom (tiny) limits a request
    that is both over a limit and malformed may be cut by either rule first, depending on
    where the reads end (limits are checked as bytes arrive): 400, 414 or 431, always a
    rejection. With the default limits the status is the same too."""
    assert [e for e in a if isinstance(e, RequestHead) or e is END] == [
        e for e in b if isinstance(e, RequestHead) or e is END]
    err_a = a[-1] if a and isinstance(a[-1], ProtocolError) else None
    err_b = b[-1] if b and isinstance(b[-1], ProtocolError) else None
    assert (err_a is None) == (err_b is None), (err_a, err_b)
    if err_a is not None and err_a.status != err_b.status:
        assert limits is not None and {err_a.status, err_b.status} <= {400, 414, 431}, (
            err_a, err_b)


@SETTINGS
@given(stream=hostile_stream(), limits=LIMITS,
       cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=10))
def test_mutated_hostile_catalogue(stream: bytes, limits: Limits | None, cuts: list[int]) -> None:
    split = feed_split(stream, cuts, limits)
    whole = feed_split(stream, [], limits)
    same_verdict(split, whole, limits)


@SETTINGS
@given(stream=st.binary(min_size=1, max_size=400), limits=LIMITS,
       cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=10))
def test_random_bytes_after_a_valid_request(stream: bytes, limits: Limits | None,
                                            cuts: list[int]) -> None:
    """A valid first request is always delivered whole, whatever garbage follows it."""
    first = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    events = feed_split(first + stream, cuts, limits or Limits())
    assert isinstance(events[0], RequestHead) and events[1] is END


@SETTINGS
@given(data=st.data())
def test_byte_by_byte_equals_one_read_on_catalogue(data: st.DataObject) -> None:
    stream = data.draw(hostile_stream())
    limits = data.draw(LIMITS)
    proto = ServerProtocol(limits)
    events: list = []
    for i in range(len(stream)):
        events.extend(proto.feed(stream[i:i + 1]))
    events.extend(proto.feed(b""))
    check_events(events)
    same_verdict(events, feed_split(stream, [], limits), limits)


def test_regression_every_seed_alone_in_one_read_and_bytewise() -> None:
    for seed in SEEDS:
        for limits in (None, Limits(32, 64, 2)):
            whole = feed_split(seed, [], limits)
            bytewise = feed_split(seed, list(range(1, len(seed))), limits)
            same_verdict(whole, bytewise, limits)


def test_regression_a_refused_method_over_the_header_limit() -> None:
    """Found by the fuzz run: TRACE (405) with more fields than ``max_headers`` (431). Read
    byte by byte the count limit meets the head first; read whole, the method was refused
    before the limits were checked. The limits now come first however the head arrives."""
    for method in (b"TRACE", b"CONNECT"):
        stream = (method + b" / HTTP/1.1\r\nHost: h\r\n"
                  + b"".join(b"X%d: 1\r\n" % i for i in range(150)) + b"\r\n")
        whole = feed_split(stream, [], None)
        bytewise = feed_split(stream, list(range(1, len(stream))), None)
        assert whole[-1].status == bytewise[-1].status == 431
        short = method + b" / HTTP/1.1\r\nHost: h\r\n\r\n"
        assert feed_split(short, [], None)[-1].status == 405


def test_regression_limit_and_framing_error_in_one_head() -> None:
    """Found by the long fuzz run: over ``max_headers`` *and* CL+TE. In one read llhttp ends
    the head and the framing rule answers 400; cut at byte 45 the count limit answers 431
    first. Both reject; the status depends on where the reads end (documented above)."""
    limits = Limits(16, 16, 1)
    stream = (b"POST / HTTP/1.1\r\nost: h\r\nContent-Length: 5\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    whole = feed_split(stream, [], limits)
    split = feed_split(stream, [45], limits)
    assert whole[-1].status in (400, 431) and split[-1].status in (400, 431)
    same_verdict(whole, split, limits)
    stream = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"
    same_verdict(feed_split(stream, [], limits), feed_split(stream, list(range(1, 60)), limits),
                 limits)
