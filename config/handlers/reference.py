"""Handlers named by config/edgeworker.toml, the reference configuration.

Each one shows the calling convention of its phase and does as little as possible.
"""

from __future__ import annotations

import edgeworker


def init() -> None:
    """master, before fork and again on every reload."""


def init_worker() -> None:
    """each worker, after fork, before it accepts."""


def exit_worker() -> None:
    """each worker, at graceful exit, after its timers drained."""


def rewrite(req) -> None:
    """rewrite phase: may change req.uri (req.set_uri)."""


def access(req) -> None:
    """access phase: req.exit(403) would refuse the request here."""


def hello(req):
    """content phase: the return value is the body."""
    return "hello from edgeworker\n"


def header_filter(req) -> None:
    """once, before the response head is sent."""
    req.resp_headers["X-Served-By"] = "edgeworker"


def body_filter(req, chunk: bytes, eof: bool):
    """per body chunk: return the bytes to send (None keeps the chunk)."""
    return None


def log(req) -> None:
    """after the response is sent."""
    if req.status >= 500:
        edgeworker.log.warning("server error on %s", req.uri)
