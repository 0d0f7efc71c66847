"""Fuzz target for the shared dict: random operation sequences on tiny zones.

Zones of 16–48 KiB with values up to 12 KiB force eviction (``set``), ``NoMemory``
(``safe_set``, values larger than a zone) and slab reuse on every few steps. After *every*
operation ``verify()`` must find nothing wrong, and a few facts must hold whatever happened:
a value just stored reads back, a failed store leaves the old value, a count is exact.

Default run: ``EW_FUZZ_EXAMPLES`` sequences (200) of up to 60 operations. Longer by hand:
``EW_FUZZ_EXAMPLES=20000 pytest tests/unit/test_fuzz_shm.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shm.dict as shm_dict
from shm import IsAList, NoMemory, NotAList, NotANumber, NotFound, SharedDict

from ..shm_helpers import FakeClock

EXAMPLES = int(os.environ.get("EW_FUZZ_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=2000,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEYS = st.one_of(
    st.sampled_from(["a", "b", "c", "n", "list", "é"] + [f"k{i}" for i in range(24)]),
    st.binary(min_size=1, max_size=300),
)
VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=64),
    st.binary(max_size=64),
    st.integers(0, 12 * 1024).map(lambda n: b"v" * n),  # big: eviction, NoMemory
)
TTL = st.sampled_from([0, 0, 0, 0.001, 0.5, 2])

OPS = st.one_of(
    st.tuples(st.sampled_from(["set", "safe_set", "add", "safe_add", "replace"]), KEYS, VALUES,
              TTL),
    st.tuples(st.just("incr"), KEYS, st.integers(-5, 5), st.sampled_from([None, 0, 10])),
    st.tuples(st.sampled_from(["lpush", "rpush"]), KEYS, VALUES),
    st.tuples(st.sampled_from(["lpop", "rpop", "delete", "get", "get_stale", "ttl", "llen"]),
              KEYS),
    st.tuples(st.just("expire"), KEYS, TTL),
    st.tuples(st.just("advance"), st.sampled_from([0.0005, 0.3, 1, 5])),
    st.tuples(st.sampled_from(["flush_expired", "get_keys", "flush_all"])),
)

# what an operation may raise on a full or tiny zone, or on a value of the wrong kind
EXPECTED = (NoMemory, NotANumber, NotAList, IsAList, NotFound, OverflowError)


def _apply(sd: SharedDict, clock: FakeClock, op: tuple) -> None:
    name = op[0]
    if name == "advance":
        clock.advance(op[1])
        return
    if name in ("flush_expired", "get_keys", "flush_all"):
        getattr(sd, name)()
        return
    key = op[1]
    if name in ("set", "safe_set", "add", "safe_add", "replace"):
        _, _, value, ttl = op
        before = sd.get(key)
        try:
            getattr(sd, name)(key, value, ttl)
        except NoMemory:
            if name in ("set", "safe_set") and before is not None and not ttl:
                # "the old value then stays" (unless it was evicted earlier in this very call:
                # set may evict others, never the key it replaces)
                assert sd.get(key) == before, (op, before)
            raise
        if name in ("set", "safe_set") and value is not None:
            got = sd.get(key)
            assert got == value, (op, got)
        return
    if name == "incr":
        _, _, delta, init = op
        if init is None:
            sd.incr(key, delta)
        else:
            before = sd.get(key)
            new = sd.incr(key, delta, init=init)
            if before is None:
                assert new == init + delta
            elif isinstance(before, int) and not isinstance(before, bool):
                assert new == before + delta
        return
    if name in ("lpush", "rpush"):
        n_before = sd.llen(key)
        n = getattr(sd, name)(key, op[2])
        assert n == n_before + 1
        return
    if name == "expire":
        sd.expire(key, op[2])
        return
    getattr(sd, name)(key)


def _run(size: int, ops: list[tuple]) -> None:
    clock = FakeClock()
    orig = shm_dict._now_ns
    shm_dict._now_ns = clock
    try:
        sd = SharedDict.from_buffer(bytearray(size))
        for i, op in enumerate(ops):
            try:
                _apply(sd, clock, op)
            except EXPECTED:
                pass
            problems = sd.verify()
            assert problems == [], (i, op, problems)
        # whatever happened, the zone is still usable
        sd.flush_all()
        sd.set("after", "ok")
        assert sd.get("after") == "ok"
        assert sd.verify() == []
    finally:
        shm_dict._now_ns = orig


@SETTINGS
@given(size=st.sampled_from([16384, 20480, 32768, 49152]),
       ops=st.lists(OPS, min_size=1, max_size=60))
def test_random_operations_on_tiny_zones_keep_the_structure_valid(size: int,
                                                                   ops: list[tuple]) -> None:
    _run(size, ops)


@SETTINGS
@given(ops=st.lists(st.tuples(st.sampled_from(["set", "safe_set"]),
                              st.sampled_from([f"k{i}" for i in range(40)]),
                              st.integers(0, 6000).map(lambda n: b"x" * n), st.just(0)),
                    min_size=10, max_size=120))
def test_eviction_churn_of_mixed_sizes(ops: list[tuple]) -> None:
    """Many stores of mixed sizes into the smallest zone: slabs of every class fill, get
    evicted and reused."""
    _run(16384, ops)


def test_regression_value_larger_than_the_zone() -> None:
    """A value bigger than the whole zone is NoMemory for set and safe_set, the zone intact."""
    _run(16384, [("set", "a", b"1", 0), ("set", "a", b"v" * 20000, 0),
                 ("safe_set", "b", b"v" * 20000, 0), ("get", "a")])


def test_regression_list_growth_until_full() -> None:
    _run(16384, [("rpush", "list", b"v" * 1000)] * 40 + [("lpop", "list")] * 5
         + [("rpush", "list", b"w" * 3000)] * 10)
