"""Coarse I/O deadlines for greenlets, without a timer per wait.

A gevent socket with a timeout creates, starts and cancels a timer every time it waits
(about 15 µs per wait). Instead, the sockets of ``edgeworker.io`` have no timeout and a greenlet
stores its deadline in a ``Watchdog``'s ``armed`` dict around each wait (a dict store). One
repeating loop timer per watchdog (every ``resolution`` seconds) throws ``Expired`` into any
greenlet still waiting past its deadline, as gevent's own ``Timeout`` does, from the hub.
Deadlines therefore fire up to ``resolution`` late: 100 ms for client and upstream connections
(timeouts of seconds; nginx's timers are coarse too), a few ms for the Redis multiplexer.
"""

from __future__ import annotations

import time
from typing import Any

from greenlet import getcurrent

from ..errors import Expired

#: the resolution of the worker's watchdog for client and upstream connections
RESOLUTION = 0.1

_monotonic = time.monotonic


class Watchdog:
    """Deadlines of the greenlets of one worker (see the module docstring).

    ``idle_stop``: the timer stops itself after that many seconds with nothing armed (``arm``
    starts it again); None keeps it running once started, so that a hot path may store into
    ``armed`` directly after one ``start()``.
    """

    __slots__ = ("armed", "resolution", "_idle_checks", "_idle", "_timer")

    def __init__(self, resolution: float = RESOLUTION, idle_stop: float | None = None) -> None:
        self.armed: dict[Any, float] = {}
        self.resolution = resolution
        self._idle_checks = None if idle_stop is None else max(1, round(idle_stop / resolution))
        self._idle = 0
        self._timer: Any = None

    def arm(self, greenlet: Any, seconds: float) -> None:
        """``greenlet`` must not wait longer than ``seconds`` from now (until ``disarm``)."""
        self.armed[greenlet] = _monotonic() + seconds
        if self._timer is None:
            self.start()

    def start(self) -> None:
        """Start the checking timer in this process's hub (``arm`` does it on first use; a
        hot path that stores into ``armed`` itself calls it once beforehand)."""
        if self._timer is None:
            from gevent import get_hub

            self._idle = 0
            self._timer = get_hub().loop.timer(self.resolution, self.resolution)
            self._timer.start(self._check)

    def disarm(self, greenlet: Any) -> None:
        self.armed.pop(greenlet, None)

    def wait(self, waiter: Any, seconds: float) -> Any:
        """``waiter.get()`` (a ``gevent.hub.Waiter``), bounded by ``seconds``: ``Expired``."""
        g = getcurrent()
        armed = self.armed
        armed[g] = _monotonic() + seconds
        if self._timer is None:
            self.start()
        try:
            return waiter.get()
        finally:
            armed.pop(g, None)

    def _check(self) -> None:
        armed = self.armed
        if not armed:
            if self._idle_checks is not None:
                self._idle += 1
                if self._idle >= self._idle_checks:
                    self._timer.stop()
                    self._timer.close()
                    self._timer = None
            return
        self._idle = 0
        now = _monotonic()
        for g in [g for g, deadline in armed.items() if deadline <= now]:
            del armed[g]
            if not g.dead:
                g.throw(Expired())


#: the worker's watchdog for client and upstream connections
WATCHDOG = Watchdog(RESOLUTION)
