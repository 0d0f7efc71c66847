"""config/examples/mysql_pool.toml against a real MariaDB: PyMySQL yields under gevent, the
per-worker pool is bounded and times out, a database that is down answers 502."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time

import pytest

from ..mariadb_server import MariaDB
from ..support import free_port
from .test_examples import start_example

# locations beside the recipe's own: /sleep holds a pooled connection for ?s= seconds, /tls
# tells the connection's TLS version (empty without TLS)
TEST_MODULE = """
import mysql_pool

def sleep(req):
    rows = mysql_pool.query("SELECT SLEEP(%s)", (float(req.args.get("s")),))
    return "slept %s\\n" % rows[0][0]

def tls(req):
    return mysql_pool.query("SHOW SESSION STATUS LIKE 'Ssl_version'")[0][1]
"""
TEST_LOCATIONS = {
    '  match = "= /healthz"': '  match = "= /sleep"\n  content = "mysql_test:sleep"\n\n'
    '  [[server.location]]\n  match = "= /tls"\n  content = "mysql_test:tls"\n\n'
    '  [[server.location]]\n  match = "= /healthz"',
}


@pytest.fixture(scope="module")
def mariadb():
    db = MariaDB(tls=True).start()
    db.sql("CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(64))")
    db.sql("INSERT INTO users VALUES (42, 'Ada'), (7, 'Grace')")
    yield db
    db.stop()


def start(tmp_path, db: MariaDB, **env: str):
    return start_example(
        tmp_path,
        "mysql_pool",
        workers=1,
        replace=TEST_LOCATIONS,
        env={**db.env(), **env},
        files={"mysql_test.py": TEST_MODULE},
    )


def timed_get(port: int, path: str, out: list, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        out.append((r.status, r.read(), time.monotonic() - t0))
    finally:
        conn.close()


def test_fifty_slow_queries_in_one_worker_while_others_are_served(tmp_path, mariadb):
    srv = start(tmp_path, mariadb, MYSQL_POOL_SIZE="60")
    try:
        assert srv.get("/users/42")[2] == json.dumps({"id": 42, "name": "Ada"}).encode()
        assert srv.get("/users/1")[0] == 404

        slow: list = []
        threads = [
            threading.Thread(target=timed_get, args=(srv.port, "/sleep?s=1", slow))
            for _ in range(50)
        ]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.2)  # the sleeps are running: the same worker serves the others meanwhile
        others: list = []
        while time.monotonic() - t0 < 0.9:
            timed_get(srv.port, "/healthz", others)
            timed_get(srv.port, "/users/7", others)
        for t in threads:
            t.join(10)
        elapsed = time.monotonic() - t0

        assert [s for s, _, _ in slow] == [200] * 50, slow
        assert elapsed < 3.0, f"50 x SLEEP(1) took {elapsed:.2f} s"
        assert {(s, b) for s, b, _ in others} == {
            (200, b"ok\n"),
            (200, json.dumps({"id": 7, "name": "Grace"}).encode()),
        }
        latencies = [t for _, _, t in others]
        print(
            f"50 x SLEEP(1): {elapsed:.2f} s; {len(others)} other requests meanwhile, "
            f"latency median {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms"
        )
        assert max(latencies) < 0.5, latencies
        assert len(others) >= 10
    finally:
        srv.stop()


def test_pool_is_bounded_and_times_out(tmp_path, mariadb):
    srv = start(tmp_path, mariadb, MYSQL_POOL_SIZE="2", MYSQL_POOL_TIMEOUT="0.3")
    try:
        results: list = []
        busy = [
            threading.Thread(target=timed_get, args=(srv.port, "/sleep?s=1", results))
            for _ in range(2)
        ]
        for t in busy:
            t.start()
        time.sleep(0.3)  # both connections are taken
        waited: list = []
        timed_get(srv.port, "/users/42", waited)
        for t in busy:
            t.join(10)
        status, body, took = waited[0]
        assert (status, body) == (503, b"database busy\n")
        assert 0.25 < took < 1.0, took
        assert "no MySQL connection free within 0.3 s (pool of 2)" in srv.errors()
        assert sorted(s for s, _, _ in results) == [200, 200]
        # the connections went back to the pool
        assert srv.get("/users/42")[0] == 200
    finally:
        srv.stop()


def test_database_down_is_a_502(tmp_path, mariadb):
    srv = start(tmp_path, mariadb, MYSQL_PORT=str(free_port()))
    try:
        status, _, body = srv.get("/users/42")
        assert (status, body) == (502, b"database unavailable\n")
        assert "MySQL query failed" in srv.errors()
    finally:
        srv.stop()


def test_tls_when_a_ca_is_given(tmp_path, mariadb):
    """MYSQL_SSL_CA: TLS with the certificate verified; without it, no TLS (one context per
    worker instead of PyMySQL's per-connection one)."""
    srv = start(tmp_path / "tls", mariadb, MYSQL_SSL_CA=str(mariadb.ca))
    try:
        status, _, version = srv.get("/tls")
        assert status == 200 and version.startswith(b"TLSv1."), srv.errors()[-3000:]
        assert srv.get("/users/42")[0] == 200
    finally:
        srv.stop()
    plain = start(tmp_path / "plain", mariadb)
    try:
        status, _, version = plain.get("/tls")
        assert (status, version) == (200, b"")
    finally:
        plain.stop()
