"""edgeworker.lib.lrucache.LRUCache: TTLs, stale reads, LRU eviction."""

from __future__ import annotations

import pytest

from edgeworker.lib.lrucache import LRUCache


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_get_set_delete_count_capacity():
    c = LRUCache(3)
    c.set("a", 1)
    c.set("b", {"x": 1}, flags=7)
    assert c.get("a") == 1 and c.get("b") == {"x": 1}
    assert c.get("zz") is None and c.get("zz", "dflt") == "dflt"
    assert c.count() == 2 == len(c) and c.capacity() == 3
    assert c.get_stale("b") == ({"x": 1}, 7, False)
    c.delete("a")
    c.delete("a")  # absent is fine
    assert c.get("a") is None and "a" not in c and "b" in c
    c.flush_all()
    assert c.count() == 0


def test_ttl_and_stale_read():
    clock = Clock()
    c = LRUCache(10, clock=clock)
    c.set("k", "v", ttl=5, flags=3)
    clock.t += 4.9
    assert c.get("k") == "v" and 0 < c.ttl("k") <= 0.11
    clock.t += 0.2
    assert c.get("k") is None
    assert c.get_stale("k") == ("v", 3, True)
    assert c.count() == 1  # expired entries stay until evicted/overwritten
    assert "k" not in c
    c.set("k", "v2")
    assert c.get("k") == "v2" and c.ttl("k") == float("inf")
    with pytest.raises(ValueError):
        c.set("x", 1, ttl=-1)
    assert c.get_stale("missing") == (None, 0, False)


def test_lru_eviction_order():
    c = LRUCache(3)
    for k in "abc":
        c.set(k, k)
    c.get("a")  # a is now the most recently used
    c.set("d", "d")  # evicts b
    assert c.get("b") is None
    assert c.get_keys() == ["d", "a", "c"]
    assert c.get_keys(2) == ["d", "a"]
    c.set("c", "c2")  # overwrite refreshes recency, no eviction
    assert c.count() == 3 and c.get_keys()[0] == "c"


def test_bad_size():
    with pytest.raises(ValueError):
        LRUCache(0)
