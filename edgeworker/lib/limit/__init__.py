"""Rate and concurrency limiters on a shared dict (per node) or Redis (cluster-wide).

The Python counterpart of ``lua-resty-limit-traffic``, with its weak spots fixed::

    from edgeworker.lib import limit

    per_ip = limit.FixedWindow("redis:default", limit=60, window=60)      # 60 per minute
    def access(req):
        res = per_ip.incoming(req.binary_remote_addr)
        if not res.allowed:
            req.exit(429, headers={"Retry-After": str(res.retry_after)})

Limiters (each takes ``store`` first: a ``shm.SharedDict``, ``"shm:NAME"``, ``"redis:NAME"``,
or a redis-py client):

- :class:`LeakyBucket` — ``limit_req`` (nginx/``resty.limit.req``): ``rate`` req/s, ``burst``
  extra requests that are delayed (``res.delay`` seconds; the caller sleeps, or passes
  ``nodelay=True`` to let them through at once), more is rejected.
- :class:`FixedWindow` — ``resty.limit.count``: ``limit`` requests per ``window`` seconds,
  windows aligned to the clock (Kong's model).
- :class:`SlidingWindow` — the two-window weighted counter (Kong RLA, ``limits``): smoother
  than a fixed window, O(1) memory per key.
- :class:`Concurrency` — ``resty.limit.conn``: at most ``max`` (+``burst`` delayed) requests in
  flight; call :meth:`Concurrency.leaving` when the request ends (log phase) iff
  ``res.committed``.
- :func:`combine` — ``resty.limit.traffic.combine``: several limiters, all or nothing.

``incoming(key, commit=True)`` returns a :class:`Result`; a rejection is ``res.allowed ==
False``, not an exception. ``commit=False`` is a dry run.

Correctness: on a shared dict every update is one atomic primitive (``incr`` with
``init``/``init_ttl``, incr-first then undo on reject) so W workers never overshoot, except the
leaky bucket whose two-field state is updated under a short per-key shared-dict lock (resty's
get-then-set races). On Redis every limiter is one Lua script (``EVALSHA``, reloaded on
``NOSCRIPT``) that reads the server's clock (``TIME``), so instances with skewed clocks agree and
no key is ever left without a TTL (no INCR-then-EXPIRE window).

Failures: when the store fails (Redis down or slower than its ``timeout``, shared dict full),
``fail="open"`` (default) allows the request, ``fail="closed"`` rejects it, ``fail="raise"``
raises :class:`StoreError`; the result carries ``.error``. Errors are logged at most once per
10 s per limiter.
"""

from __future__ import annotations

from .declarative import make_access
from .limiters import Concurrency, FixedWindow, LeakyBucket, SlidingWindow, combine
from .store import Result, StoreError

__all__ = [
    "Concurrency",
    "FixedWindow",
    "LeakyBucket",
    "Result",
    "SlidingWindow",
    "StoreError",
    "combine",
    "make_access",
]
