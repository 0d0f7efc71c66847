"""edgeworker.redis_mux: the Redis limiters' client, against a real redis-server.

Behaviours are checked in both modes: ``cooperative`` (gevent, as in a worker: one pipelined
connection) and blocking (threads, as in a script or this test process: a bounded pool).
"""

from __future__ import annotations

import socket
import threading
import time

import gevent
import pytest
import redis
from redis import exceptions as rexc

from edgeworker import redis as ew_redis
from edgeworker import redis_mux
from edgeworker.config import Redis
from edgeworker.lib import limit

from ..redis_server import RedisServer
from ..support import free_port

MODES = [pytest.param(True, id="gevent"), pytest.param(False, id="blocking")]

SCRIPTS = [
    "return 1",
    "return -42",
    "return {1, 2, {3, 'x', {}}}",
    "return 'bulk'",
    "return ''",
    "return nil",
    "return false",
    "return true",
    "return {ok='FINE'}",
    "return {}",
    "return {1, nil, 3}",
    "return 3.7",
    "return redis.call('TIME')",
    "return string.rep('ab', 100000)",
    "return {KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]}",
]


def _pool(srv: RedisServer, coop: bool, **kw) -> redis_mux.Pool:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("connect_timeout", 1.0)
    return redis_mux.Pool(("127.0.0.1", srv.port), cooperative=coop, **kw)


def _client_ids(srv: RedisServer) -> list[int]:
    r = redis.Redis(port=srv.port)
    try:
        me = r.client_id()
        return sorted(c["id"] for c in r.client_list() if c["id"] != me)
    finally:
        r.close()


@pytest.fixture(params=MODES)
def coop(request):
    old = redis_mux.COOPERATIVE
    redis_mux.COOPERATIVE = request.param
    try:
        yield request.param
    finally:
        redis_mux.COOPERATIVE = old
        ew_redis.reset()


# ------------------------------------------------------------------------------ replies
@pytest.mark.parametrize("mode", MODES)
def test_replies_are_what_redis_py_returns(redis_server, mode):
    ref = redis.Redis(port=redis_server.port)
    p = _pool(redis_server, mode)
    args = [7, "é", b"\x00\xff", 2.5]
    try:
        for src in SCRIPTS:
            want = ref.eval(src, 1, b"k\x00", *args)
            got = p.evalsha(redis_mux.Script(src), [b"k\x00"], args)
            if "TIME" in src:
                assert [type(x) for x in got] == [type(x) for x in want] == [bytes, bytes]
                continue
            assert type(got) is type(want) and got == want, src
        # status replies and plain commands
        assert p.execute("SET", "a", 5) == b"OK"  # raw replies: no redis-py callbacks
        assert p.execute("GET", "a") == b"5"
        assert p.execute("INCR", "a") == 6
        assert p.execute("GET", "missing") is None
    finally:
        ref.close()
        p.close()


@pytest.mark.parametrize("mode", MODES)
def test_error_replies_raise_redis_py_classes_and_keep_the_connection(redis_server, mode):
    p = _pool(redis_server, mode)
    cid = p.execute("CLIENT", "ID")
    with pytest.raises(rexc.ResponseError, match="boom"):
        p.evalsha(redis_mux.Script("return redis.error_reply('ERR boom')"), [], [])
    with pytest.raises(rexc.ResponseError) as info:
        p.execute("NOSUCHCOMMAND")
    assert type(info.value) is rexc.ResponseError
    p.execute("SET", "s", "x")
    with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
        p.execute("LPUSH", "s", 1)
    # an error nested in an array is returned in place, as redis-py does
    nested = p.evalsha(redis_mux.Script("return {1, redis.error_reply('ERR inner')}"), [], [])
    assert nested[0] == 1 and isinstance(nested[1], rexc.ResponseError)
    assert p.execute("CLIENT", "ID") == cid and p.opened == 1
    with pytest.raises(rexc.DataError):
        p.execute("SET", "b", True)
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_noscript_after_script_flush_loads_and_retries(redis_server, mode):
    p = _pool(redis_server, mode)
    s = redis_mux.Script("return {tonumber(ARGV[1]) + 1, KEYS[1]}")
    assert p.evalsha(s, [b"k"], [41]) == [42, b"k"]
    assert redis_server.command("SCRIPT", "FLUSH") == "+OK"
    assert redis_server.command("SCRIPT", "EXISTS", s.sha) == "*1"  # the array header
    assert p.evalsha(s, [b"k"], [1]) == [2, b"k"]
    assert p.execute("SCRIPT", "EXISTS", s.sha) == [1]
    assert p.opened == 1
    p.close()


# ------------------------------------------------------------------------------ auth, db, urls
@pytest.mark.parametrize("mode", MODES)
def test_auth_with_password_and_acl_user(redis_server, mode):
    assert (
        redis_server.command("ACL", "SETUSER", "alice", "on", ">s3cret", "~*", "&*", "+@all")
        == "+OK"
    )
    assert redis_server.command("CONFIG", "SET", "requirepass", "p@ss") == "+OK"
    host = f"127.0.0.1:{redis_server.port}"
    for url in (
        f"redis://:p%40ss@{host}/0",
        f"redis://alice:s3cret@{host}/0",
        f"redis://default:p%40ss@{host}",
    ):
        p = redis_mux.Pool(cooperative=mode, **redis_mux.lean_params(url))
        assert p.execute("SET", "who", url) == b"OK"
        assert p.execute("GET", "who") == url.encode()
        p.close()
    for url in (f"redis://:wrong@{host}/0", f"redis://alice:nope@{host}/0"):
        p = redis_mux.Pool(cooperative=mode, **redis_mux.lean_params(url))
        with pytest.raises(rexc.AuthenticationError):
            p.execute("PING")
        assert p.opened == 0
    # no password at all: the server's NOAUTH error reply, raised as redis-py does
    p = redis_mux.Pool(cooperative=mode, **redis_mux.lean_params(f"redis://{host}/0"))
    with pytest.raises(rexc.AuthenticationError):
        p.execute("GET", "who")


def test_limiter_on_a_password_protected_redis(redis_server, coop):
    assert redis_server.command("CONFIG", "SET", "requirepass", "pw") == "+OK"
    ew_redis.configure({"default": Redis(url=f"redis://:pw@127.0.0.1:{redis_server.port}/0")})
    fw = limit.FixedWindow("redis:default", 2, 3600, fail="raise")
    assert [fw.incoming("k").allowed for _ in range(3)] == [True, True, False]
    assert fw.store._lean
    assert fw.store.get().cooperative is coop


@pytest.mark.parametrize("mode", MODES)
def test_db_from_the_url_path_and_query(redis_server, mode):
    host = f"127.0.0.1:{redis_server.port}"
    for url, db in (
        (f"redis://{host}/3", 3),
        (f"redis://{host}/5?db=4", 4),
        (f"redis://{host}", 0),
    ):
        p = redis_mux.Pool(cooperative=mode, **redis_mux.lean_params(url))
        p.execute("SET", "where", url)
        p.close()
        check = redis.Redis(port=redis_server.port, db=db)
        assert check.get("where") == url.encode()
        check.close()


def test_unix_socket_url(coop):
    srv = RedisServer()
    sock_path = f"{srv.dir}/redis.sock"
    srv.extra = ("--unixsocket", sock_path)
    with srv:
        ew_redis.configure({"u": Redis(url=f"unix://{sock_path}?db=2")})
        fw = limit.FixedWindow("redis:u", 1, 3600, prefix="ux:", fail="raise")
        assert [fw.incoming("k").allowed for _ in range(2)] == [True, False]
        assert fw.store._lean
        assert redis.Redis(port=srv.port, db=2).get("ux:k") == b"1"


def test_lean_params_takes_only_plain_urls():
    lp = redis_mux.lean_params
    assert lp("redis://127.0.0.1:6380/2") == {"address": ("127.0.0.1", 6380), "db": 2}
    assert lp("redis://h") == {"address": ("h", 6379)}
    assert lp("redis://") == {"address": ("localhost", 6379)}
    assert lp("redis://u:p%2Fw@h:1/0") == {
        "address": ("h", 1),
        "username": "u",
        "password": "p/w",
        "db": 0,
    }
    assert lp("redis://:pw@[::1]:7000") == {"address": ("::1", 7000), "password": "pw"}
    assert lp("unix:///run/r.sock?db=3") == {"address": "/run/r.sock", "db": 3}
    for url in (
        "rediss://h:6379/0",
        "redis://a:26379,b:26379/0?sentinel=m",
        "redis://a:7000,b:7001?cluster=1",
        "redis+sentinel://a/0",
        "redis://h/0?cluster=1",
        "redis://h/0?socket_timeout=1",
        "redis://user@h/0",
        "unix://",
        "http://h/",
    ):
        assert lp(url) is None, url


def test_tls_sentinel_and_cluster_keep_redis_py(coop):
    ew_redis.configure({"tls": Redis(url="rediss://127.0.0.1:1/0")})
    store = limit.FixedWindow("redis:tls", 1, 60).store
    assert isinstance(store.get(), redis.Redis) and not store._lean


# ------------------------------------------------------------------------------ failures
@pytest.mark.parametrize("mode", MODES)
def test_silent_server_times_out_within_the_timeout(mode):
    """A server that accepts and never answers: TimeoutError after ~timeout, not later."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    try:
        p = redis_mux.Pool(("127.0.0.1", port), timeout=0.3, connect_timeout=0.3, cooperative=mode)
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(rexc.TimeoutError):
                p.execute("PING")
            took = time.monotonic() - t0
            assert 0.25 <= took < 0.3 + 0.5, took
            assert p.opened == 0  # the half-used connection was closed
    finally:
        lsock.close()


@pytest.mark.parametrize("mode", MODES)
def test_refused_and_closed_connections_raise_connection_error(mode):
    port = free_port()
    p = redis_mux.Pool(("127.0.0.1", port), timeout=0.3, connect_timeout=0.3, cooperative=mode)
    t0 = time.monotonic()
    with pytest.raises(rexc.ConnectionError, match="connecting"):
        p.execute("PING")
    assert time.monotonic() - t0 < 0.3 and p.opened == 0
    # a server that closes every connection at once
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    stop = threading.Event()

    def closer() -> None:
        lsock.settimeout(0.05)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except OSError:
                continue
            c.recv(100)
            c.close()

    t = threading.Thread(target=closer, daemon=True)
    t.start()
    try:
        p = redis_mux.Pool(lsock.getsockname(), timeout=1, connect_timeout=1, cooperative=mode)
        with pytest.raises(rexc.ConnectionError, match="closed"):
            p.execute("PING")
        assert p.opened == 0
    finally:
        stop.set()
        t.join(2)
        lsock.close()


@pytest.mark.parametrize("mode", MODES)
def test_connection_is_never_reused_after_an_error(redis_server, mode):
    p = _pool(redis_server, mode, timeout=0.2)
    first = p.execute("CLIENT", "ID")
    # a reply slower than the timeout: the connection still has that reply coming
    with pytest.raises(rexc.TimeoutError):
        p.execute("BLPOP", "q", "1")
    assert p.opened == 0
    assert redis_server.command("RPUSH", "q", "late") == ":1"
    second = p.execute("CLIENT", "ID")
    assert isinstance(second, int) and second != first
    assert first not in _client_ids(redis_server)
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_idle_connection_closed_by_the_server_is_replaced(redis_server, mode):
    p = _pool(redis_server, mode)
    first = p.execute("CLIENT", "ID")
    assert redis_server.command("CLIENT", "KILL", "ID", str(first)) == ":1"
    time.sleep(0.05)
    second = p.execute("CLIENT", "ID")  # no error: the dead idle connection was noticed
    assert second != first and p.opened == 1
    p.close()


def test_limiter_fails_open_when_redis_is_killed_mid_use(coop):
    srv = RedisServer().start()
    try:
        ew_redis.configure({"r": Redis(url=srv.url, timeout=0.25, connect_timeout=0.25)})
        fw = limit.FixedWindow("redis:r", 1000, 3600)
        closed = limit.FixedWindow("redis:r", 1000, 3600, fail="closed", prefix="c:")
        for _ in range(5):
            r = fw.incoming("k")
            assert r.allowed and r.error is None and r.remaining < 1000
        srv.pause()  # accepts, never answers
        t0 = time.monotonic()
        r = fw.incoming("k")
        assert r.allowed and isinstance(r.error, rexc.TimeoutError)
        assert time.monotonic() - t0 < 0.25 + 0.5
        t0 = time.monotonic()
        r = closed.incoming("k")
        assert not r.allowed and r.error is not None
        assert time.monotonic() - t0 < 0.25 + 0.5
        port = srv.port
        srv.stop()  # killed: refused at once
        t0 = time.monotonic()
        for _ in range(3):
            r = fw.incoming("k")
            assert r.allowed and isinstance(r.error, rexc.ConnectionError)
        assert time.monotonic() - t0 < 0.25 + 0.5
        assert fw.store.get().opened == 0
        # back on the same port: the limiter works again, on fresh connections
        srv = RedisServer(port=port).start()
        r = fw.incoming("k")
        assert r.allowed and r.error is None and r.remaining == 999
    finally:
        srv.stop()


# ------------------------------------------------------------------------------ the pool
def test_concurrent_greenlets_share_one_pipelined_connection(redis_server):
    """Many greenlets at once: one connection, commands batched into few writes, and every
    greenlet gets its own reply."""
    p = _pool(redis_server, True, size=4, timeout=3.0)
    echo = redis_mux.Script("redis.call('INCR', KEYS[1]) return {ARGV[1], tonumber(ARGV[2])}")
    bad = []

    def user(i: int) -> None:
        for j in range(20):
            got = p.evalsha(echo, [b"n"], [f"g{i}", j])
            if got != [f"g{i}".encode(), j]:
                bad.append((i, j, got))
            if j % 5 == 0:
                gevent.sleep(0)

    before = len(_client_ids(redis_server))
    jobs = [gevent.spawn(user, i) for i in range(50)]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    assert all(j.successful() for j in jobs) and not bad
    assert redis_server.command("GET", "n") == "$4"  # 1000: a 4-byte bulk
    assert p.opened == 1 and len(_client_ids(redis_server)) - before == 1
    assert p.batches < 1000 / 5, p.batches  # pipelined, not one write per command
    p.close()
    assert p.opened == 0


def test_timeout_fails_every_command_on_the_connection_then_recovers(redis_server):
    p = _pool(redis_server, True, timeout=0.3)
    first = p.execute("CLIENT", "ID")
    results = {}

    def call(name: str, *args: str) -> None:
        try:
            results[name] = p.execute(*args)
        except Exception as exc:
            results[name] = exc

    # a slow reply holds the pipeline; the commands behind it share its fate
    jobs = [gevent.spawn(call, "slow", "BLPOP", "q", "2"), gevent.spawn(call, "ping", "PING")]
    t0 = time.monotonic()
    gevent.joinall(jobs, timeout=5)
    assert time.monotonic() - t0 < 0.3 + 0.5
    assert isinstance(results["slow"], rexc.TimeoutError)
    assert isinstance(results["ping"], (rexc.TimeoutError, rexc.ConnectionError))
    assert p.opened == 0
    assert redis_server.command("RPUSH", "q", "late") == ":1"
    second = p.execute("CLIENT", "ID")
    assert isinstance(second, int) and second != first
    assert p.execute("PING") == b"PONG"
    p.close()


def test_pool_bound_under_concurrent_threads(redis_server):
    p = _pool(redis_server, False, size=3, timeout=3.0)
    seen, errors = [], []

    def user(i: int) -> None:
        try:
            for _ in range(3):
                p.execute("BLPOP", f"none:{i}", "0.02")  # holds its connection
                seen.append(p.opened)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    before = len(_client_ids(redis_server))
    threads = [threading.Thread(target=user, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and len(seen) == 36 and max(seen) <= 3
    assert len(_client_ids(redis_server)) - before <= 3
    p.close()
    assert p.opened == 0


def test_exhausted_pool_waits_at_most_timeout(redis_server):
    p = _pool(redis_server, False, size=1, timeout=0.3)
    held = p._acquire()  # the only connection, busy
    t0 = time.monotonic()
    with pytest.raises(rexc.ConnectionError, match="No connection available"):
        p.execute("PING")
    assert 0.25 <= time.monotonic() - t0 < 0.3 + 0.5
    p._release(held)
    assert p.execute("PING") == b"PONG"
    assert p.opened == 1


def test_waiting_thread_gets_a_released_connection(redis_server):
    p = _pool(redis_server, False, size=1, timeout=2.0)
    held = p._acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(p.execute("PING")))
    t.start()
    time.sleep(0.1)
    assert not got
    p._release(held)
    t.join(2)
    assert got == [b"PONG"] and p.opened == 1


def test_pool_per_process_and_rebuilt_when_settings_change(redis_server, coop):
    ew_redis.configure({"default": Redis(url=redis_server.url)})
    a = ew_redis.mux("default")
    assert a is ew_redis.mux("default") and a.size == 100 and a.timeout == 0.1
    ew_redis.configure({"default": Redis(url=redis_server.url, pool_size=7, timeout=0.5)})
    b = ew_redis.mux("default")
    assert b is not a and b.size == 7 and b.timeout == 0.5 and a.closed
    with pytest.raises(ew_redis.RedisNotConfigured):
        ew_redis.mux("nope")


# ------------------------------------------------------------------------------ in a worker
WORKER_CONF = """
[redis.main]
url = "{url}"
timeout = "300ms"
connect_timeout = "300ms"

[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "/api"
  limit = {{{{ rate = "25r/h", store = "redis:main", key = "$http_x_user" }}}}
  return = {{{{ status = 200, body = "api" }}}}
"""


def test_worker_counts_exactly_under_concurrency_and_survives_a_redis_restart(server):
    """One worker, 30 clients at once: the pipelined replies reach the right requests (exactly
    the quota passes); Redis killed: requests fail open within the timeout; Redis back: the
    limiter counts again."""
    rs = RedisServer().start()
    try:
        srv = server(WORKER_CONF.format(url=rs.url), workers=1)
        statuses: list[int] = []

        def client(user: str, n: int) -> None:
            for _ in range(n):
                statuses.append(srv.get("/api", headers={"X-User": user})[0])

        threads = [threading.Thread(target=client, args=("a", 2)) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(statuses) == [200] * 25 + [429] * 35
        check = redis.Redis(port=rs.port)
        keys = [k for k in check.keys("ew:limit:*") if k.endswith(b":a")]
        assert len(keys) == 1 and check.get(keys[0]) == b"25", keys
        check.close()
        port = rs.port
        rs.stop()
        t0 = time.monotonic()
        for _ in range(5):
            status, h, _ = srv.get("/api", headers={"X-User": "b"})
            assert status == 200 and "ratelimit" not in h
        assert time.monotonic() - t0 < 5 * (0.3 + 0.5)
        rs = RedisServer(port=port).start()
        got = [srv.get("/api", headers={"X-User": "c"}) for _ in range(2)]
        assert [s for s, _, _ in got] == [200, 200]
        assert got[1][1]["ratelimit"].startswith('"default";r=23;')
    finally:
        rs.stop()
