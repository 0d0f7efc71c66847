"""Per-worker keep-alive pools of idle upstream connections.

One ``Pool`` per upstream group (nginx ``keepalive N``): at most ``size`` idle connections over
all its peers, most recently used first; when full, the least recently used idle connection is
closed. The pool never limits how many connections are open at once (as nginx). An idle
connection is dropped when it has been idle longer than ``idle_timeout`` (nginx
``keepalive_timeout 60s``), served ``max_requests`` requests (``keepalive_requests 1000``), or
when a non-blocking peek shows the upstream closed it.
"""

from __future__ import annotations

import time

from .client import UpConn

IDLE_TIMEOUT = 60.0
MAX_REQUESTS = 1000
FRESH = 1.0


class Pool:
    """Idle connections of one upstream group, keyed by peer address."""

    __slots__ = ("size", "idle_timeout", "max_requests", "_idle", "hits", "misses", "_fresh")

    def __init__(self, size: int, idle_timeout: float = IDLE_TIMEOUT,
                 max_requests: int = MAX_REQUESTS) -> None:
        self.size = size
        self.idle_timeout = idle_timeout
        # idle for at most this long: taken without a liveness check (when the caller allows)
        self._fresh = min(FRESH, idle_timeout)
        self.max_requests = max_requests
        self._idle: list[UpConn] = []  # oldest first
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, check: bool = True) -> UpConn | None:
        """An idle connection to ``key`` that still looks alive, or None.

        A connection idle for less than ``FRESH`` seconds is only checked when ``check`` is
        True (callers that cannot retry a request on a fresh connection); otherwise the
        caller retries once if the upstream had closed it meanwhile (saves a syscall).
        """
        idle = self._idle
        if not idle:
            self.misses += 1
            return None
        now = time.monotonic()
        conn = idle[-1]  # the most recently used: the usual answer, taken without a search
        if conn.key == key and not check and now - conn.idle_since <= self._fresh:
            del idle[-1]
            conn.reused = True
            self.hits += 1
            return conn
        for i in range(len(idle) - 1, -1, -1):
            conn = idle[i]
            if conn.key != key:
                continue
            del idle[i]
            idle_for = now - conn.idle_since
            if idle_for > self.idle_timeout or (
                (check or idle_for > FRESH) and not conn.alive()
            ):
                conn.close()
                continue
            conn.reused = True
            self.hits += 1
            return conn
        self.misses += 1
        return None

    def put(self, conn: UpConn) -> None:
        """Keep ``conn`` for reuse (or close it if the pool is off or it served enough)."""
        conn.requests += 1
        if self.size <= 0 or conn.requests >= self.max_requests:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle = self._idle
        idle.append(conn)
        if len(idle) > self.size:
            idle.pop(0).close()

    def idle_count(self) -> int:
        return len(self._idle)

    def close_all(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
