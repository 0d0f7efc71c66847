"""Response output with a known length, for content sources that stream big bodies.

``req.stream`` frames a streamed body as chunked; a proxied or static response whose
length is known should keep its ``Content-Length`` (clients show progress, ranges and HEAD
stay exact). These helpers send the head with that length (header_filter runs first, as in
``req.respond``) and then raw body bytes. Use them only when the location has no
body_filter (a filter may change the length).
"""

from __future__ import annotations

from typing import Any


def send_head(req: Any, length: int, first: bytes = b"") -> None:
    """Send the head with ``Content-Length: length`` and ``first`` (see
    ``Request.send_head``)."""
    req.send_head(length, first)


def send_body(req: Any, data: bytes) -> None:
    """Send raw body bytes after ``send_head`` (nothing for HEAD)."""
    req.send_body(data)


def finish(req: Any) -> None:
    """Mark the response complete (later output calls are no-ops; a compressed body gets
    its end: see ``Request.finish``)."""
    req.finish()
