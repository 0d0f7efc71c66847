"""Metrics of your own, exported beside edgeworker's on ``status = "prometheus"`` locations.

::

    from edgeworker import metrics

    LOGINS = metrics.counter("app_logins_total", "Logins, by result.", labels=("result",))
    QUEUE = metrics.gauge("app_queue_length", "Jobs waiting in this worker's queue.")
    LOOKUP = metrics.histogram("app_lookup_seconds", "Time of a user lookup.",
                               labels=("backend",), buckets=(0.001, 0.01, 0.1, 1))

    def login(req):
        LOGINS.inc(result="ok")
        with ...:
            LOOKUP.observe(0.004, backend="redis")

- ``counter(name, help, labels=(), *, max_label_sets=1000)`` → ``.inc(value=1, **labels)``:
  summed over every worker, kept across reloads and worker restarts;
- ``gauge(name, help, labels=(), *, max_label_sets=1000)`` → ``.set(value, **labels)``,
  ``.inc(value=1, **labels)``, ``.dec(value=1, **labels)``: one value per worker, exported
  with a ``worker`` label (aggregate with ``sum``/``max`` in the query), gone with its worker;
- ``histogram(name, help, labels=(), *, buckets=DEFAULT_BUCKETS, max_label_sets=1000)`` →
  ``.observe(value, **labels)``: bucket counts and sum, summed over every worker.

Define them at import time of a handler module, or in ``init`` / ``init_worker``; defining a
name again with the same kind, labels and buckets returns the same object. Names follow
Prometheus's rules and may not start with ``edgeworker_``. Calls cost a dict lookup and an
addition: the worker flushes them into the status zone with its other counters (every 0.5 s).
Outside a running server (a unit test importing a handler) they count in memory only.
"""

from __future__ import annotations

from typing import Any, cast

from .status.usermetrics import (
    DEFAULT_BUCKETS,
    MAX_LABEL_SETS,
    Counter,
    Gauge,
    Histogram,
    define,
)


def counter(
    name: str, help: str, labels: Any = (), *, max_label_sets: int = MAX_LABEL_SETS
) -> Counter:
    """A counter (see the module docstring). ``ValueError`` for an invalid name or label, a
    name edgeworker keeps, or a name already defined otherwise."""
    return cast(Counter, define("counter", name, help, labels, max_label_sets=max_label_sets))


def gauge(name: str, help: str, labels: Any = (), *, max_label_sets: int = MAX_LABEL_SETS) -> Gauge:
    """A gauge, per worker (see the module docstring)."""
    return cast(Gauge, define("gauge", name, help, labels, max_label_sets=max_label_sets))


def histogram(
    name: str,
    help: str,
    labels: Any = (),
    *,
    buckets: Any = DEFAULT_BUCKETS,
    max_label_sets: int = MAX_LABEL_SETS,
) -> Histogram:
    """A histogram with ``buckets`` (strictly increasing upper bounds, +Inf implied)."""
    return cast(
        Histogram,
        define("histogram", name, help, labels, buckets=buckets, max_label_sets=max_label_sets),
    )


__all__ = [
    "DEFAULT_BUCKETS",
    "MAX_LABEL_SETS",
    "Counter",
    "Gauge",
    "Histogram",
    "counter",
    "gauge",
    "histogram",
]
