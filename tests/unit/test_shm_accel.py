"""shm._accel, the C hit path of SharedDict.incr: built, in step with shm/layout.py, and
giving exactly what the pure-Python path gives (values, errors, LRU order, zone structure)."""

from __future__ import annotations

import os
import random
import struct
import time

import posix_ipc
import pytest

import shm.dict as shm_dict
from shm import NotANumber, NotFound, SharedDict, layout

from ..shm_helpers import zone_name, zones  # noqa: F401 - a fixture

if os.environ.get("SHM_NO_ACCEL"):
    pytest.skip("SHM_NO_ACCEL is set: the pure-Python path only", allow_module_level=True)


def test_accelerator_is_built_and_used():
    """`make test` installs with a C compiler present: a silently failed build (setup.py marks
    the extension optional) would leave every incr on the slower pure-Python path."""
    assert shm_dict._AccelZone is not None, "shm._accel was not built (see setup.py)"
    d = SharedDict.from_buffer(bytearray(1 << 16))
    assert d._aincr is not None


def test_layout_constants_match():
    """The constants compiled into the module (exported under layout.py's names) are
    layout.py's."""
    from shm import _accel

    assert _accel.NODE_SIZE == layout.NODE_SIZE
    assert _accel.T_INT == layout.T_INT
    assert _accel.H_LRU == layout.H_LRU
    assert _accel.H_OWNER == layout.H_OWNER
    compiled = {k: v for k, v in vars(_accel).items() if k.isupper() and isinstance(v, int)}
    assert len(compiled) >= 12
    for name, value in compiled.items():
        assert value == getattr(layout, name), name


def _pair(size: int = 1 << 18) -> tuple[SharedDict, SharedDict]:
    fast = SharedDict.from_buffer(bytearray(size))
    slow = SharedDict.from_buffer(bytearray(size))
    slow._aincr = slow._clookup = None
    assert fast._aincr is not None and fast._clookup is not None
    return fast, slow


@pytest.fixture(params=["buffer", "named"])
def pair(request, zones):  # noqa: F811 - the shm_helpers fixture
    """(dict with the C paths, the same without): over private buffers (the C hit path under
    the Python lock) or over named zones (fast_incr: the C lock and hit path together)."""
    if request.param == "buffer":
        return _pair()
    fast, slow = zones("256k"), zones("256k")
    slow._aincr = slow._fincr = slow._clookup = slow._clocked = None
    assert fast._fincr is not None
    return fast, slow


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # the same exception type and message on both paths
        return (type(exc).__name__, str(exc))


def test_incr_same_results_as_python_path(pair):
    """A random mix of operations on two dicts, one with the C path and one without: every
    result, error and the final contents, LRU order included, are the same."""
    fast, slow = pair
    rng = random.Random(7)
    keys = [f"k{i}".encode() for i in range(40)] + [b"\x00" * 3, b"x" * 300]
    values = [0, 1, -5, 2**62, 2**63 - 1, -(2**63), 1.5, "text", b"raw", True]
    deltas = [1, -1, 7, 2**40, -(2**40), 2**63, 0.5, 3]
    for step in range(6000):
        k = rng.choice(keys)
        op = rng.random()
        if op < 0.55:
            delta = rng.choice(deltas)
            init = rng.choice([None, 0, 10, 2.5, "bad"])
            args = (k, delta, init, rng.choice([0, 0, 0, 60, 0.5, -1]))
        elif op < 0.75:
            args = ("set", k, rng.choice(values), rng.choice([0, 0, 3600]))
        elif op < 0.85:
            args = ("delete", k)
        elif op < 0.95:
            args = ("get", k)
        else:
            args = ("add", k, rng.randint(0, 100))
        results = [_outcome(lambda d=d, a=args: _apply(d, a)) for d in (fast, slow)]
        assert results[0] == results[1], (step, args, results)
    # expired entries: both paths see them as gone
    for d in (fast, slow):
        for k in keys[:10]:
            d.set(k, 1, 0.001)
    time.sleep(0.005)
    for k in keys[:10]:
        assert _outcome(lambda k=k: fast.incr(k, 1)) == _outcome(lambda k=k: slow.incr(k, 1))
        assert fast.incr(k, 2, init=5) == slow.incr(k, 2, init=5) == 7
    assert fast.verify() == [] and slow.verify() == []
    assert _lru(fast) == _lru(slow)  # the same recency order
    for k in keys:
        assert fast.get(k) == slow.get(k)


def _apply(d: SharedDict, args: tuple):
    if args[0] in ("set", "delete", "get", "add"):
        return getattr(d, args[0])(*args[1:])
    key, delta, init, init_ttl = args
    return d.incr(key, delta, init, init_ttl)


def _lru(d: SharedDict) -> list[bytes]:
    """Keys from the most to the least recently used (the zone's LRU list)."""
    out = []
    off = d._m32[layout.H_LRU >> 2]
    while off:
        kl = struct.unpack_from("<H", d._buf, off + 32)[0]
        out.append(bytes(d._buf[off + 36 : off + 36 + kl]))
        off = d._m32[(off >> 2) + 2]
    return out


def test_incr_moves_the_entry_to_the_lru_head():
    fast, _ = _pair()
    for i in range(5):
        fast.set(f"k{i}", i)
    assert _lru(fast)[0] == b"k4"
    assert fast.incr("k1", 10) == 11
    assert _lru(fast)[0] == b"k1"
    assert fast.incr("k0", 1) == 1  # the LRU tail
    assert _lru(fast) == [b"k0", b"k1", b"k4", b"k3", b"k2"]
    assert fast.verify() == []


def test_incr_errors_unchanged():
    fast, _ = _pair()
    fast.set("s", "text")
    with pytest.raises(NotANumber):
        fast.incr("s", 1)
    with pytest.raises(NotFound):
        fast.incr("missing", 1)
    fast.set("max", 2**63 - 1)
    with pytest.raises(OverflowError):
        fast.incr("max", 1)
    assert fast.get("max") == 2**63 - 1
    fast.set("f", 1.25)
    assert fast.incr("f", 1) == 2.25
    assert fast.incr("max", -(2**63 - 1)) == 0


def test_expired_entry_is_reinitialised():
    fast, _ = _pair()
    fast.set("e", 5, 0.001)
    time.sleep(0.005)
    assert fast.incr("e", 1, init=100) == 101
    with pytest.raises(NotFound):
        fast.set("g", 1, 0.001) or time.sleep(0.005) or fast.incr("g", 1)


def test_damaged_bucket_does_not_crash():
    """A bucket word pointing outside the zone: the C code leaves the call to Python (which
    fails with an exception) instead of reading outside the mapping."""
    d = SharedDict.from_buffer(bytearray(1 << 16))
    d.set("a", 1)
    h = shm_dict.crc32(b"a")
    slot = (d._bidx + (h & d._mask)) * 4
    struct.pack_into("<I", d._buf, slot, len(d._buf) - 8)
    with pytest.raises(Exception):  # noqa: B017 - whatever the Python path raises
        d.incr("a", 1)
    assert d._aincr(b"a", h, 1) is None


def test_lookup_is_the_python_walk():
    """Zone.lookup (the C walk of get, set and incr) finds what SharedDict._lookup finds: each
    record's offset, 0 for an absent key (colliding buckets and keys sharing a prefix too);
    a chain leaving the zone raises instead of reading outside it."""
    d = SharedDict.from_buffer(bytearray(1 << 18))
    keys = [f"k{i}".encode() for i in range(600)] + [b"k1" * 3, b"k", b"\xff" * 300]
    for i, k in enumerate(keys):
        d.set(k, i if i % 3 else "v" * i)
    crc = shm_dict.crc32
    for k in keys + [b"absent", b"k10\x00", b"k1" * 2]:
        h = crc(k)
        assert d._clookup(k, h) == d._lookup(k, h)
        assert bool(d._clookup(k, h)) == (k in keys)
    slot = (d._bidx + (crc(b"k5") & d._mask)) * 4
    struct.pack_into("<I", d._buf, slot, len(d._buf) - 8)
    with pytest.raises(RuntimeError):
        d._clookup(b"k5", crc(b"k5"))


def test_lookup_with_pid_takes_the_lock(zones):  # noqa: F811
    """Zone.lookup(key, hash, pid) takes the zone lock and writes pid as its owner before the
    walk, and returns holding it; None (nothing taken) while another holder has it; a damaged
    chain raises with the lock released."""
    d = zones("64k")
    d.set(b"a", 1)
    crc = shm_dict.crc32
    owner = layout.H_OWNER >> 2
    off = d._clocked(b"a", crc(b"a"), 4242)
    assert off == d._lookup(b"a", crc(b"a")) and d._m32[owner] == 4242
    assert d._clocked(b"a", crc(b"a"), 4243) is None  # busy: this handle holds it
    d._unlock()
    assert d._clocked(b"zz", crc(b"zz"), 4244) == 0 and d._m32[owner] == 4244
    d._unlock()
    slot = (d._bidx + (crc(b"a") & d._mask)) * 4
    struct.pack_into("<I", d._buf, slot, len(d._buf) - 8)
    with pytest.raises(RuntimeError):
        d._clocked(b"a", crc(b"a"), 4245)
    assert d._m32[owner] == 0
    d._lock_()  # released: taken again at once
    d._unlock()


def test_named_zone_and_close():
    """On a real zone the C path works across handles, and close() releases its buffer (the
    mapping can be closed)."""
    name = zone_name("accel")
    a = SharedDict.create(name, "64k")
    try:
        b = SharedDict.attach(name)
        a.set("n", 1)
        assert b.incr("n", 2) == 3
        assert a.get("n") == 3
        b.close()
        with pytest.raises(posix_ipc.ExistentialError):  # closed: as before the C path
            b.incr("n", 1)
        assert a.incr("n", 1) == 4
    finally:
        a.unlink()
        a.close()


def test_c_path_handles_hits_and_declines_the_rest():
    """Zone.incr itself: a live int entry is updated in C (and moved to the LRU head); every
    other case returns None with the zone untouched, for the Python path to handle."""
    d = SharedDict.from_buffer(bytearray(1 << 16))
    for k, v in ((b"a", 1), (b"b", 2), (b"s", "x"), (b"f", 1.5), (b"m", 2**63 - 1)):
        d.set(k, v)
    crc = shm_dict.crc32
    assert d._aincr(b"a", crc(b"a"), 41) == 42  # "a" was not the LRU head
    assert _lru(d)[0] == b"a"
    before = bytes(d._buf)
    for k, delta in ((b"zz", 1), (b"s", 1), (b"f", 1), (b"m", 1), (b"a", 2**64)):
        assert d._aincr(k, crc(k), delta) is None
    assert bytes(d._buf) == before
    assert d.get("a") == 42 and d.verify() == []


def test_semaphore_like_posix_ipc():
    """shm._accel.Semaphore behaves as the posix_ipc.Semaphore it replaces for the zone lock."""
    from shm import _accel

    name = "/" + zone_name("sem")
    with pytest.raises(posix_ipc.ExistentialError):
        _accel.Semaphore(name)  # opening a missing one
    a = _accel.Semaphore(name, posix_ipc.O_CREX, 0o600, 1)
    try:
        assert a.name == name and a.value == 1
        with pytest.raises(posix_ipc.ExistentialError):
            _accel.Semaphore(name, posix_ipc.O_CREX, 0o600, 1)  # exists already
        b = _accel.Semaphore(name)  # a second handle on the same semaphore
        p = posix_ipc.Semaphore(name)  # and posix_ipc's: the same kernel object
        a.acquire(0)
        assert b.value == 0 and p.value == 0
        with pytest.raises(posix_ipc.BusyError):
            b.acquire(0)
        with pytest.raises(posix_ipc.BusyError):
            p.acquire(0)
        a.release()
        p.acquire(0)
        with pytest.raises(posix_ipc.BusyError):
            a.acquire(0)
        p.release()
        assert a.value == 1
        with pytest.raises(ValueError):
            a.acquire(1.0)  # a blocking wait would freeze a gevent worker: refused
        with pytest.raises(ValueError):
            a.acquire()
        b.close()
        with pytest.raises(posix_ipc.ExistentialError):
            b.acquire(0)
        with pytest.raises(posix_ipc.ExistentialError):
            b.value  # noqa: B018
        p.close()
    finally:
        a.close()
        posix_ipc.unlink_semaphore(name)


def test_zone_lock_uses_the_c_semaphore():
    """Named zones lock with the C semaphore, and other processes (posix_ipc or C) see it."""
    import multiprocessing

    from shm import _accel

    name = zone_name("lock")
    d = SharedDict.create(name, "64k")
    try:
        assert isinstance(d._lock.sem, _accel.Semaphore)
        d.set("n", 0)
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_bump, args=(name, 2000)) for _ in range(3)]
        for p in procs:
            p.start()
        _bump(name, 2000)
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert d.get("n") == 8000  # no lost update across four processes
        assert d.verify() == []
    finally:
        d.unlink()
        d.close()


def _bump(name: str, n: int) -> None:
    d = SharedDict.attach(name)
    for _ in range(n):
        d.incr("n", 1)
    d.close()


def test_fast_incr_declines_while_the_lock_is_taken(zones):  # noqa: F811
    d = zones("64k")
    d.set(b"n", 1)
    assert d._fincr(b"n", 1, None, 0, 4242) == 2
    assert d._m32[layout.H_OWNER >> 2] == 0  # owner cleared, lock released
    d._acquire(0)
    try:
        assert d._fincr(b"n", 1, None, 0, 4242) is None  # busy: the Python path would wait
        assert d.get(b"n") == 2
    finally:
        d._release()
    assert d.incr(b"n", 1) == 3


def test_fast_incr_leaves_unusual_arguments_to_python(zones):  # noqa: F811
    """fast_incr takes only what incr's fast path may: anything else is None (untouched)."""
    d = zones("64k")
    d.set(b"n", 1)
    f = d._fincr
    for args in (
        ("n", 1, None, 0),  # str key
        (b"n", 1.5, None, 0),  # float delta
        (b"n", True, None, 0),  # bool delta
        (b"n", 2**64, None, 0),  # delta past 64 bits
        (b"n", 1, None, 5),  # init_ttl without init
        (b"n", 1, 0, -1),  # negative init_ttl
        (b"n", 1, 0, -(2**70)),  # negative init_ttl past 64 bits
        (b"n", 1, None, 2**70),  # init_ttl past 64 bits without init
        (b"n", 1, 0, float("nan")),
        (b"n", 1, "0", 0),  # init not a number
        (b"n", 1, True, 0),  # bool init
        (b"n", 1, 0, True),  # bool init_ttl
        (b"", 1, None, 0),  # empty key
        (b"x" * 70000, 1, None, 0),  # key too long
    ):
        assert f(*args, 4242) is None, args
    assert d.get(b"n") == 1
    assert f(b"n", 1, 0, 2.5, 4242) == 2 and f(b"n", 1, 1.5, 0, 4242) == 3
    assert f(b"n", 1, 0, 2**70, 4242) == 4 and f(b"n", 1, None, 0, 4242) == 5


def test_crc32_matches_zlib():
    import zlib

    from shm import _accel

    rng = random.Random(3)
    for n in (0, 1, 3, 4, 16, 255, 4096):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert _accel.crc32(data) == zlib.crc32(data)


def test_incr_call_forms_same_with_and_without_fast_incr(zones):  # noqa: F811
    """Every way of passing incr's arguments (positional, keywords, defaults, wrong ones) gives
    the same value or the same error on a zone served by Zone.fast_incr as on one without it."""
    fast, slow = zones("64k"), zones("64k")
    slow._fincr = None
    py = SharedDict.incr
    forms = [
        ((b"a",), {}),
        ((b"a", 2), {}),
        ((b"b", 1), {"init": 0}),
        ((b"b",), {"delta": 5}),
        ((b"c", 1, 10), {}),
        ((b"c", 1, 10, 30), {}),
        ((b"d", 1), {"init": 0, "init_ttl": 60}),
        ((b"d",), {"init_ttl": 60, "init": 1}),
        ((b"e", 1), {"init_ttl": 5}),  # init_ttl without init
        ((b"f", 1, 0), {"init": 0}),  # init twice
        ((b"g", 1), {"initial": 0}),  # unknown keyword
        ((), {}),
        ((b"h", 1, 0, 0, 9), {}),  # too many
        ((), {"key": b"k", "delta": 1, "init": 0}),
        ((b"i", True), {"init": 0}),
        ((b"j", 1), {"init": True}),
        ((b"a", 2**64), {}),
    ]
    for _ in range(2):  # first calls create entries, second calls find them
        for args, kwargs in forms:
            got = _outcome(lambda a=args, k=kwargs: fast.incr(*a, **k))
            want = _outcome(lambda a=args, k=kwargs: py(slow, *a, **k))
            assert got == want, (args, kwargs, got, want)
    assert sorted(fast.get_keys(0)) == ["b", "c", "d", "k"]
    assert {k: fast.get(k) for k in fast.get_keys(0)} == {k: slow.get(k) for k in slow.get_keys(0)}


def test_incr_serves_hits_through_fast_incr(zones, monkeypatch):  # noqa: F811
    """A hit with plain arguments is one Zone.fast_incr call; what it declines (a miss, a str
    key) goes on in Python; a private buffer has no fast_incr, and a test's fake clock skips
    it."""
    d = zones("64k")
    d.set(b"n", 1)
    real, calls = d._fincr, []

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    d._fincr = spy
    assert d.incr(b"n", 1, init=0) == 2 and d.incr(b"n") == 3
    assert calls == [2, 3]
    assert d.incr(b"new", 1, init=0) == 1 and calls[-1] is None  # a miss: Python stores it
    assert d.incr("n", 1) == 4 and calls[-2:] == [None, 4]  # a str key: again with its bytes
    calls.clear()
    monkeypatch.setattr(shm_dict, "_now_ns", lambda: time.monotonic_ns())
    assert d.incr(b"n", 1) == 5 and calls == []
    assert d.get(b"n") == 5
    assert SharedDict.from_buffer(bytearray(1 << 16))._fincr is None


def test_incr_hit_path_is_incr_without_its_frame(zones, monkeypatch):  # noqa: F811
    """incr_hit_path: the C call incr makes first, and this process's pid; what it declines
    (None, nothing changed) the caller gives to incr. None without a C hit path."""
    d = zones("64k")
    fast, pid = d.incr_hit_path()
    assert pid == os.getpid()
    assert fast(b"n", 1, 0, 10.0, pid) is None and d.get(b"n") is None  # a miss: declined
    assert d.incr(b"n", 1, 0, 10.0) == 1
    assert fast(b"n", 1, 0, 10.0, pid) == 2 and fast(b"n", -1, 0, 10.0, pid) == 1
    assert d.incr(b"n", 1, 0, 10.0) == 2  # the same counter either way
    assert fast("n", 1, 0, 10.0, pid) is None and d.get(b"n") == 2  # a str key: declined
    monkeypatch.setattr(shm_dict, "_now_ns", lambda: time.monotonic_ns())
    assert d.incr_hit_path() is None  # a test's clock: incr only
    monkeypatch.undo()
    assert SharedDict.from_buffer(bytearray(1 << 16)).incr_hit_path() is None
    d.close()
    assert d.incr_hit_path() is None
