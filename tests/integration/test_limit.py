"""edgeworker.lib.limit: every limiter on a real shared dict and a real redis-server."""

from __future__ import annotations

import multiprocessing as mp
import re
import time

import pytest

from edgeworker import redis as ew_redis
from edgeworker.config import Redis
from edgeworker.lib import limit
from edgeworker.lib.limit import declarative
from shm import SharedDict

from ..redis_server import RedisServer


@pytest.fixture
def shm_zone(zones):
    return zones("1m", "limit")


@pytest.fixture
def rstore(redis_server):
    ew_redis.configure({"default": Redis(url=redis_server.url)})
    yield "redis:default"
    ew_redis.reset()


@pytest.fixture(params=["shm", "redis"])
def store(request, shm_zone, redis_server):
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


def test_redis_scripts_survive_script_flush(rstore, redis_server):
    fw = limit.FixedWindow(rstore, 5, 3600)
    assert fw.incoming("k").allowed
    assert redis_server.command("SCRIPT", "FLUSH") == "+OK"
    assert fw.incoming("k").remaining == 3


def test_redis_keys_always_have_a_ttl(rstore, redis_server):
    for lim in (limit.FixedWindow(rstore, 5, 60), limit.SlidingWindow(rstore, 5, 60),
                limit.LeakyBucket(rstore, 1, 5), limit.Concurrency(rstore, 5)):
        lim.incoming("ttl")
        key = lim.prefix.decode() + "ttl"
        ttl = int(redis_server.command("PTTL", key)[1:])
        assert ttl > 0, (type(lim).__name__, ttl)


def test_redis_down_fails_open_within_timeout(redis_server):
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


def test_errors_are_logged_without_flooding(redis_server, caplog):
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


def test_cluster_store_shared_by_two_clients(redis_server):
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


# ---------------------------------------------------------------- declarative limit on shm
# make_access's handler for a shared-dict limit keyed by $binary_remote_addr: one atomic incr
# per request, the four RateLimit header lines, 429 past the quota.


class _Req:
    def __init__(self, addr: bytes, resp_headers=None) -> None:
        self.binary_remote_addr = addr
        self.header_lines = b"\r\nX-Request-Id: r"
        self.resp_fields = resp_headers
        self.added: list[bytes] = []
        self.exited = None

    def add_header_lines(self, block: bytes) -> None:
        self.added.append(block)

    def exit(self, status, body=None, headers=None, content_type=None):
        self.exited = (status, body, headers, content_type)


def _declarative(zone_key: str, rate: str, burst: int, fail: str = "open"):
    from types import SimpleNamespace

    from edgeworker.units import Rate

    count, _, unit = rate.partition("r/")
    conf = declarative.Limit(
        rate=Rate(float(count), {"s": 1.0, "m": 60.0}[unit]),
        store=f"shm:{zone_key}",
        burst=burst,
        fail=fail,
    )
    return limit.make_access(SimpleNamespace(limit=conf, path="/lim"), None)


def _zones_with(monkeypatch, **zones):
    """``edgeworker.shared`` for this test: the running set plus ``zones``."""
    from edgeworker import runtime

    shared = runtime.SharedDicts()
    shared._install({**runtime.shared, **zones})
    monkeypatch.setattr(runtime, "shared", shared)
    return shared


def test_declarative_shm_limit_counts_per_address(shm_zone, monkeypatch):
    _zones_with(monkeypatch, lim=shm_zone)
    access = _declarative("lim", "5r/m", 2)
    seen = []
    for i in range(16):
        req = _Req(bytes([127, 0, 0, 1 + i % 2]))
        access(req)
        left = max(0, 7 - (i // 2 + 1))  # 5 + burst 2 per address
        assert re.fullmatch(
            rb'\r\nX-Request-Id: r\r\nRateLimit-Policy: "default";q=7;w=60\r\n'
            rb'RateLimit: "default";r=%d;t=(\d+)\r\nX-RateLimit-Limit-Minute: 7\r\n'
            rb"X-RateLimit-Remaining-Minute: %d" % (left, left),
            req.header_lines,
        ), req.header_lines
        seen.append(req.exited is not None)
    assert seen == [False] * 14 + [True, True]  # 7 per address, then 429
    reset = re.search(rb";t=(\d+)", req.header_lines).group(1).decode()
    assert 1 <= int(reset) <= 60
    assert req.exited == (
        429,
        b'{"error":"rate_limited"}',
        {"Retry-After": reset},
        "application/json",
    )
    # a rejected request is not counted: each address stays at the quota
    assert shm_zone.get(b"ew:limit:/lim:\x7f\x00\x00\x01") == 7
    assert shm_zone.get(b"ew:limit:/lim:\x7f\x00\x00\x02") == 7
    # a handler took resp_headers: the block goes through add_header_lines
    req = _Req(b"\x0a\x00\x00\x01", resp_headers=object())
    access(req)
    assert len(req.added) == 1 and req.header_lines == b"\r\nX-Request-Id: r"
    assert req.added[0].startswith(b'\r\nRateLimit-Policy: "default";q=7;w=60\r\nRateLimit:')
    assert req.exited is None


def test_declarative_shm_limit_reset_follows_the_clock(shm_zone, monkeypatch):
    # the allowed block is built from pieces kept for the last reset: each new reset shows
    _zones_with(monkeypatch, lim=shm_zone)
    clock = [6000.25]
    monkeypatch.setattr(declarative.time, "time", lambda: clock[0])
    access = _declarative("lim", "50r/m", 0)
    for n, (now, reset) in enumerate(
        [(6000.25, 60), (6000.5, 60), (6030.5, 30), (6030.9, 30), (6059.5, 1), (6059.99, 1)]
    ):
        clock[0] = now
        req = _Req(b"\x7f\x00\x00\x05")
        access(req)
        left = 50 - (n + 1)
        assert req.header_lines == (
            b'\r\nX-Request-Id: r\r\nRateLimit-Policy: "default";q=50;w=60\r\n'
            b'RateLimit: "default";r=%d;t=%d\r\nX-RateLimit-Limit-Minute: 50\r\n'
            b"X-RateLimit-Remaining-Minute: %d" % (left, reset, left)
        )
        assert req.exited is None


def test_declarative_shm_limit_store_failure_and_odd_values(shm_zone, monkeypatch):
    import shm

    zones = _zones_with(monkeypatch, lim=shm_zone)
    access = _declarative("lim", "100r/s", 0)
    # a float under the key (put there by someone else): counted on from it
    shm_zone.set(b"ew:limit:/lim:\x7f\x00\x00\x09", 1.5, 10)
    req = _Req(b"\x7f\x00\x00\x09")
    access(req)
    assert b'RateLimit: "default";r=97;' in req.header_lines and req.exited is None

    class Full:  # a shared dict whose incr fails
        def incr(self, *args):
            raise shm.NoMemory("full")

    # the store fails: "open" lets the request through without RateLimit lines, "closed"
    # answers 503
    zones._install({"lim": Full()})
    unavailable = (
        503,
        b'{"error":"rate_limit_unavailable"}',
        {"Retry-After": "1"},
        "application/json",
    )
    for fail, exited in (("open", None), ("closed", unavailable)):
        req = _Req(b"\x7f\x00\x00\x0a")
        _declarative("lim", "100r/s", 0, fail)(req)
        assert req.header_lines == b"\r\nX-Request-Id: r" and req.exited == exited, fail
    # a zone that does not exist is a mistake, not a store failure: raised
    zones._install({})
    with pytest.raises(KeyError):
        _declarative("lim", "100r/s", 0)(_Req(b"\x7f\x00\x00\x0a"))
