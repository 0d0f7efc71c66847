"""Response bytes: status lines, heads, chunks, error pages, the Date header."""

from __future__ import annotations

import email.utils
import time

import httptools
import pytest

from edgeworker.http.responses import (
    LAST_CHUNK,
    STATUS_REASONS,
    chunk,
    encode_head,
    error_page,
    error_response,
    http_date,
    status_line,
)


class _Collect:
    """httptools response callbacks: collects what a real client parser sees."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def parse_response(data: bytes) -> tuple[int, _Collect]:
    sink = _Collect()
    parser = httptools.HttpResponseParser(sink)
    parser.feed_data(data)
    return parser.get_status_code(), sink


def test_common_status_lines() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(431) == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    assert status_line(200, "1.0") == b"HTTP/1.0 200 OK\r\n"


def test_status_line_is_cached() -> None:
    assert status_line(200) is status_line(200)


def test_unknown_status_code() -> None:
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"
    assert status_line(299, "1.0") == b"HTTP/1.0 299 Unknown\r\n"


@pytest.mark.parametrize("bad", [99, 1000, -1, True, "200"])
def test_invalid_status_code(bad: object) -> None:
    with pytest.raises(ValueError):
        status_line(bad)  # type: ignore[arg-type]


def test_invalid_version() -> None:
    with pytest.raises(ValueError):
        status_line(299, "2.0")


def test_status_reasons_cover_common_codes() -> None:
    for code in (
        100,
        101,
        200,
        201,
        204,
        206,
        301,
        302,
        303,
        304,
        307,
        308,
        400,
        401,
        403,
        404,
        405,
        408,
        413,
        414,
        429,
        431,
        500,
        501,
        502,
        503,
        504,
        505,
    ):
        assert code in STATUS_REASONS


def test_encode_head_parses_back() -> None:
    head = encode_head(201, [("Content-Type", "text/plain"), ("X-Count", 3), ("Set-Cookie", "a=1")])
    assert head.startswith(b"HTTP/1.1 201 Created\r\n") and head.endswith(b"\r\n\r\n")
    status, sink = parse_response(head + b"")
    assert status == 201
    assert sink.headers == [
        (b"Content-Type", b"text/plain"),
        (b"X-Count", b"3"),
        (b"Set-Cookie", b"a=1"),
    ]


def test_encode_head_latin1_value() -> None:
    assert b"X: caf\xe9\r\n" in encode_head(200, [("X", "café")])


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: evil=1", "a\nb", "a\rb", "a\0b"])
def test_encode_head_refuses_crlf_nul(value: str) -> None:
    with pytest.raises(ValueError, match="X-Bad"):
        encode_head(200, [("Content-Type", "text/plain"), ("X-Bad", value)])


def test_encode_head_refuses_non_latin1() -> None:
    with pytest.raises(ValueError, match="X-Snow"):
        encode_head(200, [("X-Snow", "☃")])


@pytest.mark.parametrize("name", ["Bad Name", "X:Y", "X\r\nY", ""])
def test_encode_head_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        encode_head(200, [(name, "v")])


def test_chunk() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert chunk(b"") == b""  # never the terminator by accident
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_chunked_stream_parses_back() -> None:
    head = encode_head(200, [("Transfer-Encoding", "chunked")])
    body = chunk(b"hello ") + chunk(b"") + chunk(b"world") + LAST_CHUNK
    status, sink = parse_response(head + body)
    assert status == 200 and sink.body == b"hello world" and sink.done


def test_error_page_format() -> None:
    assert error_page(404) == (
        b"<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1>"
        b"</center><hr><center>edgeworker</center></body></html>\r\n"
    )
    assert b"<title>599 Unknown</title>" in error_page(599)


def test_error_response_keep_alive() -> None:
    data = error_response(404, keep_alive=True)
    status, sink = parse_response(data)
    headers = {k.lower(): v for k, v in sink.headers}
    assert status == 404
    assert headers[b"server"] == b"edgeworker"
    assert headers[b"content-type"] == b"text/html"
    assert headers[b"connection"] == b"keep-alive"
    assert int(headers[b"content-length"]) == len(error_page(404)) == len(sink.body)
    assert email.utils.parsedate_to_datetime(headers[b"date"].decode()) is not None
    assert sink.body == error_page(404) and sink.done


def test_error_response_close_head_only_and_extra_headers() -> None:
    data = error_response(405, keep_alive=False, head_only=True, extra_headers=[("Allow", "GET")])
    assert data.endswith(b"\r\n\r\n") and b"<html>" not in data
    assert b"Connection: close\r\n" in data and b"Allow: GET\r\n" in data
    assert b"Content-Length: %d\r\n" % len(error_page(405)) in data


def test_error_response_rejects_injected_extra_header() -> None:
    with pytest.raises(ValueError):
        error_response(400, keep_alive=False, extra_headers=[("X", "a\r\nb")])


def test_http_date_format() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    parsed = email.utils.parsedate_to_datetime(http_date()).timestamp()
    assert abs(parsed - time.time()) < 2


def test_http_date_formats_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeworker.http.responses as responses

    clock = [1_000_000.1]
    calls: list[int] = []
    real_format = responses._format_date

    def counting_format(seconds: int) -> str:
        calls.append(seconds)
        return real_format(seconds)

    monkeypatch.setattr(responses.time, "time", lambda: clock[0])
    monkeypatch.setattr(responses, "_format_date", counting_format)
    first = http_date()
    clock[0] = 1_000_000.9
    assert http_date() is first
    clock[0] = 1_000_001.0
    second = http_date()
    assert second != first and second == real_format(1_000_001)
    assert calls == [1_000_000, 1_000_001]
