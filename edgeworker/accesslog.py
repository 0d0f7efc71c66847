"""The access log: one line per request, written after the log phase.

Formats: ``combined`` (nginx's default), ``json`` (one object a line). ``access_log = "off"``
builds no logger at all, so it costs nothing. Each line is one ``os.write`` on an
``O_APPEND`` descriptor, so lines from several workers never interleave.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode

_month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _TimeLocal:
    """``$time_local`` (``28/Nov/2026:21:00:00 +0000``), formatted once per second."""

    __slots__ = ("_sec", "_text")

    def __init__(self) -> None:
        self._sec = -1
        self._text = ""

    def __call__(self, now: float) -> str:
        sec = int(now)
        if sec != self._sec:
            t = time.localtime(sec)
            off = time.strftime("%z", t)
            self._text = (
                f"{t.tm_mday:02d}/{_month[t.tm_mon - 1]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {off}"
            )
            self._sec = sec
        return self._text


def _quote(value: str | None) -> str:
    """nginx escapes ``"``, ``\\`` and bytes outside printable ASCII as ``\\xHH``."""
    if not value:
        return "-"
    if value.isprintable() and value.isascii() and '"' not in value and "\\" not in value:
        return value
    out = []
    for ch in value:
        o = ord(ch)
        if ch in '"\\' or o < 0x20 or o > 0x7E:
            out.append("".join(f"\\x{b:02X}" for b in ch.encode("utf-8", "surrogateescape")))
        else:
            out.append(ch)
    return "".join(out)


class AccessLog:
    """Writes one line per request to a path, ``stdout`` or ``stderr``."""

    def __init__(self, target: str, fmt: str) -> None:
        self.target = target
        self.format = fmt
        self._time_local = _TimeLocal()
        self._fd = -1
        self.reopen()

    @classmethod
    def from_config(cls, http: Any) -> AccessLog | None:
        if http.access_log == "off":
            return None
        return cls(http.access_log, http.access_log_format)

    def reopen(self) -> None:
        """Open (again) the log file: USR1 after logrotate moved it away."""
        if self.target == "stdout":
            self._fd = 1
            return
        if self.target == "stderr":
            self._fd = 2
            return
        fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old = self._fd
        self._fd = fd
        if old > 2:
            os.close(old)

    def line(self, req: Any) -> bytes:
        now = time.time()
        status = req.status
        if self.format == "json":
            h = req.headers
            doc = {
                "time": now,
                "remote_addr": req.remote_addr,
                "request_id": req.id,
                "method": req.method,
                "uri": req.request_uri,
                "protocol": "HTTP/" + req.http_version,
                "host": req.host,
                "status": status,
                "body_bytes_sent": req.body_bytes_sent,
                "request_time": round(now - req.start_time, 3),
                "referer": h.get("referer"),
                "user_agent": h.get("user-agent"),
            }
            var = req._var
            if var is not None:
                for k, v in var._own.items():
                    doc.setdefault(k, v)
            return _encode(doc) + b"\n"
        h = req.headers
        return (
            f'{req.remote_addr} - - [{self._time_local(now)}] "{_quote(req.method)} '
            f'{_quote(req.request_uri)} HTTP/{req.http_version}" {status} {req.body_bytes_sent} '
            f'"{_quote(h.get("referer"))}" "{_quote(h.get("user-agent"))}"\n'
        ).encode("utf-8", "surrogateescape")

    def write(self, req: Any) -> None:
        try:
            os.write(self._fd, self.line(req))
        except OSError:
            pass  # a full disk must not stop serving
