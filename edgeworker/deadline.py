"""Coarse I/O deadlines for sockets (client and upstream), without a timer per wait.

A gevent socket with a timeout creates, starts and cancels a timer every time it waits
(about 15 µs per wait). The proxy waits on its upstream once or more per request, so instead
its sockets have no timeout and a greenlet arms a deadline here around each read or write
(a dict store). One repeating loop timer per worker (every ``RESOLUTION`` seconds) throws
``Expired`` into any greenlet still waiting past its deadline — as gevent's own ``Timeout``
does, from the hub. Deadlines therefore fire up to ``RESOLUTION`` late, which is fine for
connect/read/send timeouts of seconds (nginx's timers are coarse too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

RESOLUTION = 0.1


def read_waiter(sock: Any) -> Callable[[], Any] | None:
    """A callable that blocks the current greenlet until the gevent socket ``sock`` is
    readable: the hub's wait on the socket's own read watcher (what its ``recv`` does after an
    ``EAGAIN``), so a wait costs one switch and no extra system call. None for a socket that
    has no such watcher (not a gevent socket)."""
    watcher = getattr(sock, "_read_event", None)
    hub = getattr(sock, "hub", None)
    if watcher is None or hub is None:
        return None
    return partial(hub.wait, watcher)


class Expired(Exception):
    """Thrown into a greenlet whose armed deadline passed."""


class Watchdog:
    """Deadlines of the greenlets of one worker (see the module docstring)."""

    __slots__ = ("armed", "_timer")

    def __init__(self) -> None:
        self.armed: dict[Any, float] = {}
        self._timer: Any = None

    def arm(self, greenlet: Any, seconds: float) -> None:
        """``greenlet`` must not wait longer than ``seconds`` from now (until ``disarm``)."""
        self.armed[greenlet] = time.monotonic() + seconds
        if self._timer is None:
            self.start()

    def start(self) -> None:
        """Start the checking timer in this process's hub (``arm`` does it on first use; a
        hot path that stores into ``armed`` itself calls it once beforehand)."""
        if self._timer is None:
            from gevent import get_hub

            self._timer = get_hub().loop.timer(RESOLUTION, RESOLUTION)
            self._timer.start(self._check)

    def disarm(self, greenlet: Any) -> None:
        self.armed.pop(greenlet, None)

    def _check(self) -> None:
        if not self.armed:
            return
        now = time.monotonic()
        expired = [g for g, deadline in self.armed.items() if deadline <= now]
        for g in expired:
            del self.armed[g]
            if not g.dead:
                g.throw(Expired())


WATCHDOG = Watchdog()
