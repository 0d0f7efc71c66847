"""The limiters: ``FixedWindow``, ``SlidingWindow``, ``LeakyBucket``, ``Concurrency`` and
``combine`` (see the package's docstring)."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Sequence
from typing import Any

from ... import runtime
from .._util import QuietLog
from .store import Result, StoreError, _bkey, _Store, _store_errors

__all__ = ["Concurrency", "FixedWindow", "LeakyBucket", "SlidingWindow", "combine"]

_STORE_ERRORS: tuple[type[BaseException], ...] | None = None


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


#: The start of every time-based script: ``now``, Redis's clock in milliseconds.
_LUA_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# ------------------------------------------------------------------------------ fixed window
_FIXED_LUA = _LUA_NOW + """local window, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
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

    def _result(self, ok: int, used: int, reset: float, cost: int) -> Result:
        """A Redis script's answer: allowed, ``used`` of the limit, ``reset`` seconds left."""
        return Result(bool(ok), self.limit, self.limit - used, reset, self.window,
                      committed=bool(ok) and cost > 0)


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
        return self._result(ok, c, reset_ms / 1000.0, cost)


# ------------------------------------------------------------------------------ sliding window
_SLIDING_LUA = _LUA_NOW + """local window, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
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
        return self._result(ok, est, reset, cost)


# ------------------------------------------------------------------------------ leaky bucket
_BUCKET_LUA = _LUA_NOW + """local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
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

