"""A layered cache (the ``lua-resty-mlcache`` model): worker LRU → shared dict → callback.

::

    from edgeworker.lib.cache import Cache

    users = Cache("users", "cache", ttl=30, neg_ttl=5, resurrect_ttl=30)   # [shared_dict] cache
    def content(req):
        user = users.get(req.args.get("id"), load_user, req.args.get("id"))
        ...

- **L1** a per-worker :class:`~edgeworker.lib.lrucache.LRUCache` of ``lru_size`` entries (the
  Python objects themselves, no decoding);
- **L2** the shared dict: one encoded copy for all workers (msgpack by default, so values are
  ``None``/``bool``/``int``/``float``/``str``/``bytes``/lists/dicts; pass ``encode``/``decode``
  for other types);
- **L3** ``callback(*args)``, run by **one** worker/greenlet at a time per key under a
  shared-dict :class:`~edgeworker.lib.lock.Lock`; the others wait, then read what it stored.

``get`` returns the value; :meth:`Cache.get_with_level` also says where it came from (1, 2, 3;
4 = a stale value served; -1 = miss without callback). A callback returning ``None`` is cached
as a miss for ``neg_ttl`` seconds (negative caching); returning ``WithTTL(value, ttl)``
overrides the ttl (``ttl < 0``: return it but do not cache). If the callback raises and
``resurrect_ttl`` is set, the last (expired) value is served for ``resurrect_ttl`` more seconds
and the error is logged; otherwise the exception propagates. A caller that times out waiting for
the lock gets the stale value too if there is one, else ``LockTimeout``.

Invalidation: ``set``/``delete``/``purge`` change L2 at once and tell the other workers through
an event log in the shared dict (``ipc_shm``, default the cache's own dict); each worker applies
pending events at the start of its next ``get`` (or :meth:`Cache.update`), so L1 is never staler
than that. With ``redis=`` the same events are published on Redis (channel
``ew:cache:<name>``) and every worker of every instance that called :meth:`Cache.subscribe`
drops the key from its L1 and from its node's L2. Delivery is eventual, as mlcache's: an event
evicted from the shared dict or sent while Redis was unreachable can be missed, so keep ttls
bounded.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from .. import runtime
from ._util import QuietLog
from .lock import Lock, LockTimeout
from .lrucache import LRUCache

__all__ = ["Cache", "LockTimeout", "WithTTL"]

_HDR = struct.Struct("<Bdd")  # kind (0 negative, 1 value), stored at (epoch), ttl
_NIL = object()  # a negative (None) entry in L1
_MISS = object()
_SEP = "\x1f"
_EVENT_TTL = 60.0


def _origin() -> str:
    """This node (the workers of one master share the shared dicts): host and master pid."""
    return f"{socket.gethostname()}:{os.getppid()}"


class WithTTL:
    """Returned by a callback to choose the ttl of this value (``ttl < 0``: do not cache)."""

    __slots__ = ("value", "ttl")

    def __init__(self, value: Any, ttl: float) -> None:
        self.value = value
        self.ttl = ttl


class Cache:
    """A named layered cache in shared dict ``shm`` (a name or a ``SharedDict``)."""

    def __init__(
        self,
        name: str,
        shm: Any,
        *,
        lru_size: int = 1000,
        ttl: float = 30.0,
        neg_ttl: float = 5.0,
        resurrect_ttl: float | None = None,
        shm_locks: Any = None,
        ipc_shm: Any = None,
        lock_timeout: float = 5.0,
        lock_exptime: float = 30.0,
        redis: Any = None,
        encode: Callable[[Any], bytes] = msgspec.msgpack.encode,
        decode: Callable[[bytes], Any] = msgspec.msgpack.decode,
    ) -> None:
        if not name or _SEP in name:
            raise ValueError("invalid cache name")
        if ttl < 0 or neg_ttl < 0:
            raise ValueError("ttl and neg_ttl must be >= 0 (0 = no expiry)")
        self.name = name
        self._specs = {"l2": shm, "locks": shm_locks or shm, "ipc": ipc_shm or shm}
        self._dicts: dict[str, Any] = {}
        self.lru = LRUCache(lru_size)
        self.ttl = float(ttl)
        self.neg_ttl = float(neg_ttl)
        self.resurrect_ttl = resurrect_ttl
        self.lock_timeout = float(lock_timeout)
        self.lock_exptime = float(lock_exptime)
        self._encode, self._decode = encode, decode
        self._prefix = f"ew:mlc:{name}:"
        self._lock_prefix = f"ew:mlc:lock:{name}:"
        self._ipc_idx = f"ew:mlc:ipc:{name}"
        self._ipc_last: int | None = None
        self._pid = os.getpid()
        self._redis_spec = redis
        self._channel = f"ew:cache:{name}"
        self._subscriber: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._log = QuietLog(runtime.log, f"cache {name}")

    # ------------------------------------------------------------------ plumbing
    def _dict(self, which: str) -> Any:
        d = self._dicts.get(which)
        if d is None:
            spec = self._specs[which]
            d = self._dicts[which] = runtime.shared[spec] if isinstance(spec, str) else spec
        return d

    def _redis(self) -> Any:
        spec = self._redis_spec
        if isinstance(spec, str):
            from .. import redis as ew_redis

            return ew_redis.client(spec.partition(":")[2] if ":" in spec else spec)
        return spec

    def _l2_get(self, key: str) -> tuple[Any, float] | None:
        raw = self._dict("l2").get(self._prefix + key)
        if raw is None:
            return None
        kind, at, ttl = _HDR.unpack_from(raw)
        left = (at + ttl - time.time()) if ttl > 0 else 0.0
        if ttl > 0 and left <= 0:
            return None  # logically expired; kept a while longer to be served stale
        value = _NIL if kind == 0 else self._decode(raw[_HDR.size:])
        return value, left

    def _l2_stale(self, key: str) -> Any:
        raw, _flags, _stale = self._dict("l2").get_stale(self._prefix + key)
        if raw is None:
            return _MISS
        kind = raw[0]
        return None if kind == 0 else self._decode(raw[_HDR.size:])

    def _store(self, key: str, value: Any, ttl: float) -> None:
        if value is None:
            raw = _HDR.pack(0, time.time(), ttl)
        else:
            raw = _HDR.pack(1, time.time(), ttl) + self._encode(value)
        keep = ttl + self.resurrect_ttl if ttl > 0 and self.resurrect_ttl else ttl
        try:
            self._dict("l2").set(self._prefix + key, raw, keep)
        except Exception as exc:  # NoMemory: still serve from L1
            self._log.error("shared dict set failed: %s: %s", type(exc).__name__, exc)
        self.lru.set(key, _NIL if value is None else value, ttl or None)

    # ------------------------------------------------------------------ reads
    def get(self, key: str, callback: Callable[..., Any] | None = None, *args: Any,
            ttl: float | None = None, neg_ttl: float | None = None) -> Any:
        """The value for ``key`` (``None`` for a miss or a cached negative); see the module
        docstring. Exceptions of the callback propagate unless a stale value is served."""
        return self.get_with_level(key, callback, *args, ttl=ttl, neg_ttl=neg_ttl)[0]

    def get_with_level(self, key: str, callback: Callable[..., Any] | None = None, *args: Any,
                       ttl: float | None = None, neg_ttl: float | None = None,
                       ) -> tuple[Any, int]:
        """``(value, hit_level)``: 1 L1, 2 shared dict, 3 callback, 4 stale, -1 miss."""
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty str")
        self.update()
        v = self.lru.get(key, _MISS)
        if v is not _MISS:
            return (None if v is _NIL else v), 1
        found = self._l2_get(key)
        if found is not None:
            return self._promote(key, *found), 2
        if callback is None:
            return None, -1
        lock = Lock(self._dict("locks"), exptime=self.lock_exptime, timeout=self.lock_timeout)
        try:
            lock.lock(self._lock_prefix + key)
        except LockTimeout:
            stale = self._l2_stale(key)
            if stale is not _MISS and self.resurrect_ttl is not None:
                return stale, 4
            raise
        try:
            found = self._l2_get(key)  # filled while we waited for the lock
            if found is not None:
                return self._promote(key, *found), 2
            try:
                value = callback(*args)
            except Exception as exc:
                stale = self._l2_stale(key) if self.resurrect_ttl is not None else _MISS
                if stale is _MISS:
                    raise
                self._log.error("callback failed, serving the stale value for %ss: %s: %s",
                                self.resurrect_ttl, type(exc).__name__, exc)
                self._store(key, stale, float(self.resurrect_ttl))
                return stale, 4
            if isinstance(value, WithTTL):
                value, t = value.value, float(value.ttl)
            elif value is None:
                t = self.neg_ttl if neg_ttl is None else float(neg_ttl)
            else:
                t = self.ttl if ttl is None else float(ttl)
            if t >= 0:
                self._store(key, value, t)
            return value, 3
        finally:
            lock.unlock()

    def _promote(self, key: str, value: Any, left: float) -> Any:
        if left >= 0:
            self.lru.set(key, value, left if left > 0 else None)
        return None if value is _NIL else value

    def peek(self, key: str) -> tuple[float | None, Any, bool]:
        """``(ttl_left, value, stale)`` from the shared dict, without promoting to L1 nor
        running anything: ``(None, None, False)`` if absent; ``ttl_left`` 0 = no expiry,
        negative when stale."""
        d = self._dict("l2")
        raw, _flags, stale = d.get_stale(self._prefix + key)
        if raw is None:
            return None, None, False
        kind, at, ttl = _HDR.unpack_from(raw)
        value = None if kind == 0 else self._decode(raw[_HDR.size:])
        left = (at + ttl - time.time()) if ttl > 0 else 0.0
        return left, value, stale or (ttl > 0 and left <= 0)

    # ------------------------------------------------------------------ writes
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` in L2 and this worker's L1 and invalidate ``key`` in the other
        workers' L1 (and other instances, with ``redis``)."""
        self._store(key, value, self.ttl if ttl is None else float(ttl))
        self._broadcast("d", key)

    def delete(self, key: str) -> None:
        """Remove ``key`` from L2 and from every worker's L1 (and other instances)."""
        self._dict("l2").delete(self._prefix + key)
        self.lru.delete(key)
        self._broadcast("d", key)

    def purge(self) -> None:
        """Remove every entry of this cache from L2 and every L1 (scans the shared dict's keys:
        prefer ``delete`` on hot paths)."""
        self._purge_l2()
        self.lru.flush_all()
        self._broadcast("p", "")

    def _purge_l2(self) -> None:
        d = self._dict("l2")
        for k in d.get_keys(0):
            if isinstance(k, str) and k.startswith(self._prefix):
                d.delete(k)

    # ------------------------------------------------------------------ events
    def _broadcast(self, op: str, key: str) -> None:
        d = self._dict("ipc")
        payload = f"{op}{_SEP}{os.getpid()}{_SEP}{key}"
        try:
            idx = d.incr(self._ipc_idx, 1, init=0)
            d.set(f"{self._ipc_idx}:{idx}", payload, _EVENT_TTL)
        except Exception as exc:
            self._log.error("could not broadcast %s: %s: %s", op, type(exc).__name__, exc)
        if self._redis_spec is not None:
            try:
                self._redis().publish(self._channel, f"{op}{_SEP}{_origin()}{_SEP}{key}")
            except Exception as exc:
                self._log.error("could not publish to redis: %s: %s", type(exc).__name__, exc)

    def update(self) -> int:
        """Apply invalidations other workers broadcast since the last call; returns how many
        were applied. Called by every ``get``."""
        pid = os.getpid()
        d = self._dict("ipc")
        idx = d.get(self._ipc_idx) or 0
        if self._ipc_last is None or pid != self._pid:  # first use in this process
            if pid != self._pid:  # forked: the parent's L1 may be stale
                self.lru.flush_all()
            self._ipc_last, self._pid = idx, pid
            return 0
        if idx == self._ipc_last:
            return 0
        if idx < self._ipc_last:  # the dict was flushed: be safe
            self.lru.flush_all()
            self._ipc_last = idx
            return 1
        applied = 0
        mypid = str(pid)
        i = self._ipc_last + 1
        while i <= idx:
            ev = d.get(f"{self._ipc_idx}:{i}")
            if ev is None:
                if i == idx:
                    break  # written a moment after its index: read it next time
                i += 1  # expired or evicted: missed (eventual delivery)
                continue
            op, origin, key = ev.split(_SEP, 2)
            if origin != mypid:
                self._apply_local(op, key)
                applied += 1
            i += 1
        self._ipc_last = i - 1
        return applied

    def _apply_local(self, op: str, key: str) -> None:
        if op == "p":
            self.lru.flush_all()
        else:
            self.lru.delete(key)

    def subscribe(self, wait: float = 2.0) -> bool:
        """Start listening for invalidations from other instances on Redis (once per worker;
        needs ``redis=``). Returns True once subscribed (waits up to ``wait`` seconds); the
        listener reconnects by itself when Redis goes away."""
        if self._redis_spec is None:
            raise ValueError("subscribe() needs Cache(..., redis=...)")
        if self._subscriber is None or not self._subscriber.is_alive():
            self._subscribed.clear()
            self._subscriber = threading.Thread(target=self._listen, daemon=True,
                                                name=f"cache-{self.name}-sub")
            self._subscriber.start()
        return self._subscribed.wait(wait)

    def _listen(self) -> None:
        backoff = 0.1
        while not runtime.worker.exiting():
            pubsub = None
            try:
                pubsub = self._redis().pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(self._channel)
                while not runtime.worker.exiting():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self._subscribed.set()
                        backoff = 0.1
                        continue
                    if msg["type"] != "message":
                        continue
                    data = msg["data"]
                    data = data.decode() if isinstance(data, bytes) else data
                    op, origin, key = data.split(_SEP, 2)
                    if origin == _origin():
                        continue  # our own node: its workers learn through the shared dict
                    if op == "p":
                        self._purge_l2()
                    else:
                        self._dict("l2").delete(self._prefix + key)
                    self._apply_local(op, key)
            except Exception as exc:
                self._subscribed.clear()
                self._log.error("redis subscription lost, retrying: %s: %s",
                                type(exc).__name__, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        self._log.error("closing the redis subscription failed")
