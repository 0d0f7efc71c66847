"""edgeworker.lib.cache.Cache: L1/L2/L3, negative caching, stale serving, single flight,
invalidation across processes and across instances (Redis pub/sub)."""

from __future__ import annotations

import json
import multiprocessing as mp
import time

import pytest

from edgeworker.lib.cache import Cache, WithTTL
from shm import SharedDict


@pytest.fixture
def zone(zones):
    return zones("2m", "mlc")


def test_levels(zone):
    calls = []
    c = Cache("users", zone, ttl=30)

    def load(uid):
        calls.append(uid)
        return {"id": uid, "tags": ["a", "b"]}

    assert c.get_with_level("42", load, "42") == ({"id": "42", "tags": ["a", "b"]}, 3)
    assert c.get_with_level("42", load, "42")[1] == 1
    c.lru.flush_all()  # as another worker would see it
    assert c.get_with_level("42", load, "42") == ({"id": "42", "tags": ["a", "b"]}, 2)
    assert calls == ["42"]
    assert c.get_with_level("nope") == (None, -1)
    left, value, stale = c.peek("42")
    assert 29 < left <= 30 and value["id"] == "42" and not stale


def test_negative_caching_and_ttl_override(zone):
    calls = []
    c = Cache("neg", zone, ttl=30, neg_ttl=0.2)

    def missing():
        calls.append(1)

    assert c.get("x", missing) is None
    assert c.get_with_level("x", missing) == (None, 1)
    c.lru.flush_all()
    assert c.get_with_level("x", missing) == (None, 2)
    assert len(calls) == 1
    time.sleep(0.25)
    c.lru.flush_all()
    assert c.get_with_level("x", missing)[1] == 3
    # ttl < 0: returned, not cached
    assert c.get_with_level("y", lambda: WithTTL("v", -1)) == ("v", 3)
    assert c.get_with_level("y", lambda: WithTTL("v2", 5)) == ("v2", 3)
    assert c.get_with_level("y", lambda: "v3") == ("v2", 1)


def test_serve_stale_on_callback_error(zone):
    c = Cache("stale", zone, ttl=0.1, resurrect_ttl=5)
    assert c.get("k", lambda: "good") == "good"
    time.sleep(0.15)

    def broken():
        raise ConnectionError("backend down")

    assert c.get_with_level("k", broken) == ("good", 4)
    assert c.get_with_level("k", broken) == ("good", 1)  # resurrected for resurrect_ttl
    strict = Cache("strict", zone, ttl=0.1)
    strict.get("k", lambda: "good")
    time.sleep(0.15)
    with pytest.raises(ConnectionError):
        strict.get("k", broken)


def _cold_get(name: str, out) -> None:
    d = SharedDict.attach(name)
    c = Cache("sf", d, ttl=30)

    def slow():
        d.incr("callback-runs", 1, init=0)
        time.sleep(0.3)
        return "loaded"

    out.put(c.get_with_level("cold", slow))


def test_single_flight_across_processes(zone):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_cold_get, args=(zone.name, q)) for _ in range(5)]
    for p in procs:
        p.start()
    results = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert zone.get("callback-runs") == 1
    assert sorted(level for _, level in results) == [2, 2, 2, 2, 3]
    assert all(v == "loaded" for v, _ in results)


def _reader(name: str, ready, go, out) -> None:
    d = SharedDict.attach(name)
    c = Cache("inv", d, ttl=300)
    first = c.get("k", lambda: "old")
    ready.set()
    go.wait(10)
    out.put((first, c.get_with_level("k", lambda: "reloaded")))


def test_invalidation_across_processes(zone):
    ctx = mp.get_context("fork")
    q, ready, go = ctx.Queue(), ctx.Event(), ctx.Event()
    writer = Cache("inv", zone, ttl=300)
    writer.get("k", lambda: "old")
    p = ctx.Process(target=_reader, args=(zone.name, ready, go, q))
    p.start()
    assert ready.wait(10)
    writer.set("k", "new")
    go.set()
    first, (value, level) = q.get(timeout=10)
    p.join(10)
    assert first == "old"
    assert (value, level) == ("new", 2)  # its L1 copy was dropped, L2 has the new value
    writer.delete("k")
    assert writer.get_with_level("k") == (None, -1)


def test_purge(zone):
    c = Cache("p", zone)
    other = Cache("other", zone)
    for i in range(5):
        c.set(f"k{i}", i)
    other.set("k0", "keep")
    c.purge()
    assert c.get_with_level("k1") == (None, -1)
    assert other.get("k0") == "keep"


SUB_HANDLER = """
import edgeworker
from edgeworker.lib.cache import Cache

cache = None

def init_worker():
    global cache
    cache = Cache("cfg", "cache", ttl=300, redis="redis:default")
    cache.subscribe()

def load(key):
    return edgeworker.redis.client("default").get("src:" + key).decode()

def get(req):
    value, level = cache.get_with_level(req.args.get("k"), load, req.args.get("k"))
    return {"value": value, "level": level, "subscribed": cache._subscribed.is_set()}

def delete(req):
    cache.delete(req.args.get("k"))
    return "ok"
"""


def _sub_conf(url: str) -> str:
    return f"""
[main]
init_worker = "app:init_worker"

[shared_dict]
cache = "1m"

[redis.default]
url = "{url}"

[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "/get"
  content = "app:get"
  [[server.location]]
  match = "/del"
  content = "app:delete"
"""


def test_invalidation_across_instances_through_redis(server, redis_server):
    redis_server.command("SET", "src:color", "red")
    a = server(_sub_conf(redis_server.url), files={"app.py": SUB_HANDLER}, workers=2)
    b = server(_sub_conf(redis_server.url), files={"app.py": SUB_HANDLER}, workers=2)
    for srv in (a, b):
        for _ in range(4):
            doc = json.loads(srv.get("/get?k=color")[2])
            assert doc["value"] == "red"
    redis_server.command("SET", "src:color", "blue")
    # still cached everywhere
    assert json.loads(b.get("/get?k=color")[2])["value"] == "red"
    assert a.get("/del?k=color")[0] == 200
    deadline = time.monotonic() + 5
    while True:
        values = [json.loads(srv.get("/get?k=color")[2])["value"]
                  for srv in (a, b) for _ in range(4)]
        if set(values) == {"blue"} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(values) == {"blue"}
