"""Conformance with ngx.shared.DICT's API, case by case (lua-nginx-module t/043-shdict.t as the checklist)."""

from __future__ import annotations

import math

import pytest

import shm
from shm import IsAList, NoMemory, NotAList, NotANumber, NotFound, SharedDict, parse_size

from ..shm_helpers import clock, mkdict, zone_name, zones  # noqa: F401


@pytest.fixture
def d(mkdict):  # noqa: F811
    dd = mkdict("1m")
    yield dd
    assert dd.verify() == []


# ---- values and keys -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        0,
        1,
        -1,
        2**63 - 1,
        -(2**63),
        3.5,
        -0.0,
        float("inf"),
        "",
        "héllo",
        b"",
        b"\x00\xff",
        "x" * 5000,
        b"y" * 70000,
    ],
)
def test_values_keep_their_type(d, value):
    d.set("k", value)
    got = d.get("k")
    assert got == value and type(got) is type(value)


def test_nan_round_trips(d):
    d.set("n", float("nan"))
    assert math.isnan(d.get("n"))


def test_str_and_bytes_keys_are_the_same_key(d):
    d.set("a", 1)
    assert d.get(b"a") == 1
    d.set(b"\xc3\xa9", 2)
    assert d.get("é") == 2


def test_key_errors(d):
    with pytest.raises(ValueError, match="empty key"):
        d.get("")
    with pytest.raises(ValueError, match="empty key"):
        d.set(b"", 1)
    with pytest.raises(ValueError, match="key too long"):
        d.set("k" * 65536, 1)
    with pytest.raises(TypeError):
        d.get(1)
    with pytest.raises(TypeError):
        d.set(None, 1)


def test_key_of_65535_bytes_works(d):
    k = "k" * 65535
    d.set(k, 1)
    assert d.get(k) == 1


def test_bad_value_types(d):
    for v in ([], {}, object(), (1,)):
        with pytest.raises(TypeError):
            d.set("k", v)
    with pytest.raises(OverflowError):
        d.set("k", 2**63)


def test_set_none_deletes(d):
    d.set("k", 1)
    assert d.set("k", None) is False
    assert d.get("k") is None
    assert d.get("k", 7) == 7


def test_get_default_and_missing(d):
    assert d.get("nope") is None
    assert d.get("nope", "dflt") == "dflt"


# ---- flags -----------------------------------------------------------------------------------
def test_flags(d):
    d.set("k", "v", 0, 2**32 - 1)
    assert d.get_with_flags("k") == ("v", 2**32 - 1)
    d.set("k", "w")
    assert d.get_with_flags("k") == ("w", 0)
    assert d.get_with_flags("missing") == (None, 0)
    with pytest.raises(ValueError):
        d.set("k", 1, 0, 2**32)
    with pytest.raises(ValueError):
        d.set("k", 1, 0, -1)
    with pytest.raises(TypeError):
        d.set("k", 1, 0, "1")


# ---- expiry ----------------------------------------------------------------------------------
def test_expiry(d, clock):  # noqa: F811
    d.set("k", "v", 0.5)
    assert d.get("k") == "v"
    assert d.ttl("k") == pytest.approx(0.5)
    clock.advance(0.499)
    assert d.get("k") == "v"
    clock.advance(0.002)
    assert d.get("k") is None
    assert "k" not in d
    assert d.get_stale("k") == ("v", 0, True)
    with pytest.raises(NotFound):
        d.ttl("k")


def test_exptime_errors_and_resolution(d, clock):  # noqa: F811
    with pytest.raises(ValueError):
        d.set("k", 1, -1)
    with pytest.raises(ValueError):
        d.expire("k", -0.5)
    d.set("k", 1, 0.0001)  # a positive exptime never means "forever": at least 1 ms
    assert d.ttl("k") == pytest.approx(0.001)
    clock.advance(0.002)
    assert d.get("k") is None


def test_ttl_no_expiry_and_missing(d):
    d.set("k", 1)
    assert d.ttl("k") == 0
    with pytest.raises(NotFound):
        d.ttl("missing")
    with pytest.raises(KeyError):  # NotFound is a KeyError
        d.ttl("missing")


def test_expire(d, clock):  # noqa: F811
    assert d.expire("missing", 1) is False
    d.set("k", 1)
    assert d.expire("k", 2) is True
    assert d.ttl("k") == pytest.approx(2)
    assert d.expire("k", 0) is True
    assert d.ttl("k") == 0
    d.expire("k", 1)
    clock.advance(1.5)
    assert d.expire("k", 10) is False  # an expired key is not revived
    assert d.get("k") is None


def test_get_stale(d, clock):  # noqa: F811
    assert d.get_stale("missing") == (None, 0, False)
    d.set("k", "v", 1, 5)
    assert d.get_stale("k") == ("v", 5, False)
    clock.advance(2)
    assert d.get_stale("k") == ("v", 5, True)
    assert d.get_with_flags("k") == (None, 0)


# ---- add / replace / safe --------------------------------------------------------------------
def test_add(d, clock):  # noqa: F811
    assert d.add("k", 1) is True
    assert d.add("k", 2) is False
    assert d.get("k") == 1
    d.set("e", 1, 0.1)
    clock.advance(0.2)
    assert d.add("e", 2) is True  # an expired key counts as absent
    assert d.get("e") == 2
    with pytest.raises(TypeError):
        d.add("n", None)


def test_safe_add(d):
    assert d.safe_add("k", "v") is True
    assert d.safe_add("k", "w") is False
    assert d.get("k") == "v"


def test_replace(d, clock):  # noqa: F811
    assert d.replace("k", 1) is False
    assert d.get("k") is None
    d.set("k", 1)
    assert d.replace("k", "longer value " * 10) is True
    assert d.get("k") == "longer value " * 10
    d.set("e", 1, 0.1)
    clock.advance(0.2)
    assert d.replace("e", 2) is False
    with pytest.raises(TypeError):
        d.replace("k", None)


def test_set_returns_forcible_false_normally(d):
    assert d.set("k", 1) is False
    assert d.safe_set("k", 2) is None
    assert d.get("k") == 2


def test_delete(d):
    d.delete("missing")
    d.set("k", 1)
    assert d.delete("k") is None
    assert d.get("k") is None


# ---- incr ------------------------------------------------------------------------------------
def test_incr(d, clock):  # noqa: F811
    with pytest.raises(NotFound, match="not found"):
        d.incr("c")
    assert d.incr("c", 1, init=0) == 1
    assert d.incr("c") == 2
    assert d.incr("c", -5) == -3
    r = d.incr("c", 0.5)
    assert r == -2.5 and type(r) is float
    assert type(d.get("c")) is float
    d.set("i", 10)
    r = d.incr("i", 2)
    assert r == 12 and type(r) is int
    d.set("f", 1.5)
    assert d.incr("f", 1) == 2.5
    d.set("s", "x")
    with pytest.raises(NotANumber, match="not a number"):
        d.incr("s")
    d.set("b", True)
    with pytest.raises(NotANumber):
        d.incr("b")
    d.lpush("l", 1)
    with pytest.raises(NotANumber):
        d.incr("l")


def test_incr_keeps_expiry_and_flags(d, clock):  # noqa: F811
    d.set("c", 1, 10, 7)
    clock.advance(4)
    d.incr("c", 1)
    assert d.ttl("c") == pytest.approx(6)
    assert d.get_with_flags("c") == (2, 7)


def test_incr_init_ttl(d, clock):  # noqa: F811
    assert d.incr("c", 1, init=10, init_ttl=2) == 11
    assert d.ttl("c") == pytest.approx(2)
    clock.advance(3)
    assert d.incr("c", 1, init=0) == 1  # expired counts as missing
    assert d.ttl("c") == 0
    with pytest.raises(ValueError):
        d.incr("x", 1, None, 5)
    with pytest.raises(ValueError):
        d.incr("x", 1, 0, -1)
    with pytest.raises(TypeError):
        d.incr("x", "1")
    with pytest.raises(TypeError):
        d.incr("x", 1, init="0")


def test_incr_overflow(d):
    d.set("c", 2**63 - 1)
    with pytest.raises(OverflowError):
        d.incr("c", 1)
    assert d.get("c") == 2**63 - 1
    d.set("m", -(2**63))
    with pytest.raises(OverflowError):
        d.incr("m", -1)


def test_incr_init_flags_reset(d, clock):  # noqa: F811
    d.set("c", 1, 0.1, 9)
    clock.advance(1)
    d.incr("c", 1, init=0)
    assert d.get_with_flags("c") == (1, 0)


# ---- lists -----------------------------------------------------------------------------------
def test_lists(d):
    assert d.llen("l") == 0
    assert d.lpop("l") is None
    assert d.rpop("l") is None
    assert d.lpush("l", "b") == 1
    assert d.lpush("l", "a") == 2
    assert d.rpush("l", 3) == 3
    assert d.rpush("l", b"x") == 4
    assert d.rpush("l", 2.5) == 5
    assert d.rpush("l", True) == 6
    assert d.llen("l") == 6
    assert [d.lpop("l") for _ in range(3)] == ["a", "b", 3]
    assert d.rpop("l") is True
    assert d.rpop("l") == 2.5
    r = d.lpop("l")
    assert r == b"x" and type(r) is bytes
    assert d.llen("l") == 0
    assert "l" not in d  # popping the last element deletes the key
    assert d.get_keys(0) == []


def test_list_errors(d):
    d.set("s", 1)
    for fn in (d.lpush, d.rpush):
        with pytest.raises(NotAList, match="value not a list"):
            fn("s", 1)
    for fn in (d.lpop, d.rpop, d.llen):
        with pytest.raises(NotAList):
            fn("s")
    d.rpush("l", 1)
    with pytest.raises(IsAList, match="value is a list"):
        d.get("l")
    with pytest.raises(IsAList):
        d.get_with_flags("l")
    with pytest.raises(IsAList):
        d.get_stale("l")
    with pytest.raises(TypeError):
        d.lpush("l", None)
    with pytest.raises(TypeError):
        d.lpush("l", [1])
    # set overwrites a list with a scalar (and frees its elements)
    d.set("l", "scalar")
    assert d.get("l") == "scalar"


def test_list_expiry(d, clock):  # noqa: F811
    d.rpush("l", 1)
    assert d.expire("l", 1) is True
    clock.advance(2)
    assert d.llen("l") == 0
    assert d.lpop("l") is None
    assert d.rpush("l", 5) == 1  # an expired list is replaced
    assert d.ttl("l") == 0


def test_an_expired_list_reads_as_absent(d, clock):  # noqa: F811
    """nginx's get on an expired key is nil whatever its type (found by the property test:
    get_with_flags used to decode the value first and raise "value is a list")."""
    d.rpush("l", 1)
    with pytest.raises(IsAList):
        d.get_with_flags("l")  # a live list is an error for get
    d.expire("l", 1)
    clock.advance(2)
    assert d.get("l") is None
    assert d.get_with_flags("l") == (None, 0)
    with pytest.raises(IsAList):
        d.get_stale("l")  # get_stale still reads it: a list, as nginx says


def test_list_never_evicts(mkdict):  # noqa: F811
    d = mkdict("32k")
    for i in range(5):
        d.set(f"k{i}", "v" * 1000)
    with pytest.raises(NoMemory):
        for _ in range(10000):
            d.rpush("l", "e" * 100)
    assert all(d.get(f"k{i}") == "v" * 1000 for i in range(5))
    assert d.verify() == []


# ---- mapping sugar ---------------------------------------------------------------------------
def test_mapping_sugar(d):
    d["a"] = 1
    assert d["a"] == 1
    assert "a" in d and "b" not in d
    del d["a"]
    with pytest.raises(KeyError):
        d["a"]
    with pytest.raises(KeyError):
        del d["a"]


# ---- eviction --------------------------------------------------------------------------------
def test_forcible_and_lru_order(mkdict):  # noqa: F811
    d = mkdict("100k")
    forcible_at = None
    for i in range(5000):
        if d.set(f"key_{i:05d}", "v" * 70):
            forcible_at = i
            break
    assert forcible_at is not None and forcible_at > 300
    assert d.get("key_00000") is None  # least recently used went first
    assert d.stats()["evictions"] >= 1
    assert d.verify() == []


def test_read_protects_from_eviction(mkdict):  # noqa: F811
    d = mkdict("100k")
    n = 0
    while not d.set(f"key_{n:05d}", "v" * 70):
        n += 1
    d.flush_all()
    for i in range(n):
        d.set(f"key_{i:05d}", "v" * 70)
    d.get("key_00000")  # key_0 becomes most recent: key_1 is evicted instead
    assert d.set("new_99999", "v" * 70) is True
    assert d.get("key_00000") == "v" * 70
    assert d.get("key_00001") is None


def test_expired_evicted_before_live(mkdict, clock):  # noqa: F811
    d = mkdict("100k")
    n = 0
    while not d.set(f"key_{n:05d}", "v" * 70, 0 if n % 2 else 1):
        n += 1
    d.flush_all()
    for i in range(n):
        d.set(f"key_{i:05d}", "v" * 70, 1 if i == 5 else 0)  # only key 5 expires
    ev = d.stats()["evictions"]
    clock.advance(2)
    # the expired entry (among the 256 least recently used) makes room: nothing live evicted,
    # although key_00000 is the least recently used one
    assert d.set("new_99999", "v" * 70) is False
    assert all(d.get(f"key_{i:05d}") is not None for i in range(n) if i != 5)
    assert d.get_stale("key_00005") == (None, 0, False)
    assert d.stats()["evictions"] == ev


def test_safe_set_never_evicts(mkdict):  # noqa: F811
    d = mkdict("100k")
    i = 0
    with pytest.raises(NoMemory, match="no memory"):
        while True:
            d.safe_set(f"key_{i:05d}", "v" * 70)
            i += 1
    assert all(d.get(f"key_{j:05d}") == "v" * 70 for j in range(i))
    with pytest.raises(NoMemory):
        d.safe_add("other", "v" * 70)
    assert d.stats()["evictions"] == 0


def test_value_larger_than_zone(mkdict):  # noqa: F811
    d = mkdict("100k")
    d.set("k", "keep")
    with pytest.raises(NoMemory):
        d.set("big", "x" * 200_000)
    with pytest.raises(NoMemory):
        d.set("k", "x" * 200_000)
    assert d.get("k") == "keep"
    assert d.stats()["evictions"] == 0


def test_failed_write_keeps_old_value(mkdict):  # noqa: F811
    """lua-nginx-module #1365: nginx frees the old value before allocating the new one."""
    d = mkdict("100k")
    d.set("k", "old")
    i = 0
    while True:
        try:
            d.safe_set(f"f{i}", "v" * 200)
        except NoMemory:
            break
        i += 1
    with pytest.raises(NoMemory):
        d.safe_set("k", "n" * 3000)
    assert d.get("k") == "old"
    with pytest.raises(NoMemory):
        d.safe_set("k", "n" * 60_000)
    assert d.get("k") == "old"


def test_big_value_evicts_many_small(mkdict):  # noqa: F811
    d = mkdict("100k")
    i = 0
    while not d.set(f"s{i}", i):
        i += 1
    assert d.set("big", "x" * 50_000) is True
    assert d.get("big") == "x" * 50_000
    assert d.verify() == []


# ---- whole zone ------------------------------------------------------------------------------
def test_flush_all(d):
    for i in range(100):
        d.set(f"k{i}", "v" * 100)
    d.rpush("l", 1)
    before = d.free_space()
    d.flush_all()
    assert d.get("k1") is None and d.llen("l") == 0
    assert d.free_space() > before
    assert d.stats()["entries"] == 0 and d.stats()["used"] == 0
    d.set("k1", 1)
    assert d.get("k1") == 1


def test_flush_expired(d, clock):  # noqa: F811
    for i in range(50):
        d.set(f"e{i}", i, 1)
    for i in range(10):
        d.set(f"l{i}", i)
    assert d.flush_expired() == 0
    clock.advance(2)
    assert d.flush_expired(5) == 5
    assert d.flush_expired() == 45
    assert d.stats()["entries"] == 10
    assert d.get_stale("e1") == (None, 0, False)
    with pytest.raises(ValueError):
        d.flush_expired(-1)


def test_get_keys(d, clock):  # noqa: F811
    assert d.get_keys() == []
    for i in range(2000):
        d.set(f"k{i}", i)
    d.set(b"\xff\xfe", 1)
    d.set("e", 1, 1)
    assert len(d.get_keys()) == 1024
    keys = d.get_keys(0)
    assert len(keys) == 2002 and b"\xff\xfe" in keys and "k1999" in keys
    assert len(d.get_keys(10)) == 10
    clock.advance(2)
    assert "e" not in d.get_keys(0)
    with pytest.raises(ValueError):
        d.get_keys(-1)


def test_capacity_free_space_stats(mkdict):  # noqa: F811
    d = mkdict("1m")
    assert d.capacity() == 1024 * 1024
    free0 = d.free_space()
    assert 0 < free0 < d.capacity() and free0 % 4096 == 0
    d.set("k", "v" * 10_000)
    assert d.free_space() == free0 - 12288
    d.get("k")
    d.get("missing")
    s = d.stats()
    assert set(s) == {"capacity", "used", "free", "entries", "evictions", "hits", "misses"}
    assert s["capacity"] == 1024 * 1024 and s["entries"] == 1 and s["used"] == 12288
    assert s["hits"] == 1 and s["misses"] == 1 and s["free"] == d.free_space()


def test_per_entry_overhead(mkdict):  # noqa: F811
    """≤ 96 bytes per entry beyond key and value, slab rounding included."""
    d = mkdict("10m")
    for klen, vlen in ((1, 8), (10, 20), (16, 100), (30, 500), (40, 1900), (20, 5000)):
        d.flush_all()
        n = 200
        for i in range(n):
            d.set(f"{i:0{klen}d}", "v" * vlen)
        per = d.stats()["used"] / n - klen - vlen
        limit = 96 if klen + vlen < 2000 else 4096  # page-run values round to 4 KiB pages
        assert per <= limit, (klen, vlen, per)


# ---- construction ----------------------------------------------------------------------------
def test_create_attach_names(zones):  # noqa: F811
    d = zones("64k")
    assert d.name.startswith("test-")
    with pytest.raises(FileExistsError):
        SharedDict.create(d.name, "64k")
    d.set("k", "v")
    with SharedDict.attach(d.name) as d2:
        assert d2.name == d.name and d2.get("k") == "v"
        d2.set("k2", 2)
    assert d.get("k2") == 2
    with pytest.raises(FileNotFoundError):
        SharedDict.attach(zone_name("absent"))
    with pytest.raises(ValueError):
        SharedDict.create("bad/name", "64k")
    with pytest.raises(ValueError):
        SharedDict.create(zone_name(), "1k")


def test_unlink(zones):  # noqa: F811
    d = zones("64k")
    d.set("k", 1)
    d.unlink()
    assert not SharedDict.exists(d.name)
    assert d.get("k") == 1  # still mapped here
    with pytest.raises(FileNotFoundError):
        SharedDict.attach(d.name)


def test_open_or_create(zones):  # noqa: F811
    name = zone_name("ooc")
    d1, kept = SharedDict.open_or_create(name, "64k")
    try:
        assert kept is False
        d1.set("k", 1)
        d2, kept = SharedDict.open_or_create(name, 65536)
        assert kept is True and d2.get("k") == 1
        d2.close()
        d3, kept = SharedDict.open_or_create(name, "128k")
        assert kept is False and d3.get("k") is None and d3.capacity() == 128 * 1024
        assert d1.get("k") == 1  # the old mapping lives on until closed
        d3.close()
    finally:
        d1.close()
        SharedDict.remove(name)


def test_parse_size():
    assert parse_size("512k") == 512 * 1024
    assert parse_size("10m") == 10 * 1024**2
    assert parse_size("1G") == 1024**3
    assert parse_size(12345) == 12345
    assert parse_size("1mb") == 1024**2
    for bad in ("", "k", "1x", "-1", "1.5m"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(TypeError):
        parse_size(1.5)


def test_exceptions_hierarchy():
    assert issubclass(shm.NotFound, KeyError)
    assert str(shm.NotFound()) == "not found"
    assert str(shm.NoMemory()) == "no memory"
    assert str(shm.NotANumber()) == "not a number"
    assert str(shm.NotAList()) == "value not a list"
    assert str(shm.IsAList()) == "value is a list"


def test_different_size_values_on_one_key(d):
    """t/043 TEST 5: growing and shrinking values (in place, then re-allocated)."""
    for v in ("hello", "hello, world", "hello", "x" * 3000, "y", "z" * 70_000, 7):
        d.set("foo", v)
        assert d.get("foo") == v


def test_two_zones_are_independent(zones):  # noqa: F811
    """t/043 TEST 11: dogs and cats."""
    dogs, cats = zones("64k"), zones("64k")
    dogs.set("foo", 32)
    cats.set("foo", "hello, world")
    dogs.set("foo", 56)
    assert dogs.get("foo") == 56 and cats.get("foo") == "hello, world"


def test_growing_values_until_forcible(mkdict):  # noqa: F811
    """t/043 TEST 21: ever bigger values end in an eviction, never in an error."""
    d = mkdict("100k")
    for i in range(1, 1000):
        if d.set(f"key_{i}", "hello" * i):
            break
    else:
        pytest.fail("no eviction")
    assert d.get(f"key_{i}") == "hello" * i
    assert d.verify() == []
