"""The error log: nginx's line format, one destination for edgeworker, shm and gunicorn.

Lines look like nginx's: ``2026/11/28 21:00:00 [error] 1234#0: message`` where ``1234`` is the
pid and ``#0`` the worker id (``#-`` in the master). A line written while a request is being
processed (by a handler, or by edgeworker for that request) carries the request id after the
worker id, where nginx puts its connection number:
``2026/11/28 21:00:00 [error] 1234#0: *3f1c…9a: message``. Levels are nginx's names: debug, info,
notice, warn, error, crit (``warning`` is accepted for warn).

``error_log_format = "json"`` writes one JSON object per line instead (:class:`JsonFormatter`).
Every logger goes there: edgeworker's own, and the standard library's root logger, so
``logging.getLogger(__name__).warning(...)`` in a handler module is an error-log line; the
configured level filters them all. ``print()`` in the server's processes goes there too (a
``notice`` line per printed line, logger ``stdout``: see :class:`StdoutToLog`), never onto the
process's stdout, where an access log may be written.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time

import msgspec
from gunicorn import glogging

from . import runtime

NOTICE = 25
logging.addLevelName(NOTICE, "notice")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": NOTICE,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "crit": logging.CRITICAL,
}
_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    NOTICE: "notice",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "crit",
}


#: The logger ``print()`` writes to (see :class:`StdoutToLog`).
STDOUT_LOGGER = "stdout"
_encode = msgspec.json.Encoder().encode


def _level_name(record: logging.LogRecord) -> str:
    return _NAMES.get(record.levelno) or record.levelname.lower()


class NginxFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        level = _level_name(record)
        wid = runtime.worker.id
        msg = record.getMessage()
        if record.exc_info:
            msg = msg + "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            msg = msg + "\n" + self.formatStack(record.stack_info)
        rid = current_request_id() if wid is not None else None
        if rid is not None:
            return f"{ts} [{level}] {os.getpid()}#{wid}: *{rid}: {msg}"
        return f"{ts} [{level}] {os.getpid()}#{'-' if wid is None else wid}: {msg}"


class JsonFormatter(logging.Formatter):
    """``error_log_format = "json"``: one object per line with ``time`` (epoch seconds, as the
    access log's ``json``), ``level`` (nginx's names), ``pid``, ``worker`` (the worker id, null
    in the master), ``logger``, ``message``, and when known ``request_id``, ``exc_info`` (the
    traceback as text) and ``stack_info``."""

    def format(self, record: logging.LogRecord) -> str:
        wid = runtime.worker.id
        doc: dict[str, object] = {
            "time": round(record.created, 6),
            "level": _level_name(record),
            "pid": os.getpid(),
            "worker": wid,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = current_request_id() if wid is not None else None
        if rid is not None:
            doc["request_id"] = rid
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        try:
            return _encode(doc).decode()
        except (TypeError, UnicodeEncodeError):  # a message with lone surrogates
            return _encode({k: v.encode("utf-8", "replace").decode() if isinstance(v, str)
                            else v for k, v in doc.items()}).decode()


_FORMATTERS = {"nginx": NginxFormatter, "json": JsonFormatter}
#: ``error_log_format`` values: nginx's line format, or one JSON object per line.
FORMATS = tuple(_FORMATTERS)

_MAX_DEPTH = 100


def current_request_id() -> str | None:
    """The id of the request the calling greenlet is processing, or None.

    Found by walking up the stack to ``App.handle`` (every request-scoped call runs under it
    in the connection's greenlet), so the hot path pays nothing for it: only a log line does.
    A greenlet of its own (a timer) has no request.
    """
    phases = sys.modules.get("edgeworker.phases")
    if phases is None:
        return None
    code = phases.App.handle.__code__
    f = sys._getframe(1)
    depth = 0
    while f is not None and depth < _MAX_DEPTH:
        if f.f_code is code:
            req = f.f_locals.get("req")
            if req is None or req.__class__.__name__ != "Request":
                return None
            try:
                return req.id
            except Exception:
                return None
        f = f.f_back
        depth += 1
    return None


class ReopenableHandler(logging.Handler):
    """Writes to stderr or to a file opened with O_APPEND; ``reopen()`` for logrotate (USR1)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self._fd = 2
        self.reopen()

    def reopen(self) -> None:
        if self.target == "stderr":
            self._fd = 2
            return
        fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old, self._fd = self._fd, fd
        if old > 2:
            os.close(old)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(self._fd, (self.format(record) + "\n").encode("utf-8", "replace"))
        except OSError:
            pass
        except Exception:
            self.handleError(record)


class StdoutToLog(io.TextIOBase):
    """``sys.stdout`` of the server's processes: every line printed is one error-log record at
    ``notice`` (logger ``stdout``), with the request id when printed during a request.

    A partial line (``print(..., end="")``) waits for its newline or a ``flush()``. Nothing
    reaches file descriptor 1, where ``access_log = "stdout"`` writes its lines.
    """

    def __init__(self) -> None:
        super().__init__()
        self._log = logging.getLogger(STDOUT_LOGGER)
        self._partial = ""

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def errors(self) -> str:
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if "\n" not in text:
            self._partial += text
            return len(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._log.log(NOTICE, "%s", line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._log.log(NOTICE, "%s", line)


_handler: ReopenableHandler | None = None


def setup_error_log(target: str, level: str, fmt: str = "nginx") -> ReopenableHandler:
    """Route every logger to ``target`` in the format ``fmt`` (``FORMATS``), at ``level``:
    ``edgeworker``, ``shm`` and ``gunicorn.error`` directly, every other one (handlers' loggers,
    libraries', ``print()`` through :class:`StdoutToLog`, ``warnings``) through the root logger.
    Handlers that others added to the root logger stay."""
    global _handler
    handler = ReopenableHandler(target)
    handler.setFormatter(_FORMATTERS[fmt]())
    lvl = LEVELS[level]
    for name in ("edgeworker", "shm", "gunicorn.error"):
        lg = logging.getLogger(name)
        for old in list(lg.handlers):
            lg.removeHandler(old)
        lg.addHandler(handler)
        lg.setLevel(lvl)
        lg.propagate = False
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, ReopenableHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    logging.captureWarnings(True)
    if not isinstance(sys.stdout, StdoutToLog):
        if sys.stdout is not None:
            sys.stdout.flush()
        sys.stdout = StdoutToLog()
    old = _handler
    _handler = handler
    if old is not None and old._fd > 2:
        os.close(old._fd)
    return handler


def reopen() -> None:
    """Reopen the error log file (USR1)."""
    if _handler is not None:
        _handler.reopen()


class GunicornLogger(glogging.Logger):
    """gunicorn's logger, writing through our error-log handler, with no access log."""

    def setup(self, cfg) -> None:  # noqa: D401 - gunicorn API
        super().setup(cfg)
        self.error_log.handlers = []
        if _handler is not None:
            self.error_log.addHandler(_handler)
        self.error_log.propagate = False
        self.access_log.handlers = []
        self.access_log.disabled = True

    def reopen_files(self) -> None:
        reopen()

    def close_on_exec(self) -> None:  # our descriptors are opened O_CLOEXEC
        return None

    def access(self, resp, req, environ, request_time) -> None:  # never used: no WSGI
        return None


