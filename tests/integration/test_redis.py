"""edgeworker.redis: per-worker clients for [redis.NAME], in-process and in real workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from edgeworker import redis as ew_redis
from edgeworker.config import Redis

from ..redis_server import RedisServer
from ..support import free_port

HANDLER = """
import os, sys
import edgeworker

SEEN = {}

def init():
    # the master must not import redis-py
    with open("master.txt", "w") as f:
        f.write(str("redis" in sys.modules))

def init_worker():
    SEEN["init_worker"] = edgeworker.redis.client("default").ping()

def hit(req):
    r = edgeworker.redis.client("default")
    n = r.incr("hits")
    return {"hits": n, "pid": os.getpid(), "pool": id(r.connection_pool),
            "init_worker": SEEN.get("init_worker")}

def missing(req):
    try:
        edgeworker.redis.client("nope")
    except KeyError as exc:
        return {"error": str(exc)}
"""


def _conf(url: str) -> str:
    return f"""
[main]
init = "app:init"
init_worker = "app:init_worker"

[redis.default]
url = "{url}"
pool_size = 4

[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "/hit"
  content = "app:hit"
  [[server.location]]
  match = "/missing"
  content = "app:missing"
"""


def test_client_in_workers(server, redis_server):
    srv = server(_conf(redis_server.url), files={"app.py": HANDLER}, workers=2)
    docs = [json.loads(srv.get("/hit")[2]) for _ in range(20)]
    assert sorted(d["hits"] for d in docs) == list(range(1, 21))
    assert all(d["init_worker"] is True for d in docs)
    assert (srv.dir / "master.txt").read_text() == "False"
    # one pool per worker process
    pools = {d["pid"]: d["pool"] for d in docs}
    assert len(pools) >= 1 and all(isinstance(p, int) for p in pools.values())
    doc = json.loads(srv.get("/missing")[2])
    assert "no redis connection 'nope'" in doc["error"] and "default" in doc["error"]


def test_import_edgeworker_does_not_import_redis():
    code = "import sys, edgeworker; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "False", out.stderr
    code = ("import sys, edgeworker; c = edgeworker.redis; "
            "print('redis' in sys.modules, c.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "True edgeworker.redis", out.stderr


def test_pool_is_rebuilt_after_fork(redis_server):
    ew_redis.configure({"default": Redis(url=redis_server.url)})
    try:
        parent = ew_redis.client()
        assert parent.ping()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                child = ew_redis.client()
                ok = child is not parent and child.ping()
                os.write(w, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(r, 1) == b"1"
        assert ew_redis.client() is parent
    finally:
        ew_redis.reset()


def test_timeouts_bound_a_stalled_redis(redis_server):
    import redis

    ew_redis.configure({"s": Redis(url=redis_server.url, timeout=0.2, connect_timeout=0.2)})
    try:
        c = ew_redis.client("s")
        assert c.ping()
        redis_server.pause()
        t0 = time.monotonic()
        with pytest.raises(redis.RedisError):
            c.get("x")
        assert time.monotonic() - t0 < 1.0  # no retries stacked on the 200 ms timeout
    finally:
        redis_server.resume()
        ew_redis.reset()


def test_pool_size_is_a_bound(redis_server):
    import redis

    ew_redis.configure({"p": Redis(url=redis_server.url, pool_size=2, timeout=0.2)})
    try:
        c = ew_redis.client("p")
        pool = c.connection_pool
        held = [pool.get_connection(), pool.get_connection()]
        t0 = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            pool.get_connection()
        assert time.monotonic() - t0 < 1.0
        for conn in held:
            pool.release(conn)
    finally:
        ew_redis.reset()


def test_reconfigure_drops_changed_clients(redis_server):
    ew_redis.configure({"a": Redis(url=redis_server.url)})
    try:
        c1 = ew_redis.client("a")
        ew_redis.configure({"a": Redis(url=redis_server.url)})
        assert ew_redis.client("a") is c1
        ew_redis.configure({"a": Redis(url=redis_server.url, pool_size=3)})
        assert ew_redis.client("a") is not c1
    finally:
        ew_redis.reset()


def test_sentinel_url(tmp_path, redis_server):
    """A real redis-server in sentinel mode in front of the test server."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    sentinel = RedisServer(port=port)
    sentinel.proc = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from ..support import wait_port

        wait_port(port, proc=sentinel.proc)
        ew_redis.configure({"s": Redis(url=f"redis://127.0.0.1:{port}/0?sentinel=mymaster",
                                       timeout=1, connect_timeout=1)})
        deadline = time.monotonic() + 10
        while True:
            try:
                c = ew_redis.client("s")
                c.set("via-sentinel", "yes")
                break
            except Exception:
                ew_redis.reset()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert redis_server.command("GET", "via-sentinel") == "$3"
    finally:
        ew_redis.reset()
        sentinel.stop()


def test_cluster_url():
    """A one-node Redis Cluster owning every slot; the limiter runs its scripts on it."""
    from edgeworker.lib import limit

    port = free_port()
    while port + 10000 > 65535:  # the cluster bus listens on port + 10000
        port = free_port()
    node = RedisServer(port=port, extra=("--cluster-enabled", "yes", "--cluster-config-file",
                              "nodes.conf")).start()
    try:
        assert node.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383") == "+OK"
        deadline = time.monotonic() + 10
        while "cluster_state:ok" not in _info(node):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ew_redis.configure({"c": Redis(url=f"redis://127.0.0.1:{node.port}?cluster=1")})
        c = ew_redis.client("c")
        assert type(c).__name__ == "RedisCluster"
        c.set("k", "v")
        assert c.get("k") == b"v"
        fw = limit.FixedWindow("redis:c", 2, 3600, fail="raise")
        assert [fw.incoming("x").allowed for _ in range(3)] == [True, True, False]
    finally:
        ew_redis.reset()
        node.stop()


def _info(node: RedisServer) -> str:
    import socket

    with socket.create_connection(("127.0.0.1", node.port), timeout=2) as s:
        s.sendall(b"CLUSTER INFO\r\n")
        time.sleep(0.05)
        return s.recv(65536).decode()
