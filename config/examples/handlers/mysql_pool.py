"""MariaDB / MySQL with PyMySQL and a small connection pool per worker.

The worker monkey-patches the standard library with gevent before it imports handler modules,
so PyMySQL's sockets are gevent's: while one request waits for the database, the worker serves
the others. Each worker has its own pool (connections are opened after the fork, in
``init_worker``), bounded to ``MYSQL_POOL_SIZE`` connections: a request that finds them all busy
waits up to ``MYSQL_POOL_TIMEOUT`` seconds, then gets 503 instead of piling up.

Settings (environment): MYSQL_HOST (127.0.0.1), MYSQL_PORT (3306), MYSQL_USER, MYSQL_PASSWORD,
MYSQL_DATABASE, MYSQL_POOL_SIZE (10), MYSQL_POOL_TIMEOUT (5 s), MYSQL_TIMEOUT (5 s: connect,
read and write timeout of a connection), MYSQL_SSL_CA (a CA file: TLS required, the server's
certificate and name verified; unset: no TLS, for a database on this host or a private link).

TLS is decided here, not left to PyMySQL: since 1.2 PyMySQL tries TLS by default and builds a
new TLS context for every connection, which loads the system's CA bundle (about 40 ms of CPU
during which the worker serves nobody). This module builds one context per worker and reuses it.

OpenResty original (lua-resty-mysql)::

    local db = mysql:new(); db:set_timeout(1000)
    local ok, err = db:connect{ host = "127.0.0.1", port = 3306, database = "shop", ... }
    local rows = db:query("SELECT id, name FROM users WHERE id = " .. ngx.quote_sql_str(id))
    db:set_keepalive(10000, 10)
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pymysql

import edgeworker


class PoolTimeout(Exception):
    """Every connection of the pool stayed busy for the whole wait."""


class Pool:
    """At most ``size`` connections made by ``connect``; ``connection()`` lends one.

    ``threading`` is gevent's in a worker, so waiting for a free connection yields. Idle
    connections are kept (most recently used first) and checked with a ping when they have been
    idle longer than ``ping_after`` seconds; a connection whose use raised is closed, not reused.
    """

    def __init__(
        self,
        connect: Callable[[], pymysql.connections.Connection],
        size: int,
        timeout: float,
        ping_after: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, not {size}")
        self.connect = connect
        self.size = size
        self.timeout = timeout
        self.ping_after = ping_after
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[tuple[pymysql.connections.Connection, float]] = []

    @contextmanager
    def connection(self) -> Iterator[pymysql.connections.Connection]:
        if not self._slots.acquire(timeout=self.timeout):
            raise PoolTimeout(
                f"no MySQL connection free within {self.timeout:g} s (pool of {self.size})"
            )
        conn = None
        try:
            conn = self._take()
            yield conn
        except BaseException:
            if conn is not None:
                conn.close()  # state unknown (broken link, open transaction): never reuse
                conn = None
            raise
        finally:
            if conn is not None:
                self._idle.append((conn, time.monotonic()))
            self._slots.release()

    def _take(self) -> pymysql.connections.Connection:
        while self._idle:
            conn, since = self._idle.pop()
            if time.monotonic() - since < self.ping_after:
                return conn
            try:
                conn.ping(reconnect=False)
                return conn
            except pymysql.MySQLError:
                conn.close()
        return self.connect()

    def close(self) -> None:
        while self._idle:
            conn, _ = self._idle.pop()
            conn.close()


pool: Pool | None = None  # this worker's, made in init_worker
tls: ssl.SSLContext | None = None  # likewise


def _tls_context() -> ssl.SSLContext | None:
    """One TLS context for every connection of this worker (MYSQL_SSL_CA set), else None."""
    ca = os.environ.get("MYSQL_SSL_CA")
    return ssl.create_default_context(cafile=ca) if ca else None


def _connect() -> pymysql.connections.Connection:
    timeout = float(os.environ.get("MYSQL_TIMEOUT", "5"))
    return pymysql.connect(
        ssl=tls,
        ssl_disabled=tls is None,
        host=os.environ.get("MYSQL_HOST", "127.0.0.1"),
        port=int(os.environ.get("MYSQL_PORT", "3306")),
        user=os.environ.get("MYSQL_USER", ""),
        password=os.environ.get("MYSQL_PASSWORD", ""),
        database=os.environ.get("MYSQL_DATABASE") or None,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
        autocommit=True,
        charset="utf8mb4",
    )


def init_worker() -> None:
    global pool, tls
    tls = _tls_context()
    pool = Pool(
        _connect,
        size=int(os.environ.get("MYSQL_POOL_SIZE", "10")),
        timeout=float(os.environ.get("MYSQL_POOL_TIMEOUT", "5")),
    )


def exit_worker() -> None:
    if pool is not None:
        pool.close()


def query(sql: str, args: tuple = ()) -> list[tuple]:
    """Run one statement on a pooled connection and return its rows. Raises ``PoolTimeout``
    when the pool stays busy, ``pymysql.MySQLError`` when the database fails."""
    assert pool is not None, "init_worker did not run"
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def user(req):
    try:
        rows = query("SELECT id, name FROM users WHERE id = %s", (int(req.var["1"]),))
    except PoolTimeout as exc:
        edgeworker.log.warning("%s", exc)
        req.exit(503, "database busy\n", headers={"Retry-After": "1"})
    except pymysql.MySQLError as exc:
        edgeworker.log.error("MySQL query failed: %s", exc)
        req.exit(502, "database unavailable\n")
    if not rows:
        req.exit(404, "no such user\n")
    uid, name = rows[0]
    req.resp_headers["Content-Type"] = "application/json"
    return json.dumps({"id": uid, "name": name})
