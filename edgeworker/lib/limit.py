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

import math
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

from .. import runtime
from ..http.fields import accel as _speedups
from ._util import QuietLog, count_event

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


class StoreError(Exception):
    """The limiter's store failed (Redis unreachable or too slow, shared dict full…)."""


class Result:
    """What a limiter decided for one request.

    - ``allowed``: let the request through;
    - ``delay``: seconds the caller should wait before serving it (leaky bucket burst,
      concurrency burst); 0 otherwise;
    - ``limit``: the quota of the policy (requests per ``window``; for a concurrency limiter the
      maximum in flight);
    - ``remaining``: requests left in the quota after this one (never negative);
    - ``reset``: seconds until quota comes back (end of the window, or until the bucket allows
      the next request);
    - ``window``: the policy window in seconds;
    - ``retry_after``: whole seconds (≥ 1) a rejected client should wait (``Retry-After``);
    - ``committed``: this request was counted (matters for :meth:`Concurrency.leaving`);
    - ``error``: the store exception when the decision came from the fail mode, else None.
    """

    __slots__ = ("allowed", "delay", "limit", "remaining", "reset", "window", "committed",
                 "error")

    def __init__(self, allowed: bool, limit: float, remaining: float, reset: float,
                 window: float, delay: float = 0.0, committed: bool = False,
                 error: BaseException | None = None) -> None:
        self.allowed = allowed
        self.delay = delay
        self.limit = limit
        self.remaining = max(0, int(remaining))
        self.reset = max(0.0, reset)
        self.window = window
        self.committed = committed
        self.error = error

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset))

    def __repr__(self) -> str:
        return (f"Result(allowed={self.allowed}, delay={self.delay:.3f}, limit={self.limit}, "
                f"remaining={self.remaining}, reset={self.reset:.3f}, error={self.error!r})")


# ------------------------------------------------------------------------------ stores
def _is_redis(obj: Any) -> bool:
    return hasattr(obj, "register_script")


class _Store:
    """Resolves ``store`` lazily (after fork) to a shared dict or a redis client."""

    def __init__(self, store: Any) -> None:
        self.spec = store
        self.kind = "redis" if (_is_redis(store) or str(store).startswith("redis:")) else "shm"
        if isinstance(store, str):
            kind, sep, name = store.partition(":")
            if not sep or kind not in ("shm", "redis") or not name:
                raise ValueError(f'invalid store "{store}": expected "shm:NAME" or "redis:NAME"')
        self._obj: Any = None if isinstance(store, str) else store
        self._scripts: dict[str, Any] = {}
        self._lean = False  # self._obj is an edgeworker.resp.Pool
        self._pid = os.getpid()

    @property
    def name(self) -> str:
        if isinstance(self.spec, str):
            return self.spec
        return f"{self.kind}:{getattr(self.spec, 'name', type(self.spec).__name__)}"

    def get(self) -> Any:
        """The shared dict, or the redis client: for ``"redis:NAME"`` with a plain URL this
        worker's lean pool (:mod:`edgeworker.resp`), else its redis-py client. Resolved again
        in a forked child."""
        obj = self._obj
        if obj is None or (self.kind == "redis" and isinstance(self.spec, str)
                           and os.getpid() != self._pid):
            name = self.spec.partition(":")[2]
            self._lean = False
            if self.kind == "shm":
                obj = runtime.shared[name]
            else:
                from .. import redis as ew_redis
                from .. import resp

                obj = resp.pool(name)
                if obj is None:
                    obj = ew_redis.client(name)
                else:
                    self._lean = True
            self._obj = obj
            self._pid = os.getpid()
            self._scripts.clear()
        return obj

    def script(self, name: str, src: str) -> Any:
        """A redis-py ``Script`` (EVALSHA; on NOSCRIPT it loads the script and retries)."""
        client = self.get()
        s = self._scripts.get(name)
        if s is None or s.registered_client is not client:
            s = self._scripts[name] = client.register_script(src)
        return s

    def run(self, name: str, src: str, keys: list[bytes], args: list[Any]) -> Any:
        """``EVALSHA`` the script; on ``NOSCRIPT`` (Redis restarted, ``SCRIPT FLUSH``,
        failover) load it and run it again. A plain client takes the short path: one pooled
        connection, one command, no redis-py command layers (about a third less CPU per call);
        a cluster client goes through redis-py's ``Script`` (key-slot routing). A lean pool
        (plain ``redis://``/``unix://`` URL) does it without redis-py's layers; the replies
        are the same (``int``, ``bytes``, ``list``)."""
        pool = self.get()
        if self._lean:
            script = self._scripts.get(name)
            if script is None:
                from ..resp import Script

                script = self._scripts[name] = Script(src)
            return pool.evalsha(script, keys, args)
        script = self.script(name, src)
        pool = getattr(script.registered_client, "connection_pool", None)
        if pool is None:
            return script(keys=keys, args=args)
        from redis.exceptions import NoScriptError, ResponseError

        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                return conn.read_response()
            except NoScriptError:
                conn.send_command("SCRIPT", "LOAD", src)
                conn.read_response()
                conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return conn.read_response()
        except ResponseError:
            raise  # an error reply: the connection is still in a clean state
        except BaseException:
            conn.disconnect()  # a half-read reply must never reach the next user
            raise
        finally:
            pool.release(conn)


def _store_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, StoreError]
    try:
        import shm

        errs.append(shm.NoMemory)
    except Exception:  # pragma: no cover
        pass
    try:
        import redis

        errs.append(redis.RedisError)
    except Exception:  # pragma: no cover
        pass
    return tuple(errs)


_STORE_ERRORS: tuple[type[BaseException], ...] | None = None


def _bkey(key: Any) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8", "surrogateescape")
    return str(key).encode()


# ------------------------------------------------------------------------------ base
class _Limiter:
    kind = "limit"

    def __init__(self, store: Any, *, prefix: str | None, fail: str) -> None:
        if fail not in ("open", "closed", "raise"):
            raise ValueError(f'invalid fail "{fail}": expected "open", "closed" or "raise"')
        self.store = _Store(store)
        self.prefix = (f"ew:{self.kind}:" if prefix is None else prefix).encode()
        self.fail = fail
        self._log = QuietLog(runtime.log, f"{type(self).__name__} on {self.store.name}")

    def incoming(self, key: Any, commit: bool = True) -> Result:
        """Count one request for ``key`` (``commit=False``: only look) and decide."""
        global _STORE_ERRORS
        k = self.prefix + _bkey(key)
        try:
            if self.store.kind == "shm":
                return self._shm(self.store.get(), k, commit)
            return self._redis(k, 1 if commit else 0)
        except Exception as exc:
            if _STORE_ERRORS is None:
                _STORE_ERRORS = _store_errors()
            if not isinstance(exc, _STORE_ERRORS):
                raise
            return self._failed(exc)

    def uncommit(self, key: Any) -> None:
        """Undo one committed request for ``key`` (used by :func:`combine`). Store errors are
        logged, never raised."""
        k = self.prefix + _bkey(key)
        try:
            if self.store.kind == "shm":
                self._shm_uncommit(self.store.get(), k)
            else:
                self._redis(k, -1)
        except Exception as exc:
            self._log.error("uncommit failed: %s: %s", type(exc).__name__, exc)

    def _failed(self, exc: BaseException) -> Result:
        self._log.error("store failed (%s): %s: %s", "allowing" if self.fail == "open"
                        else "rejecting", type(exc).__name__, exc)
        if self.fail == "raise":
            raise StoreError(f"{self.store.name}: {exc}") from exc
        return Result(self.fail == "open", self._quota(), 0, 1.0, self._window(), error=exc)

    # subclasses
    def _quota(self) -> float:
        raise NotImplementedError

    def _window(self) -> float:
        raise NotImplementedError

    def _shm(self, d: Any, k: bytes, commit: bool) -> Result:
        raise NotImplementedError

    def _shm_uncommit(self, d: Any, k: bytes) -> None:
        raise NotImplementedError

    def _redis(self, k: bytes, cost: int) -> Result:
        raise NotImplementedError


# ------------------------------------------------------------------------------ fixed window
_FIXED_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local reset_at = (math.floor(now / window) + 1) * window
local k = KEYS[1]
if cost > 0 then
  local c = redis.call('INCRBY', k, cost)
  if redis.call('PTTL', k) < 0 then redis.call('PEXPIREAT', k, reset_at) end
  if c > limit then
    redis.call('DECRBY', k, cost)
    return {0, c - cost, reset_at - now}
  end
  return {1, c, reset_at - now}
elseif cost == 0 then
  local c = tonumber(redis.call('GET', k) or '0') + 1
  return {c <= limit and 1 or 0, c, reset_at - now}
else
  local c = tonumber(redis.call('GET', k) or '0')
  if c > 0 then c = redis.call('DECRBY', k, -cost) end
  return {1, c, reset_at - now}
end
"""


class _WindowLimiter(_Limiter):
    """A limit of ``limit`` requests per ``window`` seconds (the two window limiters)."""

    def __init__(self, store: Any, limit: int, window: float, *, prefix: str | None = None,
                 fail: str = "open") -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        super().__init__(store, prefix=prefix, fail=fail)
        self.limit = int(limit)
        self.window = float(window)
        self._window_ms = max(1, int(round(self.window * 1000)))

    def _quota(self) -> float:
        return self.limit

    def _window(self) -> float:
        return self.window


class FixedWindow(_WindowLimiter):
    """At most ``limit`` requests per ``window`` seconds per key (``resty.limit.count``).

    Windows are aligned to the clock (a 60 s window resets at each whole minute, on the Redis
    server's clock for a Redis store), as Kong does. Rejected requests are not counted.
    """

    kind = "count"

    def _shm(self, d: Any, k: bytes, commit: bool) -> Result:
        now = time.time()
        reset = self.window - (now % self.window)
        if not commit:
            c = (d.get(k) or 0) + 1
            return Result(c <= self.limit, self.limit, self.limit - c, reset, self.window)
        c = d.incr(k, 1, init=0, init_ttl=reset)
        if c > self.limit:
            d.incr(k, -1, init=0, init_ttl=reset)
            return Result(False, self.limit, 0, reset, self.window)
        return Result(True, self.limit, self.limit - c, reset, self.window, committed=True)

    def _shm_uncommit(self, d: Any, k: bytes) -> None:
        if (d.get(k) or 0) > 0:
            d.incr(k, -1, init=0, init_ttl=self.window)

    def _redis(self, k: bytes, cost: int) -> Result:
        ok, c, reset_ms = self.store.run(
            "fixed", _FIXED_LUA, [k], [self._window_ms, self.limit, cost]
        )
        return Result(bool(ok), self.limit, self.limit - c, reset_ms / 1000.0, self.window,
                      committed=bool(ok) and cost > 0)


# ------------------------------------------------------------------------------ sliding window
_SLIDING_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local k = KEYS[1]
local wid = math.floor(now / window)
local v = redis.call('HMGET', k, 'w', 'c', 'p')
local w0, c, p = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
if w0 == nil then c, p = 0, 0
elseif w0 == wid - 1 then p, c = c, 0
elseif w0 ~= wid then c, p = 0, 0 end
local elapsed = now - wid * window
local est = math.floor(p * (window - elapsed) / window) + c
if cost > 0 then
  if est + cost > limit then return {0, est, elapsed, p, c} end
  c = c + cost
elseif cost == 0 then
  return {est + 1 <= limit and 1 or 0, est + 1, elapsed, p, c}
else
  if c > 0 then c = c - 1 end
end
redis.call('HSET', k, 'w', wid, 'c', c, 'p', p)
redis.call('PEXPIRE', k, 2 * window)
return {1, est + math.max(cost, 0), elapsed, p, c}
"""


class SlidingWindow(_WindowLimiter):
    """At most about ``limit`` requests in any ``window`` seconds (sliding window counter).

    The count is the current clock-aligned window plus the previous one weighted by how much of
    it still overlaps the sliding window: ``floor(prev * (window - elapsed) / window) + cur``.
    Exact within the first window of a key, smooth afterwards; O(1) memory per key.
    """

    kind = "sliding"

    def _reset(self, elapsed: float, prev: int, cur: int) -> float:
        """Seconds until one more request fits."""
        w = self.window
        room = self.limit - cur  # what the weighted previous window must fall to (< room)
        if room >= 1 and prev > 0:
            # floor(prev * (w - e - t) / w) <= room - 1  ⇐  prev * (w - e - t) / w < room
            t = w * (1 - room / prev) - elapsed
            if t <= w - elapsed:
                return max(0.001, t + 0.001)
        # wait for the next window, where this window's count is the weighted one
        if cur < self.limit:
            return w - elapsed
        t_next = w * (1 - (self.limit - 0) / cur) if cur else 0.0
        return (w - elapsed) + max(0.001, t_next + 0.001)

    def _shm(self, d: Any, k: bytes, commit: bool) -> Result:
        now = time.time()
        w = self.window
        wid = int(now // w)
        elapsed = now - wid * w
        kc, kp = k + b":%d" % wid, k + b":%d" % (wid - 1)
        prev = d.get(kp) or 0
        weighted = int(prev * (w - elapsed) / w)
        if not commit:
            c = d.get(kc) or 0
            est = weighted + c + 1
            return Result(est <= self.limit, self.limit, self.limit - est,
                          self._reset(elapsed, prev, c), w)
        c = d.incr(kc, 1, init=0, init_ttl=2 * w)
        est = weighted + c
        if est > self.limit:
            d.incr(kc, -1, init=0, init_ttl=2 * w)
            return Result(False, self.limit, 0, self._reset(elapsed, prev, c - 1), w)
        return Result(True, self.limit, self.limit - est, w - elapsed, w, committed=True)

    def _shm_uncommit(self, d: Any, k: bytes) -> None:
        wid = int(time.time() // self.window)
        kc = k + b":%d" % wid
        if (d.get(kc) or 0) > 0:
            d.incr(kc, -1, init=0, init_ttl=2 * self.window)

    def _redis(self, k: bytes, cost: int) -> Result:
        ok, est, elapsed_ms, prev, cur = self.store.run(
            "sliding", _SLIDING_LUA, [k], [self._window_ms, self.limit, cost]
        )
        elapsed = elapsed_ms / 1000.0
        if ok and cost >= 0:
            reset = self.window - elapsed
        else:
            reset = self._reset(elapsed, prev, cur)
        return Result(bool(ok), self.limit, self.limit - est, reset, self.window,
                      committed=bool(ok) and cost > 0)


# ------------------------------------------------------------------------------ leaky bucket
_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local k = KEYS[1]
local v = redis.call('HMGET', k, 'e', 'l')
local excess, last = tonumber(v[1]), tonumber(v[2])
if cost < 0 then
  if excess == nil then return {1, 0} end
  excess = math.max(excess - 1000, 0)
  redis.call('HSET', k, 'e', excess)
  return {1, excess}
end
local e = 0
if excess ~= nil then
  local elapsed = math.abs(now - last)
  e = math.max(excess - rate * elapsed + 1000, 0)
end
if e > burst then return {0, e} end
if cost > 0 then
  redis.call('HSET', k, 'e', e, 'l', now)
  redis.call('PEXPIRE', k, math.ceil(e / rate) + 1000)
end
return {1, e}
"""

_BUCKET = struct.Struct("<dd")  # excess (milli-requests), last (epoch ms)


class LeakyBucket(_Limiter):
    """``limit_req``: ``rate`` requests per second per key, ``burst`` more queued.

    The nginx algorithm (``resty.limit.req``): ``excess = max(excess - rate·elapsed + 1, 0)``.
    ``excess <= burst``: allowed, with ``res.delay = excess / rate`` seconds (0 for requests
    within the rate) that the caller should wait (``edgeworker.sleep(res.delay)``) to smooth
    the flow, or ignore with ``nodelay=True`` (then ``res.delay`` is 0). Over the burst:
    rejected. Idle keys expire once their excess has leaked away (resty's never do).
    On a shared dict the state is read and written under a per-key lock (an ``add`` with a
    100 ms expiry), so concurrent workers never lose updates.
    """

    kind = "req"

    def __init__(self, store: Any, rate: float, burst: float = 0, *, nodelay: bool = False,
                 prefix: str | None = None, fail: str = "open") -> None:
        if rate <= 0 or burst < 0:
            raise ValueError("rate must be > 0 and burst >= 0")
        super().__init__(store, prefix=prefix, fail=fail)
        self.rate = float(rate)
        self.burst = float(burst)
        self.nodelay = nodelay

    def _quota(self) -> float:
        return int(self.burst) + 1

    def _window(self) -> float:
        return max(1.0, (self.burst + 1) / self.rate)

    def _result(self, ok: bool, e_milli: float, committed: bool) -> Result:
        excess = e_milli / 1000.0
        if ok:
            delay = 0.0 if self.nodelay else excess / self.rate
            # until the bucket is empty again
            return Result(True, self._quota(), self.burst - excess, excess / self.rate,
                          self._window(), delay=delay, committed=committed)
        # the next request is allowed once excess - rate·t + 1 <= burst
        wait = (excess - 1 - self.burst + 1) / self.rate
        return Result(False, self._quota(), 0, max(wait, 1.0 / self.rate / 1000),
                      self._window())

    def _lock(self, d: Any, k: bytes) -> tuple[bytes, int]:
        lk = k + b"\x00lock"
        token = os.getpid()
        deadline = time.monotonic() + 0.2
        delay = 0.0002
        while not d.add(lk, token, 0.1):
            if time.monotonic() > deadline:
                raise StoreError("leaky bucket: timed out waiting for the key lock")
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
        return lk, token

    def _unlock(self, d: Any, lk: bytes, token: int) -> None:
        if d.get(lk) == token:
            d.delete(lk)

    def _shm(self, d: Any, k: bytes, commit: bool) -> Result:
        lk, token = self._lock(d, k)
        try:
            now = time.time() * 1000.0
            raw = d.get(k)
            rate_m = self.rate * 1000.0
            if raw is None:
                e = 0.0
            else:
                excess, last = _BUCKET.unpack(raw)
                e = max(excess - rate_m * abs(now - last) / 1000.0 + 1000.0, 0.0)
            if e > self.burst * 1000.0:
                return self._result(False, e, False)
            if commit:
                d.set(k, _BUCKET.pack(e, now), e / rate_m + 1.0)
            return self._result(True, e, commit)
        finally:
            self._unlock(d, lk, token)

    def _shm_uncommit(self, d: Any, k: bytes) -> None:
        lk, token = self._lock(d, k)
        try:
            raw = d.get(k)
            if raw is not None:
                excess, last = _BUCKET.unpack(raw)
                excess = max(excess - 1000.0, 0.0)
                d.set(k, _BUCKET.pack(excess, last), excess / (self.rate * 1000.0) + 1.0)
        finally:
            self._unlock(d, lk, token)

    def _redis(self, k: bytes, cost: int) -> Result:
        ok, e = self.store.run(
            "bucket", _BUCKET_LUA, [k], [repr(self.rate), repr(self.burst * 1000.0), cost]
        )
        return self._result(bool(ok), float(e), bool(ok) and cost > 0)


# ------------------------------------------------------------------------------ concurrency
_CONN_LUA = """
local k, cost = KEYS[1], tonumber(ARGV[1])
local limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
if cost < 0 then
  local c = tonumber(redis.call('GET', k) or '0')
  if c <= 1 then redis.call('DEL', k) return 0 end
  return redis.call('DECR', k)
end
if cost == 0 then
  local c = tonumber(redis.call('GET', k) or '0') + 1
  return {c <= limit and 1 or 0, c}
end
local c = redis.call('INCR', k)
redis.call('PEXPIRE', k, ttl)
if c > limit then
  redis.call('DECR', k)
  return {0, c}
end
return {1, c}
"""


class Concurrency(_Limiter):
    """``resty.limit.conn``: at most ``max`` requests in flight per key, plus ``burst`` that
    are delayed (``res.delay = unit_delay · floor((conn - 1) / max)``), more are rejected.

    Call :meth:`leaving` exactly once for every request whose result has ``committed=True``
    (typically in the log phase). The counter is incremented first and decremented back on
    rejection, so workers never overshoot. On Redis the counter's TTL (``ttl``, default 300 s)
    is refreshed by every request, so counts lost to crashed workers vanish once a key is idle
    that long; on a shared dict ``leaving`` never takes the counter below zero.
    """

    kind = "conn"

    def __init__(self, store: Any, max: int, burst: int = 0, unit_delay: float = 0.0, *,
                 ttl: float = 300.0, prefix: str | None = None, fail: str = "open") -> None:
        if max < 1 or burst < 0:
            raise ValueError("max must be >= 1 and burst >= 0")
        super().__init__(store, prefix=prefix, fail=fail)
        self.max = int(max)
        self.burst = int(burst)
        self.unit_delay = float(unit_delay)
        self.ttl = float(ttl)

    def _quota(self) -> float:
        return self.max

    def _window(self) -> float:
        return self.ttl

    def _decide(self, ok: bool, conn: int, committed: bool) -> Result:
        if not ok:
            return Result(False, self.max, 0, max(self.unit_delay, 1.0), self._window())
        delay = self.unit_delay * ((conn - 1) // self.max) if conn > self.max else 0.0
        return Result(True, self.max, self.max - conn, 0.0, self._window(), delay=delay,
                      committed=committed)

    def _shm(self, d: Any, k: bytes, commit: bool) -> Result:
        cap = self.max + self.burst
        if not commit:
            c = (d.get(k) or 0) + 1
            return self._decide(c <= cap, c, False)
        c = d.incr(k, 1, init=0)
        if c > cap:
            d.incr(k, -1, init=0)
            return self._decide(False, c, False)
        return self._decide(True, c, True)

    def _shm_uncommit(self, d: Any, k: bytes) -> None:
        if d.incr(k, -1, init=0) < 0:
            d.incr(k, 1, init=0)

    def _redis(self, k: bytes, cost: int) -> Result:
        if cost < 0:
            self.store.run("conn", _CONN_LUA, [k], [-1, 0, 0])
            return Result(True, self.max, 0, 0.0, self._window())
        ok, c = self.store.run(
            "conn", _CONN_LUA, [k], [cost, self.max + self.burst, int(self.ttl * 1000)]
        )
        return self._decide(bool(ok), c, bool(ok) and cost > 0)

    def leaving(self, key: Any, latency: float | None = None) -> None:
        """One request for ``key`` finished (only for results with ``committed=True``).

        ``latency`` (seconds) updates the moving estimate used for ``unit_delay``
        (``(latency + unit_delay) / 2``, per worker). Store errors are logged, not raised.
        """
        self.uncommit(key)
        if latency is not None:
            self.unit_delay = (latency + self.unit_delay) / 2


# ------------------------------------------------------------------------------ combine
def combine(limiters: Sequence[_Limiter], keys: Sequence[Any]) -> tuple[Result, list[Result]]:
    """Apply several limiters to one request, all or nothing (``resty.limit.traffic``).

    Every limiter but the last is first asked with ``commit=False``; if any would reject, that
    result is returned and nothing is counted. Then they are committed in order (the last
    one's dry run is its commit); if one rejects now (a race), the ones already committed are
    uncommitted. Returns ``(overall, results)``: ``overall`` is the first rejection, or an
    allowed result with the largest ``delay`` and the smallest ``remaining``.
    """
    if len(limiters) != len(keys) or not limiters:
        raise ValueError("combine needs one key per limiter and at least one limiter")
    n = len(limiters)
    for i in range(n - 1):
        r = limiters[i].incoming(keys[i], commit=False)
        if not r.allowed:
            return r, [r]
    results: list[Result] = []
    for i in range(n):
        r = limiters[i].incoming(keys[i], commit=True)
        results.append(r)
        if not r.allowed:
            for j in range(i):
                if results[j].committed:
                    limiters[j].uncommit(keys[j])
            return r, results
    best = min(results, key=lambda r: (r.remaining, -r.delay))
    delay = max(r.delay for r in results)
    overall = Result(True, best.limit, best.remaining, best.reset, best.window, delay=delay,
                     committed=True)
    return overall, results


# ------------------------------------------------------------------------------ declarative
_PERIOD_NAMES = {1.0: "Second", 60.0: "Minute", 3600.0: "Hour", 86400.0: "Day"}


def make_access(loc: Any, app: Any) -> Any:
    """The access handler for a location's declarative ``limit = { … }``.

    Counts requests per ``key`` in clock-aligned fixed windows of the rate's period (Kong's
    model): ``"60r/m"`` allows 60 requests per minute, plus ``burst`` more; the key is prefixed
    with the location so two locations never share counters. Allowed responses carry
    ``RateLimit-Policy``, ``RateLimit`` (IETF draft) and ``X-RateLimit-Limit-<Period>`` /
    ``X-RateLimit-Remaining-<Period>`` (Kong); a rejection answers ``status`` (429) with
    ``Retry-After`` and JSON ``{"error":"rate_limited"}``. When the store fails: ``fail =
    "open"`` lets the request through (no RateLimit headers), ``"closed"`` answers 503 with
    ``Retry-After: 1`` and ``{"error":"rate_limit_unavailable"}``.
    """
    conf = loc.limit
    rate = conf.rate
    count, period = float(rate.count), float(rate.period)
    if count >= 1 and count.is_integer():
        quota, window = int(count), period
    elif count >= 1:
        quota, window = int(count), period * int(count) / count
    else:
        quota, window = 1, period / count
    quota += int(conf.burst)
    if conf.store.startswith("redis:"):
        from .. import redis as ew_redis

        ew_redis.configure(app.cfg.redis)
    prefix = f"ew:limit:{loc.path}:"
    lim = FixedWindow(conf.store, quota, window, prefix=prefix, fail="raise")
    template = conf.key
    fast_ip = template == "$binary_remote_addr"
    status = conf.status
    fail_open = conf.fail == "open"
    policy = f'"default";q={quota};w={max(1, int(round(window)))}'
    period_name = _PERIOD_NAMES.get(window)
    x_limit = f"X-RateLimit-Limit-{period_name}" if period_name else "X-RateLimit-Limit"
    x_remaining = (f"X-RateLimit-Remaining-{period_name}" if period_name
                   else "X-RateLimit-Remaining")
    # the four headers as one prepared block (names are tokens, values digits and quotes):
    # the server sends it as is unless a handler takes req.resp_headers. The block is
    # parts[0] + remaining + parts[1] + reset + parts[2] + remaining.
    parts = (f'\r\nRateLimit-Policy: {policy}\r\nRateLimit: "default";r=', ";t=",
             f"\r\n{x_limit}: {quota}\r\n{x_remaining}: ")
    lines = "%d".join(part.replace("%", "%%") for part in parts + ("",)).encode("latin-1")
    reject_body = b'{"error":"rate_limited"}'
    down_body = b'{"error":"rate_limit_unavailable"}'
    store_errors = _store_errors()
    shm_store = lim.store.kind == "shm"
    bprefix = prefix.encode()
    _time = time.time
    _ceil = math.ceil

    incr = None  # the shared dict's bound incr, once resolved (shm store)

    def get_incr() -> Any:
        nonlocal incr
        if incr is None:
            incr = lim.store.get().incr
        return incr

    def unavailable(req: Any) -> None:
        """The store failed (already logged): let the request through, or answer 503."""
        if not fail_open:
            req.exit(503, down_body, headers={"Retry-After": "1"},
                     content_type="application/json")

    def failed(req: Any, exc: BaseException) -> None:
        """The shared dict failed (full…)."""
        lim._log.error("store failed: %s: %s", type(exc).__name__, exc)
        unavailable(req)

    def finish(req: Any, k: bytes, count: int, left: float) -> None:
        """After the shared dict's incr: undo a rejected request's count, answer."""
        if count > quota:
            get_incr()(k, -1, 0, left)
        respond(req, count, _ceil(left))  # reset: whole seconds, >= 1

    def respond(req: Any, count: int, reset: int) -> None:
        remaining = quota - count if count < quota else 0
        block = lines % (remaining, reset, remaining)
        if req.resp_fields is None:  # (Request.add_header_lines, inline)
            req.header_lines += block
        else:
            req.add_header_lines(block)
        if count > quota:
            count_event("limit_rejections")
            req.exit(status, reject_body, headers={"Retry-After": str(reset)},
                     content_type="application/json")

    def access(req: Any) -> None:
        if fast_ip:
            key = req.binary_remote_addr
        else:
            key = req.var.expand(template)
        if shm_store:  # the common case: one atomic incr, no Result object
            left = window - _time() % window  # seconds to the window's end, > 0
            k = bprefix + (key if key.__class__ is bytes else _bkey(key))
            try:
                count = (incr or get_incr())(k, 1, 0, left)
            except store_errors as exc:
                return failed(req, exc)
            return finish(req, k, count, left)
        try:
            res = lim.incoming(key)
        except StoreError:
            return unavailable(req)
        respond(req, quota - res.remaining if res.allowed else quota + 1, res.retry_after)

    if shm_store and fast_ip and _speedups is not None:
        # the same steps in C for an allowed request (edgeworker/_speedups.c); it calls
        # failed, finish and access above for everything else
        return _speedups.WindowLimit(get_incr, _time, bprefix, quota, window,
                                     tuple(p.encode("latin-1") for p in parts),
                                     tuple(store_errors), failed, finish, access)
    return access
