"""Process-wide state behind the module-level API (``edgeworker.shared``, ``worker``, ``now``…).

The master fills ``shared`` before it forks; each worker fills ``worker`` right after the fork.
Nothing here imports gevent or a network library, so the master stays unpatched.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger("edgeworker")
"""The error log (``error_log`` in the config). Handlers may use it as any ``logging.Logger``."""


class SharedDicts(dict):
    """The ``[shared_dict]`` zones of the running server, by name.

    ``edgeworker.shared["counters"]`` and ``edgeworker.shared.counters`` are the same
    ``shm.SharedDict``. A name that is not configured raises ``KeyError`` (``AttributeError``
    for attribute access) naming the zones that exist. Read-only for handlers: the server
    installs the zones. A ``dict`` underneath, so ``shared["name"]`` costs no Python frame;
    attribute access finds a zone first, even one named like a ``dict`` method
    (``shared.values`` is the zone ``values`` when there is one, else the method).
    """

    def _install(self, zones: dict[str, Any]) -> None:
        dict.clear(self)
        dict.update(self, zones)

    def __missing__(self, name: str) -> Any:
        known = ", ".join(sorted(self)) or "none"
        raise KeyError(f"no shared dict {name!r} (configured: {known})")

    def __getattribute__(self, name: str) -> Any:
        if name[:1] != "_":
            zone = dict.get(self, name)
            if zone is not None:
                return zone
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            if name[:1] == "_":
                raise
            known = ", ".join(sorted(self)) or "none"
            raise AttributeError(f"no shared dict {name!r} (configured: {known})") from None

    def _read_only(self, *args: Any, **kw: Any) -> None:
        raise TypeError("edgeworker.shared is read-only: zones come from [shared_dict]")

    __setitem__ = __delitem__ = clear = update = pop = popitem = setdefault = _read_only  # type: ignore[assignment]
    __ior__ = _read_only  # type: ignore[assignment]


class WorkerInfo:
    """``edgeworker.worker``: who this process is.

    ``id`` is 0..count-1 in a worker (kept by a respawned worker) and ``None`` in the master;
    ``pid`` the current process id; ``count`` the configured number of workers;
    ``generation`` counts reloads (0 for the first set of workers).
    """

    def __init__(self) -> None:
        self.id: int | None = None
        self.count: int = 0
        self.generation: int = 0
        self._exiting = False

    @property
    def pid(self) -> int:
        return os.getpid()

    def exiting(self) -> bool:
        """True once this worker has begun its graceful (or fast) exit."""
        return self._exiting


shared = SharedDicts()
worker = WorkerInfo()
config: Any = None
"""The ``edgeworker.config.Config`` this process runs: set by the master before ``init`` (and
again before each reload's ``init``) and by each worker at boot."""


def now() -> float:
    """Epoch seconds as a float (``ngx.now()``)."""
    return time.time()


def sleep(seconds: float) -> None:
    """Sleep without blocking the worker: other requests keep running (``ngx.sleep``).

    ``0`` just yields. A negative value raises ``ValueError("invalid sleep duration")``.
    """
    if seconds < 0:
        raise ValueError("invalid sleep duration")
    # In a worker, time.sleep is gevent's cooperative sleep (monkey-patched after fork).
    time.sleep(seconds)
