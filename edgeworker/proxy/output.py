"""Response output with a known length, for content sources that stream big bodies.

``Connection.stream`` frames a streamed body as chunked; a proxied or static response whose
length is known should keep its ``Content-Length`` (clients show progress, ranges and HEAD
stay exact). These helpers send the head with that length (header_filter runs first, as in
``Connection.send_response``) and then raw body bytes. Use them only when the location has no
body_filter (a filter may change the length).
"""

from __future__ import annotations

from typing import Any


def send_head(req: Any, length: int, first: bytes = b"") -> None:
    """Run header_filter, send the head with ``Content-Length: length`` (none for 1xx/204/304)
    and ``first`` (the first body bytes, skipped for HEAD) in one write."""
    conn = req._conn
    if req.location is not None:
        conn.app.header_filter(req)
    head = conn._head_bytes(req, length)
    req.headers_sent = True
    if first and req.method != "HEAD":
        conn._sendall(head + first)
        req.body_bytes_sent += len(first)
    else:
        conn._sendall(head)


def send_body(req: Any, data: bytes) -> None:
    """Send raw body bytes after ``send_head`` (nothing for HEAD)."""
    if data and req.method != "HEAD":
        req._conn._sendall(data)
        req.body_bytes_sent += len(data)


def finish(req: Any) -> None:
    """Mark the response complete (later output calls are no-ops)."""
    req._eof = True
