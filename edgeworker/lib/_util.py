"""Small helpers shared by the edge library modules."""

from __future__ import annotations

import logging
import time


class QuietLog:
    """Log a recurring error at most once per ``interval`` seconds, counting what it skipped.

    ``QuietLog(log, "rate limit store").error("redis:default unreachable: %s", exc)`` logs the
    first occurrence at once; later ones within the interval are only counted, and the next
    message logged says how many were suppressed. Never raises.
    """

    def __init__(self, log: logging.Logger, what: str, interval: float = 10.0) -> None:
        self.log = log
        self.what = what
        self.interval = interval
        self._next = 0.0
        self._suppressed = 0

    def error(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self.interval
        suppressed, self._suppressed = self._suppressed, 0
        try:
            if suppressed:
                self.log.error(f"{self.what}: {msg} (%d similar errors suppressed)",
                               *args, suppressed)
            else:
                self.log.error(f"{self.what}: {msg}", *args)
        except Exception:  # pragma: no cover - logging must never break a request
            pass


def count_event(name: str) -> None:
    """Add one to the server's event counter ``name`` (status page / Prometheus); no-op when
    the metrics module is unavailable."""
    try:
        from ..status import metrics
    except Exception:  # pragma: no cover
        return
    try:
        metrics.count(name)
    except Exception:  # pragma: no cover
        pass
