"""The framing rules (edgeworker/http/framing.py) on their own; the protocol and proxy tests
give them whole messages."""

from __future__ import annotations

import pytest

from edgeworker.errors import FramingError
from edgeworker.http import framing
from edgeworker.http.framing import (
    DELIMITED,
    INTERIM,
    NO_BODY,
    TO_CLOSE,
    check_upgrade,
    content_length,
    keep_alive,
    request_chunked,
    response_body,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"0", 0), (b"0005", 5), (b"1" * 18, int(b"1" * 18)), (b"1" * 19, None), (b"", None),
     (b"-1", None), (b"+1", None), (b"1 ", None), (b"0x1", None), (b"1,1", None),
     (b"\xd9\xa3", None)],
)
def test_content_length(value, expected):
    assert content_length(value) == expected


@pytest.mark.parametrize(
    ("version", "cl", "te", "ows", "expected"),
    [("1.1", None, None, False, False), ("1.1", 5, None, False, False),
     ("1.1", None, b"chunked", False, True), ("1.1", None, b"Chunked", False, True),
     ("1.0", None, None, False, False)],
)
def test_request_chunked(version, cl, te, ows, expected):
    assert request_chunked(version, cl, te, ows) is expected


@pytest.mark.parametrize(
    ("version", "cl", "te", "ows", "status", "reason"),
    [("1.1", None, b"chunked", True, 400, "invalid Transfer-Encoding"),
     ("1.0", None, b"chunked", False, 400, "Transfer-Encoding in an HTTP/1.0 request"),
     ("1.1", 3, b"chunked", False, 400, "both Content-Length and Transfer-Encoding"),
     ("1.1", None, b"chunked, gzip", False, 400, "Transfer-Encoding does not end in chunked"),
     ("1.1", None, b"chunked,chunked", False, 400, "invalid Transfer-Encoding"),
     ("1.1", None, b",chunked", False, 400, "invalid Transfer-Encoding"),
     ("1.1", None, b"gzip, chunked", False, 501, "unsupported transfer coding")],
)
def test_request_framing_refused(version, cl, te, ows, status, reason):
    with pytest.raises(FramingError) as info:
        request_chunked(version, cl, te, ows)
    assert (info.value.status, info.value.reason, str(info.value)) == (status, reason, reason)


@pytest.mark.parametrize(
    ("conn", "version", "expected"),
    [(None, "1.1", True), (None, "1.0", False), (b"close", "1.1", False),
     (b"Keep-Alive", "1.0", True), (b"keep-alive, close", "1.1", False),
     (b"te, Keep-Alive", "1.0", True), (b"te", "1.0", False), (b"upgrade", "1.1", True),
     (b"x,CLOSE ", "1.1", False)],
)
def test_keep_alive(conn, version, expected):
    assert keep_alive(conn, version) is expected


def test_upgrade_with_a_body_is_refused():
    check_upgrade(False, None)
    check_upgrade(False, 0)
    for chunked, cl in ((True, None), (False, 1)):
        with pytest.raises(FramingError, match="Upgrade request with a body"):
            check_upgrade(chunked, cl)


@pytest.mark.parametrize(
    ("status", "head_only", "framed", "expected"),
    [(100, False, False, INTERIM), (103, False, True, INTERIM), (101, False, False, DELIMITED),
     (200, False, True, DELIMITED), (200, False, False, TO_CLOSE), (200, True, False, NO_BODY),
     (204, False, True, NO_BODY), (304, False, False, NO_BODY), (500, False, False, TO_CLOSE)],
)
def test_response_body(status, head_only, framed, expected):
    assert response_body(status, head_only, framed) == expected


def test_split_tokens():
    assert framing.split_tokens(b"Keep-Alive ,\tTE,") == [b"keep-alive", b"te", b""]
