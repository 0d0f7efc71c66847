"""edgeworker.lib.lock.Lock: mutual exclusion across processes, expiry, owner-checked unlock."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from edgeworker.lib.lock import Lock, LockError, LockTimeout
from shm import SharedDict


@pytest.fixture
def zone(zones):
    return zones("1m", "lock")


def test_lock_unlock(zone):
    a, b = Lock(zone, timeout=0), Lock(zone, timeout=0)
    assert a.lock("k") == 0.0 and a.locked
    with pytest.raises(LockTimeout):
        b.lock("k")
    with pytest.raises(LockError):
        a.lock("other")
    assert a.unlock() is True
    assert a.unlock() is False  # nothing held
    assert b.lock("k") == 0.0
    b.unlock()


def test_waits_with_backoff_until_released(zone):
    a = Lock(zone)
    a.lock("k")
    b = Lock(zone, timeout=0.3, step=0.01)
    t0 = time.monotonic()
    with pytest.raises(LockTimeout):
        b.lock("k")
    assert 0.25 < time.monotonic() - t0 < 1.0
    a.unlock()
    assert b.lock("k") == 0.0
    b.unlock()


def test_expired_lock_is_not_released_by_its_old_owner(zone):
    a = Lock(zone, exptime=0.1, timeout=0.05)
    a.lock("k")
    time.sleep(0.15)  # a's lock expired
    b = Lock(zone, timeout=0)
    b.lock("k")
    assert a.expire() is False
    assert a.unlock() is False  # resty.lock would delete b's lock here
    assert b.locked
    c = Lock(zone, timeout=0)
    with pytest.raises(LockTimeout):
        c.lock("k")
    assert b.expire(5) and 4 < zone.ttl("k") <= 5
    assert b.unlock() is True


def test_context_manager_releases_on_error(zone):
    lock = Lock(zone)
    with pytest.raises(RuntimeError):
        with lock.hold("k"):
            raise RuntimeError("boom")
    assert Lock(zone, timeout=0).lock("k") == 0.0


def test_bad_options(zone):
    with pytest.raises(ValueError):
        Lock(zone, timeout=10, exptime=5)
    with pytest.raises(ValueError):
        Lock(zone).lock("")


def _worker(name: str, n: int, out) -> None:
    d = SharedDict.attach(name)
    lock = Lock(d, timeout=20, step=0.0005, max_step=0.002)
    for _ in range(n):
        with lock.hold("counter-lock"):
            v = d.get("counter") or 0  # a non-atomic read-modify-write, safe under the lock
            time.sleep(0)
            d.set("counter", v + 1)
    out.put(True)


def test_mutual_exclusion_across_processes(zone):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(zone.name, 200, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for _ in procs:
        assert q.get(timeout=60)
    for p in procs:
        p.join(10)
    assert zone.get("counter") == 800
