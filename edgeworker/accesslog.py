"""The access log: one line per request, written after the log phase.

Formats: ``combined`` (nginx's default), ``json`` (one object a line), or a custom format
with ``$variables`` (``'$remote_addr "$request" $status $request_time $request_id'``): any
``req.var`` variable, handler-set ones included, ``$name`` or ``${name}``; a missing or empty
value logs as ``-``; values are escaped as nginx does (``"``, ``\\`` and bytes outside
printable ASCII as ``\\xHH``). ``access_log = "off"`` builds no logger at all, so it costs
nothing. Each line is one ``os.write`` on an
``O_APPEND`` descriptor, so lines from several workers never interleave.
"""

from __future__ import annotations

import logging
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


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def compile_format(fmt: str) -> list[tuple[str, bool]]:
    """Split a custom format into ``(text, is_variable)`` parts. ``$name`` takes letters,
    digits and ``_``; ``${name}`` allows text right after the name; a ``$`` not followed by a
    name is literal text."""
    parts: list[tuple[str, bool]] = []
    lit: list[str] = []
    i, n = 0, len(fmt)
    while i < n:
        c = fmt[i]
        if c != "$":
            lit.append(c)
            i += 1
            continue
        if i + 1 < n and fmt[i + 1] == "{":
            end = fmt.find("}", i + 2)
            if end > i + 2:
                name, i = fmt[i + 2:end], end + 1
            else:
                lit.append(c)
                i += 1
                continue
        else:
            j = i + 1
            while j < n and fmt[j] in _NAME_CHARS:
                j += 1
            if j == i + 1:
                lit.append(c)
                i += 1
                continue
            name, i = fmt[i + 1:j], j
        if lit:
            parts.append(("".join(lit), False))
            lit = []
        parts.append((name, True))
    if lit:
        parts.append(("".join(lit), False))
    return parts


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
        self._parts = compile_format(fmt) if fmt not in ("combined", "json") else None
        self._fd = -1
        self._failing = False  # the last write failed (and that was logged)
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
        if self._parts is not None:
            return self._custom(req, now)
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
            own = req.var_values
            if own is not None:
                for k, v in own.items():
                    doc.setdefault(k, v)
            if req.upstream is not None:  # a proxied request: $upstream_addr, …
                var = req.var
                for name in ("upstream_addr", "upstream_status", "upstream_response_time"):
                    doc.setdefault(name, var.get(name))
            return _encode(doc) + b"\n"
        h = req.headers
        return (
            f'{req.remote_addr} - - [{self._time_local(now)}] "{_quote(req.method)} '
            f'{_quote(req.request_uri)} HTTP/{req.http_version}" {status} {req.body_bytes_sent} '
            f'"{_quote(h.get("referer"))}" "{_quote(h.get("user-agent"))}"\n'
        ).encode("utf-8", "surrogateescape")

    def _custom(self, req: Any, now: float) -> bytes:
        own = req.var_values
        out = []
        for text, is_var in self._parts:
            if not is_var:
                out.append(text)
                continue
            value = own.get(text) if own else None
            if value is None:
                fast = _FAST_VARS.get(text)
                value = fast(self, req, now) if fast is not None else req.var.get(text)
            out.append(_quote(value))
        out.append("\n")
        return "".join(out).encode("utf-8", "surrogateescape")

    def write(self, req: Any) -> None:
        """Append the line of ``req``. A failed write (full disk, …) never stops serving: it is
        logged once to the error log, and again only after a write succeeded in between."""
        try:
            os.write(self._fd, self.line(req))
        except OSError as exc:
            if not self._failing:
                self._failing = True
                logging.getLogger("edgeworker").error(
                    "access log %s: write failed (%s); lines are lost until it works again",
                    self.target, exc.strerror or exc)
            return
        if self._failing:
            self._failing = False


# variables the access log computes itself (log time, cached $time_local), else req.var
_FAST_VARS = {
    "status": lambda log, r, now: str(r.status),
    "body_bytes_sent": lambda log, r, now: str(r.body_bytes_sent),
    "remote_addr": lambda log, r, now: r.remote_addr,
    "request": lambda log, r, now: f"{r.method} {r.request_uri} HTTP/{r.http_version}",
    "request_time": lambda log, r, now: f"{max(0.0, now - r.start_time):.3f}",
    "msec": lambda log, r, now: f"{now:.3f}",
    "time_local": lambda log, r, now: log._time_local(now),
    "request_id": lambda log, r, now: r.id,
}
