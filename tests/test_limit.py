"""edgeworker.lib.limit: every limiter on a real shared dict and a real redis-server."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from edgeworker import redis as ew_redis
from edgeworker.config import Redis
from edgeworker.lib import limit
from shm import SharedDict

from .redis_server import RedisServer, redis_server  # noqa: F401 (fixture)
from .shm_helpers import zone_name


@pytest.fixture
def shm_zone():
    d = SharedDict.create(zone_name("limit"), "1m")
    try:
        yield d
    finally:
        d.close()
        d.unlink()


@pytest.fixture
def rstore(redis_server):  # noqa: F811
    ew_redis.configure({"default": Redis(url=redis_server.url)})
    yield "redis:default"
    ew_redis.reset()


@pytest.fixture(params=["shm", "redis"])
def store(request, shm_zone, redis_server):  # noqa: F811
    if request.param == "shm":
        yield shm_zone
    else:
        ew_redis.configure({"default": Redis(url=redis_server.url)})
        yield "redis:default"
        ew_redis.reset()


def test_fixed_window_allows_exactly_limit(store):
    fw = limit.FixedWindow(store, 5, 3600)
    results = [fw.incoming("ip1") for _ in range(8)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 3
    assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]
    assert results[-1].limit == 5 and 0 < results[-1].reset <= 3600
    assert results[-1].retry_after >= 1
    # another key has its own quota
    assert fw.incoming("ip2").allowed


def test_fixed_window_resets_with_the_window(store):
    fw = limit.FixedWindow(store, 2, 0.5)
    t0 = time.time()
    while time.time() % 0.5 > 0.3:  # start early in a window
        time.sleep(0.01)
    assert [fw.incoming("k").allowed for _ in range(3)] == [True, True, False]
    time.sleep(0.5 - (time.time() % 0.5) + 0.05)
    assert fw.incoming("k").allowed
    assert time.time() - t0 < 5


def test_dry_run_counts_nothing(store):
    fw = limit.FixedWindow(store, 1, 3600)
    for _ in range(3):
        assert fw.incoming("k", commit=False).allowed
    assert fw.incoming("k").allowed
    assert not fw.incoming("k", commit=False).allowed
    fw.uncommit("k")
    assert fw.incoming("k").allowed


def test_sliding_window(store):
    sw = limit.SlidingWindow(store, 3, 3600)
    assert [sw.incoming("k").allowed for _ in range(5)] == [True, True, True, False, False]
    r = sw.incoming("k")
    assert r.remaining == 0 and r.reset > 0


def test_sliding_window_weights_the_previous_window(store):
    sw = limit.SlidingWindow(store, 4, 1.0)
    while time.time() % 1.0 > 0.2:
        time.sleep(0.01)
    assert sum(sw.incoming("k").allowed for _ in range(6)) == 4
    # early in the next window the previous one still weighs almost fully
    time.sleep(1.0 - (time.time() % 1.0) + 0.05)
    assert sum(sw.incoming("k").allowed for _ in range(4)) <= 1


def test_leaky_bucket_delays_then_rejects(store):
    lb = limit.LeakyBucket(store, rate=10, burst=3)
    rs = [lb.incoming("k") for _ in range(6)]
    assert [r.allowed for r in rs] == [True, True, True, True, False, False]
    assert rs[0].delay == 0
    assert 0.05 < rs[1].delay < 0.15 and 0.25 < rs[3].delay < 0.35
    assert rs[4].reset > 0
    time.sleep(0.25)  # 2.5 requests leaked away
    assert lb.incoming("k").allowed


def test_leaky_bucket_nodelay(store):
    lb = limit.LeakyBucket(store, rate=1, burst=2, nodelay=True)
    rs = [lb.incoming("k") for _ in range(4)]
    assert [r.allowed for r in rs] == [True, True, True, False]
    assert all(r.delay == 0 for r in rs)


def test_concurrency_and_leaving(store):
    cc = limit.Concurrency(store, 2, burst=1, unit_delay=0.5)
    rs = [cc.incoming("k") for _ in range(4)]
    assert [r.allowed for r in rs] == [True, True, True, False]
    assert rs[2].delay == 0.5 and rs[0].delay == 0
    assert [r.committed for r in rs] == [True, True, True, False]
    cc.leaving("k")
    assert cc.incoming("k").allowed
    for _ in range(10):  # never below zero
        cc.leaving("k")
    assert [cc.incoming("k").allowed for _ in range(4)] == [True, True, True, False]


def test_combine_all_or_nothing(store):
    a = limit.FixedWindow(store, 10, 3600, prefix="a:")
    b = limit.FixedWindow(store, 2, 3600, prefix="b:")
    for _ in range(2):
        overall, _ = limit.combine([a, b], ["k", "k"])
        assert overall.allowed
    overall, _ = limit.combine([a, b], ["k", "k"])
    assert not overall.allowed
    # a was not charged for the rejected request
    assert a.incoming("k").remaining == 10 - 3
    # the first limiter rejecting in its dry run charges nobody
    c = limit.FixedWindow(store, 1, 3600, prefix="c:")
    d = limit.FixedWindow(store, 5, 3600, prefix="d:")
    assert limit.combine([c, d], ["x", "x"])[0].allowed
    assert not limit.combine([c, d], ["x", "x"])[0].allowed
    assert d.incoming("x").remaining == 3


def _hammer(name: str, kind: str, n: int, out) -> None:
    d = SharedDict.attach(name)
    if kind == "fixed":
        lim = limit.FixedWindow(d, 100, 3600)
    elif kind == "bucket":
        lim = limit.LeakyBucket(d, rate=0.001, burst=99, nodelay=True)
    else:
        lim = limit.SlidingWindow(d, 100, 3600)
    out.put(sum(lim.incoming("shared").allowed for _ in range(n)))


@pytest.mark.parametrize("kind", ["fixed", "bucket", "sliding"])
def test_shm_limiters_are_race_free_across_processes(shm_zone, kind):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(shm_zone.name, kind, 60, q)) for _ in range(6)]
    for p in procs:
        p.start()
    allowed = sum(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert allowed == 100  # 360 tries, exactly the quota allowed


def test_redis_scripts_survive_script_flush(rstore, redis_server):  # noqa: F811
    fw = limit.FixedWindow(rstore, 5, 3600)
    assert fw.incoming("k").allowed
    assert redis_server.command("SCRIPT", "FLUSH") == "+OK"
    assert fw.incoming("k").remaining == 3


def test_redis_keys_always_have_a_ttl(rstore, redis_server):  # noqa: F811
    for lim in (limit.FixedWindow(rstore, 5, 60), limit.SlidingWindow(rstore, 5, 60),
                limit.LeakyBucket(rstore, 1, 5), limit.Concurrency(rstore, 5)):
        lim.incoming("ttl")
        key = lim.prefix.decode() + "ttl"
        ttl = int(redis_server.command("PTTL", key)[1:])
        assert ttl > 0, (type(lim).__name__, ttl)


def test_redis_down_fails_open_within_timeout(redis_server):  # noqa: F811
    ew_redis.configure({"r": Redis(url=redis_server.url, timeout=0.2, connect_timeout=0.2)})
    try:
        opened = limit.FixedWindow("redis:r", 1, 3600)
        closed = limit.FixedWindow("redis:r", 1, 3600, fail="closed", prefix="c:")
        raising = limit.FixedWindow("redis:r", 1, 3600, fail="raise", prefix="r:")
        assert opened.incoming("k").allowed
        assert not opened.incoming("k").allowed
        redis_server.pause()  # accepts, never answers: a slow Redis
        t0 = time.monotonic()
        r = opened.incoming("k")
        assert r.allowed and r.error is not None
        assert time.monotonic() - t0 < 1.5
        t0 = time.monotonic()
        assert not closed.incoming("k").allowed
        with pytest.raises(limit.StoreError):
            raising.incoming("k")
        assert time.monotonic() - t0 < 3.0
        redis_server.stop()  # down: refused at once
        t0 = time.monotonic()
        assert opened.incoming("k").allowed
        assert not closed.incoming("k").allowed
        assert time.monotonic() - t0 < 1.5
    finally:
        ew_redis.reset()


def test_errors_are_logged_without_flooding(redis_server, caplog):  # noqa: F811
    ew_redis.configure({"r": Redis(url=redis_server.url, timeout=0.2)})
    try:
        fw = limit.FixedWindow("redis:r", 1, 3600)
        redis_server.stop()
        with caplog.at_level("ERROR", logger="edgeworker"):
            for _ in range(50):
                assert fw.incoming("k").allowed
        msgs = [r for r in caplog.records if "store failed" in r.getMessage()]
        assert len(msgs) == 1
    finally:
        ew_redis.reset()


def test_bad_store_spec():
    with pytest.raises(ValueError):
        limit.FixedWindow("memcached:x", 1, 1)
    with pytest.raises(ValueError):
        limit.FixedWindow("shm:x", 1, 1, fail="maybe")


def test_cluster_store_shared_by_two_clients(redis_server):  # noqa: F811
    """Two independent clients (as two instances would have) share one quota."""
    c1 = ew_redis.build(Redis(url=redis_server.url))
    c2 = ew_redis.build(Redis(url=redis_server.url))
    a, b = limit.FixedWindow(c1, 7, 3600), limit.FixedWindow(c2, 7, 3600)
    allowed = sum((a if i % 2 else b).incoming("k").allowed for i in range(20))
    assert allowed == 7


def test_redis_server_helper_restarts_on_same_port():
    srv = RedisServer().start()
    port = srv.port
    srv.stop()
    srv2 = RedisServer(port=port).start()
    try:
        assert srv2.command("PING") == "+PONG"
    finally:
        srv2.stop()
