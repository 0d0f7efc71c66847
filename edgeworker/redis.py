"""``edgeworker.redis``: per-worker redis-py clients for the ``[redis.NAME]`` connections.

::

    import edgeworker
    r = edgeworker.redis.client("default")     # redis.Redis on this worker's pool
    r.incr("hits")

Every worker gets its own connection pool per name, created lazily on first use (so after the
fork and after gevent patching: the sockets are cooperative). A pool is never inherited: a client
obtained before a fork is rebuilt in the child. Connections come from a
``redis.BlockingConnectionPool`` of ``pool_size`` connections; a request that finds the pool
exhausted waits at most ``timeout`` for a free connection, then fails with
``redis.ConnectionError``. ``connect_timeout`` bounds connecting and ``timeout`` bounds every
reply; redis-py's own retries are turned off, so one command against a down or stalled Redis
fails within those bounds (callers such as the rate limiter decide what a failure means).

URLs (``url`` in ``[redis.NAME]``):

- ``redis://[user:password@]host:port/db``, ``rediss://…`` (TLS), ``unix:///path.sock?db=0``:
  a single server;
- ``redis://host1:26379,host2:26379/0?sentinel=SERVICE``: Redis Sentinel; the client follows the
  current master of ``SERVICE`` (redis-py ``Sentinel.master_for``);
- ``redis://host1:7000,host2:7001?cluster=1``: Redis Cluster (redis-py ``RedisCluster``; the
  client routes each command to the node owning its keys).

This module imports redis-py; the master never imports it (``edgeworker/__init__`` loads this
module on first attribute access).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis as _redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import runtime
from .errors import RedisNotConfigured

__all__ = ["client", "configure", "configured", "mux", "reset", "RedisNotConfigured"]


_lock = threading.Lock()
_configs: dict[str, Any] | None = None
_clients: dict[Any, Any] = {}  # name (a client) or ("mux", name) (a multiplexer or None)
_pid = os.getpid()


def configure(redis_configs: Mapping[str, Any]) -> None:
    """Install the ``[redis.NAME]`` sections (``config.Redis`` objects) of the running config.

    Called by the worker (and by the declarative features) once the config is known. Clients
    already built for a name whose settings changed are dropped and rebuilt on next use.
    """
    global _configs
    new = dict(redis_configs)
    with _lock:
        old = _configs or {}
        for slot in list(_clients):
            name = slot[1] if slot.__class__ is tuple else slot
            if name not in new or _key(new[name]) != _key(old.get(name)):
                _drop(_clients.pop(slot))
        _configs = new


def configured() -> dict[str, Any]:
    """The ``[redis.NAME]`` sections known to this process (name → ``config.Redis``)."""
    return dict(_find_configs())


def client(name: str = "default") -> Any:
    """This worker's ``redis.Redis`` (or ``RedisCluster``) for ``[redis.NAME]``.

    Built on first use in each process and reused afterwards (it is thread- and
    greenlet-safe: each command borrows a pooled connection). Raises ``RedisNotConfigured``
    (a ``KeyError``) naming the configured connections when ``name`` is unknown.
    """
    return _get(name, name, build)


def mux(name: str = "default") -> Any:
    """This worker's auto-pipelining client (:class:`edgeworker.redis_mux.Pool`) for
    ``[redis.NAME]``, or ``None`` when its URL needs redis-py (:func:`client`; see
    :func:`edgeworker.redis_mux.lean_params`). Built, rebuilt and dropped like the clients."""
    return _get(("mux", name), name, _build_mux)


def _get(slot: Any, name: str, make: Any) -> Any:
    global _pid
    pid = os.getpid()
    if pid != _pid:  # forked: never use the parent's sockets
        with _lock:
            if pid != _pid:
                _clients.clear()
                _pid = pid
    c = _clients.get(slot, _clients)
    if c is not _clients:
        return c
    configs = _find_configs()
    conf = configs.get(name)
    if conf is None:
        known = ", ".join(sorted(configs)) or "none"
        raise RedisNotConfigured(f"no redis connection {name!r} (configured: {known})")
    with _lock:
        c = _clients.get(slot, _clients)
        if c is _clients:
            c = _clients[slot] = make(conf)
    return c


def reset() -> None:
    """Close and forget every client of this process (they are rebuilt on next use)."""
    with _lock:
        for c in _clients.values():
            _drop(c)
        _clients.clear()


def build(conf: Any) -> Any:
    """A new client for one ``config.Redis`` (``url``, ``connect_timeout``, ``timeout``,
    ``pool_size``); see the module docstring for the URL forms. ``ValueError`` for a bad URL."""
    url = conf.url
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    common: dict[str, Any] = {
        "socket_timeout": float(conf.timeout),
        "socket_connect_timeout": float(conf.connect_timeout),
        "retry": Retry(NoBackoff(), 0),
    }
    if "sentinel" in query or parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        return _sentinel(parts, query, conf, common)
    if _truthy(query.get("cluster")) or parts.scheme in ("redis+cluster", "rediss+cluster"):
        return _cluster(parts, conf, common)
    pool = _redis.BlockingConnectionPool.from_url(
        url, max_connections=int(conf.pool_size), timeout=float(conf.timeout), **common
    )
    return _redis.Redis(connection_pool=pool)


def _build_mux(conf: Any) -> Any:
    from . import redis_mux

    params = redis_mux.lean_params(conf.url)
    if params is None:
        return None
    timeouts = {"connect_timeout": float(conf.connect_timeout), "timeout": float(conf.timeout)}
    return redis_mux.Pool(size=int(conf.pool_size), **timeouts, **params)


# ------------------------------------------------------------------------------ internals
def _find_configs() -> dict[str, Any]:
    if _configs is not None:
        return _configs
    cfg = _running_config()
    if cfg is not None:
        configure(cfg.redis)
        return _configs or {}
    return {}


def _running_config() -> Any:
    """The config this process runs (set by the master before ``init``, by each worker at
    boot), when nobody called ``configure`` yet."""
    return runtime.config


def _key(conf: Any) -> tuple | None:
    if conf is None:
        return None
    return (conf.url, float(conf.connect_timeout), float(conf.timeout), int(conf.pool_size))


def _drop(c: Any) -> None:
    if c is None:
        return
    try:
        c.close()
    except Exception:
        pass


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes", "on")


def _hosts(parts: Any, default_port: int) -> list[tuple[str, int]]:
    netloc = parts.netloc.rpartition("@")[2]
    out = []
    for item in netloc.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        else:
            host, _, port_s = item.partition(":")
            port = int(port_s) if port_s else default_port
        out.append((host, port))
    if not out:
        raise ValueError(f"no host in redis url {parts.geturl()!r}")
    return out


def _credentials(parts: Any) -> dict[str, Any]:
    userinfo = parts.netloc.rpartition("@")[0]
    if not userinfo:
        return {}
    user, sep, password = userinfo.partition(":")
    out: dict[str, Any] = {}
    if sep:
        out["password"] = unquote(password)
        if user:
            out["username"] = unquote(user)
    else:
        out["password"] = unquote(user)
    return out


def _db(parts: Any, query: dict[str, list[str]]) -> int:
    path = parts.path.strip("/")
    if path and path.isdigit():
        return int(path)
    if query.get("db"):
        return int(query["db"][-1])
    return 0


def _sentinel(parts: Any, query: dict, conf: Any, common: dict) -> Any:
    from redis.sentinel import Sentinel

    service = (query.get("sentinel") or [""])[-1]
    if not service:
        raise ValueError("sentinel url needs ?sentinel=SERVICE_NAME")
    tls = parts.scheme.startswith("rediss")
    sentinel = Sentinel(
        _hosts(parts, 26379),
        sentinel_kwargs={k: common[k] for k in ("socket_timeout", "socket_connect_timeout")},
        **common,
    )
    return sentinel.master_for(
        service,
        db=_db(parts, query),
        max_connections=int(conf.pool_size),
        ssl=tls,
        **_credentials(parts),
    )


def _cluster(parts: Any, conf: Any, common: dict) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    nodes = [ClusterNode(h, p) for h, p in _hosts(parts, 6379)]
    return RedisCluster(
        startup_nodes=nodes,
        max_connections=int(conf.pool_size),
        ssl=parts.scheme.startswith("rediss"),
        **_credentials(parts),
        **common,
    )
