"""edgeworker: a programmable edge server for Python (the OpenResty model on gevent workers).

The public API for handler code::

    import edgeworker
    edgeworker.shared["counters"].incr(key, 1, init=0)   # shared dicts (shm.SharedDict)
    edgeworker.timer.at(0, push_metrics, data)           # per-worker timers
    edgeworker.worker.id, edgeworker.worker.count, edgeworker.worker.exiting()
    edgeworker.log.info("...")                           # the error log
    edgeworker.now(), edgeworker.sleep(0.1)
    edgeworker.redis.client("default")                  # redis-py on this worker's pool
    edgeworker.metrics.counter("app_hits_total", "Hits.", labels=("page",)).inc(page="/")

    from edgeworker import Request                       # the type of a handler's argument
    def greet(req: Request) -> str: ...

Importing this package imports no network library (gevent only with ``edgeworker.timer``).
"""

from typing import TYPE_CHECKING

from .errors import ConfigError, EdgeworkerError, PhaseError, ProcessExiting, TooManyTimers
from .runtime import log, now, shared, sleep, worker

if TYPE_CHECKING:  # at run time loaded on first use, by __getattr__
    from .request import Request

__version__ = "0.1.0"


def __getattr__(name: str):
    # the timer facade imports gevent: load it on first use only
    if name == "timer":
        from .timers import timer

        return timer
    if name == "Request":
        from .request import Request

        return Request
    if name in ("redis", "http", "metrics"):  # redis-py and the HTTP client load on first use
        import importlib

        return importlib.import_module(__name__ + "." + name)
    raise AttributeError(f"module 'edgeworker' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "EdgeworkerError",
    "PhaseError",
    "ProcessExiting",
    "Request",
    "TooManyTimers",
    "log",
    "http",
    "metrics",
    "now",
    "redis",
    "shared",
    "sleep",
    "timer",
    "worker",
]
