"""Response bytes: status lines, the Date header, chunk framing, nginx-style error pages."""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

from .headers import check_value

STATUS_REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
STATUS_REASONS.update({413: "Request Entity Too Large", 414: "Request-URI Too Large"})

_LINES: dict[tuple[int, str], bytes] = {}
for _code, _reason in STATUS_REASONS.items():
    for _v in ("1.1", "1.0"):
        _LINES[(_code, _v)] = f"HTTP/{_v} {_code} {_reason}\r\n".encode()


def status_line(status: int, version: str = "1.1") -> bytes:
    """``HTTP/1.1 200 OK\\r\\n`` (pre-encoded for known codes)."""
    line = _LINES.get((status, version))
    if line is None:
        reason = STATUS_REASONS.get(status, "Unknown")
        line = f"HTTP/{version} {int(status)} {reason}\r\n".encode()
    return line


_date_sec = -1
_date_text = ""


def http_date(ts: float | None = None) -> str:
    """The ``Date`` header value (RFC 9110 IMF-fixdate), formatted once per second."""
    global _date_sec, _date_text
    if ts is not None:
        return formatdate(ts, usegmt=True)
    sec = int(time.time())
    if sec != _date_sec:
        _date_text = formatdate(sec, usegmt=True)
        _date_sec = sec
    return _date_text


def encode_head(status: int, headers: Iterable[tuple[str, str]], version: str = "1.1") -> bytes:
    """A response head; a header value with CR, LF or NUL raises ``ValueError`` naming it."""
    parts = [status_line(status, version)]
    for name, value in headers:
        parts.append(f"{name}: {check_value(value, name)}\r\n".encode("latin-1"))
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; ``b""`` gives ``b""`` (never the terminator)."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def error_page(status: int) -> bytes:
    """The HTML body nginx sends for an error status, signed edgeworker."""
    title = f"{status} {STATUS_REASONS.get(status, 'Unknown')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>edgeworker</center>\r\n"
        f"</body>\r\n</html>\r\n"
    ).encode()


def error_response(
    status: int,
    keep_alive: bool = False,
    head_only: bool = False,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A complete error response (head + nginx-style page)."""
    body = error_page(status)
    headers = [
        ("Server", "edgeworker"),
        ("Date", http_date()),
        ("Content-Type", "text/html"),
        ("Content-Length", str(len(body))),
        ("Connection", "keep-alive" if keep_alive else "close"),
        *extra_headers,
    ]
    head = encode_head(status, headers)
    return head if head_only else head + body
