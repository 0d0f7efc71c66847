"""A per-worker LRU cache with TTLs (``resty.lrucache``).

::

    from edgeworker.lib.lrucache import LRUCache

    users = LRUCache(10_000)              # at most 10 000 entries in this worker
    users.set("42", {"name": "alice"}, ttl=30)
    users.get("42")                       # {"name": "alice"}, or None once expired/evicted
    value, flags, stale = users.get_stale("42")   # an expired value is still readable

Values are any Python objects, kept by reference (no serialization, no copy): do not mutate a
cached value unless that is what you want every later reader to see. The cache lives in one
worker process (each worker has its own; use a shared dict to share across workers). It is not
locked: under gevent, operations never yield, so each one is atomic within the worker.

Expired entries are not removed at once (so ``get_stale`` can serve them); they count in
``count()`` until overwritten, deleted or evicted — the least recently used entry is evicted when
``set`` adds a key to a full cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["LRUCache"]

_NEVER = float("inf")


class LRUCache:
    """At most ``max_items`` entries (``ValueError`` if < 1); see the module docstring."""

    __slots__ = ("_data", "_max", "_clock")

    def __init__(self, max_items: int, *, clock: Any = time.monotonic) -> None:
        if not isinstance(max_items, int) or max_items < 1:
            raise ValueError("max_items must be an int >= 1")
        self._data: OrderedDict[Hashable, tuple[Any, float, int]] = OrderedDict()
        self._max = max_items
        self._clock = clock

    def set(self, key: Hashable, value: Any, ttl: float | None = None, flags: int = 0) -> None:
        """Store ``value`` for ``ttl`` seconds (None or 0: no expiry; negative: ``ValueError``)
        with a user integer ``flags``; the key becomes the most recently used."""
        if ttl is None or ttl == 0:
            expires = _NEVER
        elif ttl < 0:
            raise ValueError("ttl must be >= 0")
        else:
            expires = self._clock() + ttl
        data = self._data
        if key in data:
            data.move_to_end(key)
        data[key] = (value, expires, flags)
        if len(data) > self._max:
            data.popitem(last=False)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The live value for ``key`` (it becomes the most recently used), else ``default``."""
        entry = self._data.get(key)
        if entry is None:
            return default
        if entry[1] is not _NEVER and entry[1] <= self._clock():
            return default
        self._data.move_to_end(key)
        return entry[0]

    def get_stale(self, key: Hashable) -> tuple[Any, int, bool]:
        """``(value, flags, stale)``: ``stale`` is True for an expired entry still held;
        ``(None, 0, False)`` when the key is absent."""
        entry = self._data.get(key)
        if entry is None:
            return None, 0, False
        stale = entry[1] is not _NEVER and entry[1] <= self._clock()
        if not stale:
            self._data.move_to_end(key)
        return entry[0], entry[2], stale

    def ttl(self, key: Hashable) -> float | None:
        """Seconds left (``inf`` without expiry, ≤ 0 once expired), None if absent."""
        entry = self._data.get(key)
        if entry is None:
            return None
        return entry[1] - self._clock() if entry[1] is not _NEVER else _NEVER

    def delete(self, key: Hashable) -> None:
        """Remove ``key`` (absent is fine)."""
        self._data.pop(key, None)

    def count(self) -> int:
        """Entries held, expired ones included."""
        return len(self._data)

    def capacity(self) -> int:
        return self._max

    def flush_all(self) -> None:
        """Drop every entry."""
        self._data.clear()

    def get_keys(self, max_count: int = 0) -> list[Hashable]:
        """Keys from the most to the least recently used (``max_count`` 0: all)."""
        keys = []
        for k in reversed(self._data):
            keys.append(k)
            if max_count and len(keys) >= max_count:
                break
        return keys

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        entry = self._data.get(key)  # type: ignore[call-overload]
        return entry is not None and (entry[1] is _NEVER or entry[1] > self._clock())
