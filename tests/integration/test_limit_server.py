"""Declarative ``limit = { … }`` on real edgeworker processes, shm and Redis, and a cluster."""

from __future__ import annotations

import json
import time

import pytest

SHM_CONF = """
[shared_dict]
rl = "1m"

[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  match = "/limited"
  limit = {{ rate = "5r/h", store = "shm:rl" }}
  return = {{ status = 200, body = "ok" }}
  [[server.location]]
  match = "/burst"
  limit = {{ rate = "2r/h", burst = 1, store = "shm:rl", status = 503, key = "$http_x_user" }}
  return = {{ status = 200, body = "ok" }}
  [[server.location]]
  match = "/free"
  return = {{ status = 200, body = "free" }}
  [[server.location]]
  match = "/status"
  status = "json"
"""


def _redis_conf(url: str, fail: str = "open", rate: str = "6r/h") -> str:
    return f"""
[redis.main]
url = "{url}"
timeout = "200ms"
connect_timeout = "200ms"

[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "/api"
  limit = {{{{ rate = "{rate}", store = "redis:main", fail = "{fail}" }}}}
  return = {{{{ status = 200, body = "api" }}}}
"""


def test_shm_limit_counts_across_workers_and_sends_headers(server):
    srv = server(SHM_CONF, workers=3)
    results = [srv.get("/limited") for _ in range(7)]
    statuses = [s for s, _, _ in results]
    assert statuses == [200] * 5 + [429] * 2
    status, h, body = results[0]
    assert h["ratelimit-policy"] == '"default";q=5;w=3600'
    assert h["ratelimit"].startswith('"default";r=4;t=')
    assert h["x-ratelimit-limit-hour"] == "5"
    assert h["x-ratelimit-remaining-hour"] == "4"
    status, h, body = results[-1]
    assert json.loads(body) == {"error": "rate_limited"}
    assert h["content-type"].startswith("application/json")
    reset = int(h["retry-after"])
    assert 1 <= reset <= 3600
    assert h["ratelimit"] == f'"default";r=0;t={reset}'
    # other locations are not limited
    assert all(srv.get("/free")[0] == 200 for _ in range(10))
    # rejections show on the status page
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        doc = json.loads(srv.get("/status")[2])
        if doc.get("counters", {}).get("limit_rejections") == 2:
            break
        time.sleep(0.2)
    assert doc["counters"]["limit_rejections"] == 2


def test_limit_key_from_variable_burst_and_status(server):
    srv = server(SHM_CONF)
    alice = [srv.get("/burst", headers={"X-User": "alice"})[0] for _ in range(4)]
    assert alice == [200, 200, 200, 503]  # 2 per hour + burst 1
    assert srv.get("/burst", headers={"X-User": "bob"})[0] == 200


def test_redis_limit(server, redis_server):
    srv = server(_redis_conf(redis_server.url), workers=2)
    statuses = [srv.get("/api")[0] for _ in range(8)]
    assert statuses == [200] * 6 + [429] * 2


def test_redis_down_fails_open(server, redis_server):
    srv = server(_redis_conf(redis_server.url, rate="1r/h"))
    assert srv.get("/api")[0] == 200
    assert srv.get("/api")[0] == 429
    redis_server.stop()
    t0 = time.monotonic()
    for _ in range(20):
        status, h, _ = srv.get("/api")
        assert status == 200
        assert "ratelimit" not in h
    assert time.monotonic() - t0 < 10
    errors = srv.errors()
    assert errors.count("store failed") == 1, errors


def test_redis_slow_fails_open_within_timeout(server, redis_server):
    srv = server(_redis_conf(redis_server.url, rate="100r/h"))
    assert srv.get("/api")[0] == 200
    redis_server.pause()
    try:
        t0 = time.monotonic()
        assert srv.get("/api")[0] == 200
        assert time.monotonic() - t0 < 1.5  # 200 ms timeout + slack
    finally:
        redis_server.resume()


def test_redis_down_fail_closed(server, redis_server):
    srv = server(_redis_conf(redis_server.url, fail="closed"))
    assert srv.get("/api")[0] == 200
    redis_server.stop()
    status, h, body = srv.get("/api")
    assert status == 503
    assert h["retry-after"] == "1"
    assert json.loads(body) == {"error": "rate_limit_unavailable"}


@pytest.mark.parametrize("n", [10])
def test_cluster_two_instances_one_global_limit(server, redis_server, n):
    """Two edgeworker instances (2 workers each) sharing one redis-server: exactly N allowed."""
    conf = _redis_conf(redis_server.url, rate=f"{n}r/h")
    a = server(conf, workers=2)
    b = server(conf, workers=2)
    for _attempt in range(3):
        hour = int(time.time() // 3600)
        redis_server.command("FLUSHALL")
        statuses = [(a if i % 2 else b).get("/api")[0] for i in range(n + 5)]
        if int(time.time() // 3600) == hour:
            break  # the whole run stayed inside one window
    assert statuses.count(200) == n
    assert statuses[:n] == [200] * n
    assert statuses[n:] == [429] * 5


HANDLER_CONF = """
[shared_dict]
rl = "1m"

[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  match = "/seen"
  limit = {{ rate = "5r/h", store = "shm:rl" }}
  content = "lh:seen"
  header_filter = "lh:trim"
"""

LIMIT_HANDLERS = {
    "lh.py": """
        def seen(req):
            # the limit's headers are visible to the content handler once it takes resp_headers
            return "%s|%s" % (req.resp_headers.get("ratelimit-policy"),
                              req.resp_headers.get("x-ratelimit-remaining-hour"))

        def trim(req):
            del req.resp_headers["X-RateLimit-Limit-Hour"]
            req.resp_headers["X-Trimmed"] = "1"
    """,
}


def test_limit_headers_are_fields_handlers_can_read_and_remove(server):
    srv = server(HANDLER_CONF, files=LIMIT_HANDLERS, workers=1)
    status, h, body = srv.get("/seen")
    assert status == 200
    assert body == b'"default";q=5;w=3600|4'
    assert h["ratelimit-policy"] == '"default";q=5;w=3600'
    assert h["x-ratelimit-remaining-hour"] == "4"
    assert "x-ratelimit-limit-hour" not in h and h["x-trimmed"] == "1"
    assert "x-request-id" in h
