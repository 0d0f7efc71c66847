"""Response bytes: status lines, heads, chunked framing, the Date header and error pages.

Everything here returns ``bytes`` ready for ``sendall``. Common status lines and error pages are
encoded once at import; ``http_date()`` formats at most once per second.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from edgeworker.http.headers import check_name

__all__ = [
    "LAST_CHUNK",
    "SERVER",
    "STATUS_REASONS",
    "chunk",
    "encode_head",
    "error_page",
    "error_response",
    "http_date",
    "status_line",
]

SERVER = "edgeworker"

STATUS_REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Not Allowed",  # nginx's wording (RFC 9110: "Method Not Allowed")
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",  # nginx's wording (RFC 9110: "Content Too Large")
    414: "Request-URI Too Large",  # nginx's wording (RFC 9110: "URI Too Long")
    415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable",
    417: "Expectation Failed",
    418: "I'm a teapot",
    421: "Misdirected Request",
    422: "Unprocessable Entity",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",  # nginx's wording
    504: "Gateway Time-out",  # nginx's wording
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}

LAST_CHUNK = b"0\r\n\r\n"

_STATUS_LINES: dict[tuple[int, str], bytes] = {
    (code, version): f"HTTP/{version} {code} {reason}\r\n".encode("latin-1")
    for code, reason in STATUS_REASONS.items()
    for version in ("1.1", "1.0")
}
_GOOD_NAMES: set[str] = set()  # header names already validated by encode_head


def status_line(status: int, version: str = "1.1") -> bytes:
    """``b"HTTP/1.1 200 OK\\r\\n"``; unknown codes get the reason ``Unknown``.

    Raises ``ValueError`` for a status outside 100..999 or a version other than 1.0/1.1.
    """
    line = _STATUS_LINES.get((status, version))
    if line is not None:
        return line
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        raise ValueError(f"invalid status code: {status!r}")
    if version not in ("1.1", "1.0"):
        raise ValueError(f"invalid HTTP version: {version!r}")
    return f"HTTP/{version} {status} Unknown\r\n".encode("latin-1")


def encode_head(status: int, headers: Iterable[tuple[str, str]], version: str = "1.1") -> bytes:
    """The status line, one ``Name: value`` line per header and the blank line.

    Raises ``ValueError`` naming the header if a value holds CR, LF or NUL or is not latin-1,
    or if a name is not a token.
    """
    parts = []
    for name, value in headers:
        if name not in _GOOD_NAMES:
            check_name(name)
            if len(_GOOD_NAMES) < 1024:
                _GOOD_NAMES.add(name)
        if not isinstance(value, str):
            value = str(value)
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"invalid header value for {name}: {value!r}")
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")
    try:
        body = "".join(parts).encode("latin-1")
    except UnicodeEncodeError:
        for name, value in headers:
            try:
                f"{name}{value}".encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(f"invalid header value for {name}: {value!r}") from None
        raise
    return status_line(status, version) + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body: ``b"5\\r\\nhello\\r\\n"``. ``b""`` gives ``b""``, never the
    terminator (send ``LAST_CHUNK`` for that)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def error_page(status: int) -> bytes:
    """The nginx-style HTML body for ``status``, ending in CRLF."""
    page = _PAGES.get(status)
    if page is None:
        title = status_line(status)[9:-2].decode("latin-1")
        page = _page(title)
    return page


def _page(title: str) -> bytes:
    return (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        f"<hr><center>{SERVER}</center></body></html>\r\n"
    ).encode("latin-1")


_PAGES: dict[int, bytes] = {
    code: _page(f"{code} {reason}") for code, reason in STATUS_REASONS.items() if code >= 300
}


def error_response(
    status: int,
    keep_alive: bool,
    head_only: bool = False,
    extra_headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
) -> bytes:
    """A complete error response: head with ``Server``, ``Date``, ``Content-Type: text/html``,
    ``Content-Length``, ``Connection: keep-alive|close`` (then ``extra_headers``), and the
    ``error_page`` body (or ``body``, an HTML page) unless ``head_only`` (a HEAD request: same
    headers, no body)."""
    if body is None:
        body = error_page(status)
    headers = [
        ("Server", SERVER),
        ("Date", http_date()),
        ("Content-Type", "text/html"),
        ("Content-Length", str(len(body))),
        ("Connection", "keep-alive" if keep_alive else "close"),
    ]
    headers.extend(extra_headers)
    head = encode_head(status, headers)
    return head if head_only else head + body


_date_second = -1
_date_value = ""


def http_date(ts: float | None = None) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``) for ``ts`` (default: now).

    The current time's value is computed at most once per second.
    """
    global _date_second, _date_value
    if ts is not None:
        return _format_date(int(ts))
    now = int(time.time())
    if now != _date_second:
        _date_value = _format_date(now)
        _date_second = now
    return _date_value


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _format_date(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )
