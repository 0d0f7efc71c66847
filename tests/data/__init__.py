"""Test corpora kept as data files beside this module.

``*.json`` request tables map a table name to ``[name, request, status]`` rows: ``request`` is
the raw bytes written as latin-1 text (one character per byte, so CR, LF, NUL and obs-text
round-trip exactly) and ``status`` the answer the server must give.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def vectors(file: str, table: str) -> list[tuple[str, bytes, int]]:
    """The rows of ``table`` in ``file`` as ``(name, request bytes, status)``."""
    rows = json.loads((HERE / file).read_text(encoding="utf-8"))[table]
    return [(name, request.encode("latin-1"), status) for name, request, status in rows]


REJECTION_TABLES = (
    "request_line",
    "header",
    "host",
    "content_length",
    "transfer_encoding",
    "chunk",
)


def rejections() -> list[tuple[str, bytes, int]]:
    """Every row of ``http_rejections.json``, table after table in ``REJECTION_TABLES`` order."""
    return [row for table in REJECTION_TABLES for row in vectors("http_rejections.json", table)]
