"""Per-worker timers: ``edgeworker.timer.at`` / ``.every`` (OpenResty's ``ngx.timer``).

One :class:`Timers` instance lives in each worker process. It is created after fork (after
gevent monkey-patching and ``hub.reinit()``) and published with :func:`install`; the master
never has one, so timer calls there (during ``init``) raise :class:`PhaseError`.

Semantics (follow ``ngx.timer`` unless said otherwise):

* ``at(delay, fn, *args)`` runs ``fn(premature, *args)`` in its own greenlet after ``delay``
  seconds. ``delay == 0`` runs it as soon as the caller yields, in creation order.
* ``every(interval, fn, *args)`` runs ``fn(premature, *args)`` every ``interval`` seconds. Runs
  never overlap: the next run is armed when the previous one returns (``ngx.timer.every`` arms it
  before, so slow callbacks overlap there).
* ``pending_count()`` counts timers created and not yet started, including due callbacks waiting
  for a running slot; an ``every`` timer counts as pending for its whole life (like OpenResty,
  where its next occurrence is always armed). ``running_count()`` counts callbacks running now
  (their own greenlet only, not greenlets they spawn).
* Over ``max_pending`` pending timers, creation raises :class:`TooManyTimers`
  ("too many pending timers").
* A callback that falls due while ``max_running`` callbacks run waits in a FIFO queue and runs
  when a slot frees: none is dropped (OpenResty drops it with an alert).
* An exception in a callback is logged with its traceback (``log.error``); it never reaches the
  worker or the timer machinery, and an ``every`` timer keeps its schedule.
* Graceful exit (:meth:`Timers.shutdown`): every armed timer fires at once with
  ``premature=True``; an ``every`` timer fires once prematurely and stops (one that is running
  then gets its premature call after the current run returns). Creating a timer with a delay > 0
  raises :class:`ProcessExiting`; ``at(0, ...)`` still works (OpenResty since v0.9.3) and, as
  there, runs with ``premature=False`` because it is not cut short. Shutdown waits for callbacks
  until its timeout, then kills them: it never hangs on a callback that yields. (A callback that
  never yields, a pure CPU loop, blocks the whole worker; only a signal from outside ends it.)
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent import GreenletExit
from gevent.event import Event
from gevent.greenlet import Greenlet

from edgeworker.errors import PhaseError, ProcessExiting, TooManyTimers

__all__ = ["TimerHandle", "Timers", "install", "installed", "timer"]

# handle states
_ARMED = "armed"  # waiting for its delay (a loop timer or a run_callback is set)
_DUE = "due"  # its time came; queued for a running slot
_RUNNING = "running"  # its callback runs now
_DONE = "done"  # finished for good
_CANCELLED = "cancelled"

#: seconds given to killed callbacks to die once ``shutdown``'s timeout has passed
KILL_GRACE = 0.5


def _describe(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    return f"{module}.{name}" if module else name


def _check_seconds(value: Any, api: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{api}: {what} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{api}: {what} must be finite")
    return value


class TimerHandle:
    """What ``timer.at`` / ``timer.every`` return; :meth:`cancel` stops the timer."""

    __slots__ = ("_timers", "fn", "args", "interval", "_state", "_watcher", "_final", "_id")

    def __init__(
        self, timers: Timers, fn: Callable[..., Any], args: tuple[Any, ...], interval: float | None
    ) -> None:
        self._timers = timers
        self.fn = fn
        self.args = args
        self.interval = interval  # None for a one-shot ``at`` timer
        self._state = _ARMED
        self._watcher: Any = None
        self._final = False  # an ``every`` timer's premature (last) run has started
        self._id = next(timers._ids)

    @property
    def periodic(self) -> bool:
        """True for an ``every`` timer."""
        return self.interval is not None

    @property
    def active(self) -> bool:
        """True while the callback may still run (again)."""
        if self._state in (_ARMED, _DUE):
            return True
        return self._state == _RUNNING and self.periodic and not self._final

    def cancel(self) -> bool:
        """Cancel the timer.

        Returns True if it was pending (armed, or due and waiting for a running slot; for an
        ``every`` timer: not finished for good) and will now never run again; False if it had
        already run, was running its one shot, or was cancelled before. A running callback is not
        interrupted; an ``every`` timer cancelled during a run is not re-armed.
        """
        return self._timers._cancel(self)

    def __repr__(self) -> str:
        kind = f"every {self.interval}s" if self.periodic else "at"
        return f"<TimerHandle {kind} {_describe(self.fn)} {self._state}>"


class Timers:
    """The timers of one worker process. Use from greenlets of the process that created it."""

    def __init__(self, max_pending: int, max_running: int, log: logging.Logger) -> None:
        """``max_pending``/``max_running`` are the config's ``max_pending_timers`` and
        ``max_running_timers`` (both >= 1); ``log`` receives callback errors and shutdown news."""
        if max_pending < 1 or max_running < 1:
            raise ValueError("max_pending and max_running must be >= 1")
        self.max_pending = max_pending
        self.max_running = max_running
        self.log = log
        #: True once graceful exit began (:meth:`shutdown`)
        self.exiting = False
        self._closed = False  # shutdown finished: nothing can run any more
        self._pid = os.getpid()
        self._ids = itertools.count()
        self._pending: dict[int, TimerHandle] = {}  # creation order
        self._queue: deque[tuple[TimerHandle, bool]] = deque()  # due, waiting for a slot
        self._running: dict[Greenlet, TimerHandle] = {}
        self._idle = Event()
        self._idle.set()

    # -- public API ------------------------------------------------------------------------

    def at(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(premature, *args)`` in its own greenlet after ``delay`` seconds.

        Raises ``ValueError`` if ``delay`` < 0 (``TypeError`` if it is not a number or ``fn`` is
        not callable), :class:`TooManyTimers` over ``max_pending``, :class:`ProcessExiting` when
        the worker is exiting and ``delay`` > 0 (or after shutdown finished), and
        :class:`PhaseError` when used from another process than the one that created it.
        """
        delay = _check_seconds(delay, "timer.at", "delay")
        if delay < 0:
            raise ValueError("timer.at: delay must be >= 0")
        return self._schedule("timer.at", fn, args, delay, None)

    def every(self, interval: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(premature, *args)`` every ``interval`` seconds, never overlapping.

        The first run is ``interval`` seconds from now; each next run is armed ``interval``
        seconds after the previous one returns (raised or not). Raises ``ValueError`` if
        ``interval`` <= 0, and otherwise as :meth:`at` (``ProcessExiting`` whenever exiting).
        """
        interval = _check_seconds(interval, "timer.every", "interval")
        if interval <= 0:
            raise ValueError("timer.every: interval must be > 0")
        return self._schedule("timer.every", fn, args, interval, interval)

    def _schedule(
        self, what: str, fn: Callable[..., Any], args: tuple, delay: float, interval: float | None
    ) -> TimerHandle:
        """Check ``fn`` and the limits (see :meth:`at`), then arm its first run in ``delay``."""
        self._check_new(what, fn, delay)
        handle = TimerHandle(self, fn, args, interval)
        self._pending[handle._id] = handle
        self._arm(handle, delay)
        return handle

    def pending_count(self) -> int:
        """Timers created and not yet started (due ones waiting for a slot included)."""
        return len(self._pending)

    def running_count(self) -> int:
        """Callbacks running now."""
        return len(self._running)

    def shutdown(self, timeout: float) -> None:
        """Graceful exit: fire every armed timer now with ``premature=True`` and wait.

        Marks the timers exiting, starts the premature callbacks (``max_running`` still applies;
        the rest queue), then waits until no callback runs or waits, or ``timeout`` seconds pass.
        Past the timeout it kills the running callbacks (``GreenletExit``), waits at most
        :data:`KILL_GRACE` more for them, drops the queued ones and logs what it did: it returns
        within ``timeout + KILL_GRACE`` seconds. Afterwards every new timer raises
        :class:`ProcessExiting`. Call it from a greenlet (not from the hub). Idempotent.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if not self.exiting:
            self.exiting = True
            fired = 0
            for handle in list(self._pending.values()):
                if handle._state == _ARMED:
                    self._close_watcher(handle)
                    handle._state = _DUE
                    self._queue.append((handle, True))
                    fired += 1
            if fired:
                self.log.info("firing %d pending timer(s) prematurely for graceful exit", fired)
            self._pump()
            self._update_idle()
        while not self._idle.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._idle.wait(remaining)
        if not self._idle.is_set():
            self._kill_all(timeout)
        self._closed = True

    # -- internals ---------------------------------------------------------------------------

    def _check_new(self, api: str, fn: Any, delay: float) -> None:
        if not callable(fn):
            raise TypeError(f"{api}: callback must be callable, not {type(fn).__name__}")
        if os.getpid() != self._pid:
            raise PhaseError(
                f"{api} is not allowed here: these timers belong to process {self._pid}, "
                f"not to this forked child {os.getpid()}"
            )
        if self._closed or (self.exiting and (delay > 0 or api == "timer.every")):
            raise ProcessExiting("process exiting")
        if len(self._pending) >= self.max_pending:
            raise TooManyTimers("too many pending timers")

    def _arm(self, handle: TimerHandle, delay: float) -> None:
        loop = gevent.get_hub().loop
        handle._state = _ARMED
        if delay == 0:
            # FIFO with other callbacks: zero-delay timers run in creation order once we yield
            handle._watcher = loop.run_callback(self._due, handle)
        else:
            watcher = loop.timer(delay)
            watcher.start(self._due, handle, update=True)
            handle._watcher = watcher

    @staticmethod
    def _close_watcher(handle: TimerHandle) -> None:
        watcher, handle._watcher = handle._watcher, None
        if watcher is not None:
            watcher.stop()
            close = getattr(watcher, "close", None)
            if close is not None:
                close()

    def _due(self, handle: TimerHandle) -> None:
        # runs in the hub: must not block or raise
        if handle._state != _ARMED or self._closed:
            return
        self._close_watcher(handle)
        handle._state = _DUE
        self._queue.append((handle, False))
        self._idle.clear()
        self._pump()

    def _pump(self) -> None:
        if self._closed:
            return
        while self._queue and len(self._running) < self.max_running:
            handle, premature = self._queue.popleft()
            if handle._state == _DUE:
                self._start(handle, premature)

    def _start(self, handle: TimerHandle, premature: bool) -> None:
        handle._state = _RUNNING
        if premature and handle.periodic:
            handle._final = True
        if not handle.periodic or handle._final:
            self._pending.pop(handle._id, None)
        greenlet = Greenlet(self._run, handle, premature)
        self._running[greenlet] = handle
        greenlet.rawlink(self._finished)
        self._idle.clear()
        greenlet.start()

    def _run(self, handle: TimerHandle, premature: bool) -> None:
        try:
            handle.fn(premature, *handle.args)
        except GreenletExit:
            raise
        except (Exception, SystemExit):
            self.log.error(
                "timer callback %s failed%s",
                _describe(handle.fn),
                " (premature run)" if premature else "",
                exc_info=True,
            )

    def _finished(self, greenlet: Greenlet) -> None:
        # rawlink callback, runs in the hub once the callback's greenlet is dead
        handle = self._running.pop(greenlet, None)
        if handle is not None and handle._state == _RUNNING:
            if not handle.periodic or handle._final or self._closed:
                handle._state = _DONE
            elif self.exiting:
                # its one premature call, after the current run (runs never overlap)
                handle._state = _DUE
                self._queue.append((handle, True))
            else:
                self._arm(handle, handle.interval or 0.0)
        self._pump()
        self._update_idle()

    def _update_idle(self) -> None:
        if self._running or self._queue:
            self._idle.clear()
        else:
            self._idle.set()

    def _cancel(self, handle: TimerHandle) -> bool:
        state = handle._state
        if state == _ARMED:
            self._close_watcher(handle)
        elif state == _DUE:
            self._queue = deque(entry for entry in self._queue if entry[0] is not handle)
        elif not (state == _RUNNING and handle.periodic and not handle._final):
            return False
        handle._state = _CANCELLED
        self._pending.pop(handle._id, None)
        self._update_idle()
        return True

    def _kill_all(self, timeout: float) -> None:
        self._closed = True  # from now on nothing starts, nothing is re-armed
        running = list(self._running)
        queued = [h for h, _ in self._queue if h._state == _DUE]
        self.log.warning(
            "timers: graceful timeout (%ss) passed with %d callback(s) running and %d waiting; "
            "killing the running ones, dropping the waiting ones",
            timeout,
            len(running),
            len(queued),
        )
        for handle in queued:
            handle._state = _CANCELLED
        self._queue.clear()
        self._pending.clear()
        if running:
            try:
                gevent.killall(running, block=True, timeout=KILL_GRACE)
            except gevent.Timeout:
                self.log.error(
                    "timers: %d callback(s) ignored GreenletExit; abandoning them",
                    sum(1 for g in running if not g.dead),
                )
        for greenlet in running:
            handle = self._running.pop(greenlet, None)
            if handle is not None and handle._state == _RUNNING:
                handle._state = _DONE
        self._queue.clear()
        self._pending.clear()
        self._idle.set()


# -- the module-level facade: ``edgeworker.timer`` ---------------------------------------------

_current: Timers | None = None
_current_pid: int | None = None


def install(timers: Timers | None) -> None:
    """Make ``timers`` this process's timers (the worker calls it after fork); None removes them."""
    global _current, _current_pid
    _current = timers
    _current_pid = os.getpid() if timers is not None else None


def installed() -> Timers | None:
    """This process's :class:`Timers`, or None (master, or a child forked after install)."""
    if _current is None or _current_pid != os.getpid():
        return None
    return _current


def _require(api: str) -> Timers:
    timers = installed()
    if timers is None:
        raise PhaseError(f"{api} is not allowed in the master (init)")
    return timers


class _TimerAPI:
    """``edgeworker.timer``: forwards to the current worker's :class:`Timers`."""

    __slots__ = ()

    def at(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """See :meth:`Timers.at`; raises :class:`PhaseError` outside a worker."""
        return _require("timer.at").at(delay, fn, *args)

    def every(self, interval: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """See :meth:`Timers.every`; raises :class:`PhaseError` outside a worker."""
        return _require("timer.every").every(interval, fn, *args)

    def pending_count(self) -> int:
        """Pending timers of this worker; 0 outside a worker."""
        timers = installed()
        return timers.pending_count() if timers is not None else 0

    def running_count(self) -> int:
        """Running timer callbacks of this worker; 0 outside a worker."""
        timers = installed()
        return timers.running_count() if timers is not None else 0

    def __repr__(self) -> str:
        return "<edgeworker.timer>"


timer = _TimerAPI()
