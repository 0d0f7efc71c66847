"""The server's own figures: ``status = "json" | "prometheus" | "dashboard"`` locations.

- ``json``: the status document (see ``collect.document``), modelled on Angie's ``/status``;
- ``prometheus``: the same as Prometheus text exposition 0.0.4 (``edgeworker_*`` metrics);
- ``dashboard``: a self-contained HTML page (``dashboard.html`` in this package, no external
  assets) that polls the same location with ``?format=json`` every second. ``?format=json`` and
  ``?format=prometheus`` work on every status location.

The counters behind them live in ``edgeworker.status.metrics`` (shared memory, summed over every
worker, at most about a second stale).

Keys:
    status: ``"json"``, ``"prometheus"`` or ``"dashboard"``: the server's own figures
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..confschema import Context, Feature, suggest
from . import collect, prometheus

DASHBOARD_FILE = Path(__file__).with_name("dashboard.html")
_NO_STORE = "no-store"


def make_content(loc: Any, app: Any) -> Callable[[Any], Any]:
    """The content handler of a ``status`` location (``loc.status`` is json, prometheus or
    dashboard). Answers GET and HEAD; other methods get 405 with ``Allow: GET, HEAD``."""
    kind = loc.status
    cfg = app.cfg
    page = DASHBOARD_FILE.read_bytes() if kind == "dashboard" else b""

    def status(req: Any) -> Any:
        if req.method not in ("GET", "HEAD"):
            req.exit(405, headers={"Allow": "GET, HEAD"})
        req.resp_headers["Cache-Control"] = _NO_STORE
        fmt = req.args.get("format") if req.query_string else None
        if fmt is None:
            fmt = kind
        if fmt == "json":
            return collect.document(cfg)
        if fmt == "prometheus":
            req.content_type = prometheus.CONTENT_TYPE
            return prometheus.render(collect.document(cfg))
        if fmt == "dashboard":
            req.content_type = "text/html; charset=utf-8"
            return page or DASHBOARD_FILE.read_bytes()
        req.exit(
            400,
            f'unknown format "{fmt}": expected json, prometheus or dashboard\n',
            content_type="text/plain",
        )

    return status


def check(loc: Any, path: str, ctx: Context) -> None:
    """``status`` is one of ``KINDS``."""
    if loc.status is not None and loc.status not in KINDS:
        ctx.err(
            f"{path}.status",
            f'invalid status "{loc.status}": expected "json", "prometheus" or "dashboard"'
            + suggest(loc.status, KINDS),
        )


#: The ``status`` values: the page a status location answers by default.
KINDS: tuple[str, ...] = ("json", "prometheus", "dashboard")

#: The ``status`` feature for ``edgeworker.config``.
FEATURE = Feature(
    content="edgeworker.status:make_content",
    fields=(("status", str | None, None),),
    check=check,
)

__all__ = ["DASHBOARD_FILE", "FEATURE", "KINDS", "make_content"]
