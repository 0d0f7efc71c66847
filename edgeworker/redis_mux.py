"""``edgeworker.redis_mux``: the Redis client of the rate limiters, auto-pipelined in gevent.

:class:`Pool` sends commands pre-encoded (one ``EVALSHA`` head per script) and depends on the
mode. In a gevent worker (``cooperative``) every greenlet's command goes onto one shared
connection: the commands issued in one loop iteration leave in one write, one read watcher
parses the replies with ``hiredis`` and hands each to its greenlet in order, and one coarse
:class:`~edgeworker.io.Watchdog` per pool checks the deadlines. Elsewhere (threads) a redis-py
``BlockingConnectionPool`` of ``size`` connections serves them; a caller finding all busy waits
up to ``timeout``, then gets ``ConnectionError("No connection available.")``.

Only plain single-server URLs take this client (:func:`lean_params`): ``redis://[user:pass@]
host[:port][/db]`` and ``unix:///path.sock[?db=N]``, no query option but ``db``; the others
(TLS, Sentinel, Cluster, options) use :func:`edgeworker.redis.client`. Behaviour is redis-py's:
``AUTH`` and ``SELECT`` on connect; raw replies (``int``, ``bytes``, ``None``, ``list``; status
replies as ``bytes``); an error reply raises redis-py's exception class and keeps the
connection; a failed or closed connection, or a reply slower than ``timeout``, raises
``ConnectionError`` / ``TimeoutError`` and closes it, failing every command still waiting on it
(no reply ever reaches the wrong caller). An idle connection the server closed is replaced.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
from gevent import get_hub, monkey
from gevent.hub import Waiter as _Waiter
from redis import exceptions as rexc
from redis.backoff import NoBackoff
from redis.connection import BaseParser, BlockingConnectionPool, Encoder, parse_url
from redis.connection import UnixDomainSocketConnection as _Unix
from redis.retry import Retry

from .errors import Expired
from .io import Transport, Watchdog, open_socket

__all__ = ["COOPERATIVE", "Pool", "Script", "lean_params", "pack", "pool", "reset"]

#: Pools built without ``cooperative=`` wait through the gevent hub when this is True, block
#: the thread when False, and follow ``gevent.monkey.is_module_patched("socket")`` when None.
COOPERATIVE: bool | None = None
#: how late a cooperative pool's deadlines may fire (its watchdog's resolution), and after how
#: long without a command its timer stops
RESOLUTION = 0.005
IDLE_STOP = 1.0

_RECV = 65536
_MORE = object()  # hiredis: no whole reply buffered yet
_enc = Encoder("utf-8", "strict", False).encode  # redis-py's argument encoding


def _reader() -> Any:
    """A RESP2 reply parser; error replies become redis-py's exception instances."""
    return hiredis.Reader(
        protocolError=rexc.InvalidResponse, replyError=BaseParser.parse_error, notEnoughData=_MORE
    )


def pack(*args: Any) -> bytes:
    """A command in RESP (an array of bulk strings), its arguments encoded as by redis-py."""
    return b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%b\r\n" % (len(a), a) for a in map(_enc, args)
    )


class Script:
    """A Lua script for :meth:`Pool.evalsha`: its SHA1 and pre-encoded ``EVALSHA`` heads."""

    __slots__ = ("src", "sha", "_heads")

    def __init__(self, src: str) -> None:
        self.src = src
        self.sha = hashlib.sha1(src.encode()).hexdigest()
        self._heads: dict[tuple[int, int], bytes] = {}

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
        """``EVALSHA sha len(keys) *keys *args`` in RESP."""
        shape = (len(keys), len(args))
        head = self._heads.get(shape)
        if head is None:
            n = 3 + shape[0] + shape[1]  # the array's length, then sha and numkeys
            head = self._heads[shape] = b"*%d" % n + pack("EVALSHA", self.sha, shape[0])[2:]
        out = [head]
        for v in (*keys, *args):
            c = v.__class__
            if c is int:
                v = b"%d" % v
            elif c is not bytes:
                v = _enc(v)
            out.append(b"$%d\r\n%b\r\n" % (len(v), v))
        return b"".join(out)


class Pool:
    """Connections to one Redis server (see the module docstring).

    ``address`` is ``(host, port)`` or a unix socket path. ``cooperative`` (default:
    :data:`COOPERATIVE`, else whether gevent patched ``socket``) pipelines every command on one
    connection and waits through the gevent hub; otherwise the calling thread takes a
    connection of a redis-py pool of ``size``. Methods raise ``redis.exceptions``'
    ``ConnectionError``, ``TimeoutError``, ``ResponseError`` (and its subclasses).
    """

    def __init__(
        self,
        address: tuple[str, int] | str,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        size: int = 100,
        connect_timeout: float = 0.1,
        timeout: float = 0.1,
        cooperative: bool | None = None,
    ) -> None:
        if cooperative is None:
            patched = monkey.is_module_patched("socket")
            cooperative = patched if COOPERATIVE is None else COOPERATIVE
        self.address = address
        self.size = int(size)
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.cooperative = cooperative
        self.closed = False
        self.batches = 0  # cooperative: writes sent (each carries one or more commands)
        self._mux: _Mux | None = None
        self._live: set[Any] = set()  # threads: connections handed out and still sound
        if cooperative:
            self._watchdog = Watchdog(RESOLUTION, IDLE_STOP)  # deadlines of waiting greenlets
            auth = [username] if username else []
            hello = [pack("AUTH", *auth, password or "")] if username or password else []
            self._hello = hello + ([pack("SELECT", int(db))] if int(db) else [])
            return
        kw = dict(username=username, password=password, db=int(db), retry=Retry(NoBackoff(), 0))
        if isinstance(address, str):
            kw.update(path=address, connection_class=_Unix)
        else:
            kw.update(host=address[0], port=address[1])
        self._pool = BlockingConnectionPool(
            max_connections=self.size,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.connect_timeout,
            **kw,
        )

    def execute(self, *args: Any) -> Any:
        """Run one command and return its reply (an error reply is raised)."""
        return self._run(pack(*args), None)

    def evalsha(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``EVALSHA`` ``script``; on ``NOSCRIPT`` load it (``SCRIPT LOAD``) and run it again,
        on the same connection. Returns the script's reply."""
        return self._run(script.command(keys, args), script)

    @property
    def opened(self) -> int:
        """Connections open now (idle or in use)."""
        m = self._mux
        return len(self._live) + (m is not None and m.conn is not None and not m.dead)

    def close(self) -> None:
        """Close the connections (one in use by a thread when it is released; commands
        waiting on the pipelined one fail). Like a closed redis-py client, the pool still
        works afterwards: a later command connects again."""
        self.closed = True
        if self._mux is not None:
            self._mux.kill(rexc.ConnectionError("Connection pool closed."))
        if not self.cooperative:
            self._pool.disconnect(inuse_connections=False)
            self._live.clear()

    def _run(self, payload: bytes, script: Script | None) -> Any:
        call = self._call if self.cooperative else self._call_thread
        reply = call(payload)
        if script is not None and reply.__class__ is rexc.NoScriptError:
            loaded = call(pack("SCRIPT", "LOAD", script.src))
            if isinstance(loaded, rexc.RedisError):
                raise loaded
            reply = call(payload)
        if isinstance(reply, rexc.ResponseError):
            raise reply
        return reply

    # -------------------------------------------------------------- threads (redis-py)
    def _call_thread(self, payload: bytes) -> Any:
        """One command on a pooled connection; an error reply is returned, not raised."""
        conn = self._acquire()
        try:
            conn.send_packed_command([payload])
            reply = conn.read_response()
        except rexc.ResponseError as exc:
            reply = exc  # an error reply: the connection is fine
        except BaseException:
            self._live.discard(conn)  # a half-read reply must never reach the next user
            conn.disconnect()
            self._pool.release(conn)
            raise
        self._release(conn)
        return reply

    def _acquire(self) -> Any:
        """A connected connection of the redis-py pool (an idle one the server closed is
        replaced); ``ConnectionError`` when none frees up within ``timeout``."""
        conn = self._pool.get_connection()
        self._live.add(conn)
        return conn

    def _release(self, conn: Any) -> None:
        if self.closed:
            self._live.discard(conn)
            conn.disconnect()
        self._pool.release(conn)

    # -------------------------------------------------------------- pipelined (gevent)
    def _call(self, payload: bytes) -> Any:
        """Queue ``payload`` on the shared connection and wait for its reply (``timeout``)."""
        m = self._mux
        if m is None or m.dead:
            m = self._mux = _Mux(self)
        w = _Waiter(m.hub)
        if not m.submit(payload, w):  # closed by the server while idle: on a new connection
            m = self._mux = _Mux(self)
            m.submit(payload, w)
        try:
            reply = self._watchdog.wait(w, self.timeout)
        except Expired:
            m.kill(rexc.TimeoutError("Timeout reading from socket"))
            raise rexc.TimeoutError("Timeout reading from socket") from None
        if reply.__class__ is tuple:  # (exc,): the connection failed; each raises a copy
            raise reply[0].__class__(*reply[0].args) from None
        if isinstance(reply, rexc.ConnectionError):  # e.g. "max number of clients reached"
            m.kill(reply)
            raise reply
        return reply

    def _connect(self) -> Transport:
        """A new connection for the multiplexer, set up (``AUTH``, ``SELECT`` in one write)."""
        addr = self.address
        try:
            sock = open_socket(addr, self.connect_timeout, True)
        except TimeoutError:
            raise rexc.TimeoutError("Timeout connecting to server") from None
        except OSError as exc:
            where = addr if isinstance(addr, str) else f"{addr[0]}:{addr[1]}"
            msg = f"Error {exc.errno} connecting to {where}. {exc.strerror}."
            raise rexc.ConnectionError(msg) from None
        try:
            sock.settimeout(self.timeout)
            sock.sendall(b"".join(self._hello))
            reader, replies = _reader(), []
            while len(replies) < len(self._hello):
                if (reply := reader.gets()) is not _MORE:
                    replies.append(reply)
                elif data := sock.recv(_RECV):
                    reader.feed(data)
                else:
                    raise rexc.ConnectionError("Connection closed by server.")
            sock.settimeout(None)
        except TimeoutError:
            sock.close()
            raise rexc.TimeoutError("Timeout reading from socket") from None
        except OSError as exc:
            sock.close()
            raise rexc.ConnectionError(f"Error while talking to the server: {exc}") from None
        for reply in replies:
            if isinstance(reply, rexc.RedisError):
                sock.close()
                if isinstance(reply, rexc.AuthenticationWrongNumberOfArgsError):
                    raise rexc.AuthenticationError("Invalid Username or Password")
                if isinstance(reply, rexc.ConnectionError):  # AuthenticationError too
                    raise reply
                raise rexc.ConnectionError(f"Error during connection setup: {reply}")
        return Transport(sock, self._watchdog)


class _Mux:
    """The connection a cooperative pool pipelines on.

    Commands queued by the greenlets that run in one loop iteration go out in a single write
    (a loop callback); one read watcher takes the replies in order and hands each to its
    greenlet's waiter. Any failure (connect, read, write, a reply late past ``timeout``, a
    protocol error) closes the connection and fails every command still waiting on it; the
    next command opens a new connection.
    """

    __slots__ = tuple(
        "pool hub conn pending out wbuf flushing dead connecting reader rw ww".split()
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.hub = get_hub()
        self.conn: Any | None = None
        self.pending: deque[Any] = deque()  # waiters, in the order of their commands
        self.out: list[bytes] = []  # queued, not yet written
        self.wbuf = b""  # taken from out, not yet accepted by the socket
        self.flushing = self.dead = self.connecting = False
        self.reader = _reader()
        self.rw: Any = None
        self.ww: Any = None

    def submit(self, payload: bytes, waiter: Any) -> bool:
        """Queue one command; its reply (or ``(exc,)``) will be switched to ``waiter``.
        False if the idle connection was found closed by the server (the command is not
        queued); raises (after failing the others queued) when it cannot connect."""
        if self.conn is not None and not self.pending and not self.conn.alive():
            self.kill(rexc.ConnectionError("Connection closed by server."))
            return False
        self.pending.append(waiter)
        self.out.append(payload)
        if self.conn is None:
            if not self.connecting:
                self._open()
        elif not self.flushing:
            self.flushing = True
            self.hub.loop.run_callback(self._flush)
        return True

    def _open(self) -> None:
        self.connecting = True
        try:
            conn = self.pool._connect()
        except BaseException as exc:
            self.pending.popleft()  # ours: the caller gets the exception itself
            if not isinstance(exc, rexc.RedisError):
                exc = rexc.ConnectionError(f"connect failed: {exc!r}")
            self.kill(exc)
            raise
        finally:
            self.connecting = False
        if self.dead:  # killed while connecting (pool closed)
            conn.close()
            return
        self.conn = conn
        self.rw, self.ww = conn.watchers()
        self.rw.start(self._on_read)
        if not self.flushing:
            self.flushing = True
            self.hub.loop.run_callback(self._flush)

    def _flush(self) -> None:
        """Loop callback (and write watcher): write what is queued, in order, in one write;
        what the socket does not take now is written when it becomes writable."""
        self.flushing = False
        out = self.out
        if out:
            self.wbuf += out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if self.ww.active:  # still writing an earlier batch: sent after it
                return
            self.pool.batches += 1
        if self.dead or not self.wbuf:
            return
        try:
            sent = self.conn.send(self.wbuf)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.kill(rexc.ConnectionError(f"Error while writing to socket: {exc}"))
            return
        self.wbuf = self.wbuf[sent:]
        if self.wbuf:
            if not self.ww.active:
                self.ww.start(self._flush)
        elif self.ww.active:
            self.ww.stop()

    def _on_read(self) -> None:
        """Hub callback: read what arrived and hand out every whole reply, in order."""
        try:
            data = self.conn.recv(_RECV)
        except BlockingIOError:
            return
        except OSError as exc:
            self.kill(rexc.ConnectionError(f"Error while reading from socket: {exc}"))
            return
        if not data:
            self.kill(rexc.ConnectionError("Connection closed by server."))
            return
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # a malformed reply: nothing after it can be trusted
                self.kill(rexc.InvalidResponse(f"Protocol Error: {exc}"))
                return
            if reply is _MORE:
                return
            if not pending:
                self.kill(rexc.InvalidResponse("Protocol Error: a reply nobody asked for"))
                return
            pending.popleft().switch(reply)  # runs that greenlet until it waits again
            if self.dead:
                return

    def kill(self, exc: BaseException) -> None:
        """Close the connection; every command waiting on it fails with ``exc``."""
        if self.dead:
            return
        self.dead = True
        if self.pool._mux is self:
            self.pool._mux = None
        for w in (self.rw, self.ww):
            if w is not None:
                w.stop()
                w.close()
        if self.conn is not None:
            self.conn.close()
        failure = (exc,)
        run = self.hub.loop.run_callback
        while self.pending:
            run(self.pending.popleft().switch, failure)
        self.out.clear()
        self.wbuf = b""


# ------------------------------------------------------------------------------ config
def lean_params(url: str) -> dict[str, Any] | None:
    """The :class:`Pool` arguments for ``url`` when it takes this client, else ``None``.

    Lean: ``redis://`` with one host and ``unix://``, no query option but ``db``. Host, port,
    user, password and db are read by redis-py's ``parse_url`` (``localhost:6379`` by
    default; a query ``db`` wins over the path).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "unix") or parts.fragment or "," in parts.netloc:
        return None
    try:
        kw = parse_url(url)
    except ValueError:
        return None  # redis-py reports a bad URL its own way
    if kw.pop("connection_class", None) is not None:  # unix
        if "path" not in kw:
            return None
        kw["address"] = kw.pop("path")
    else:
        kw["address"] = (kw.pop("host", "localhost"), kw.pop("port", 6379))
    if set(kw) - {"address", "username", "password", "db"}:
        return None
    if "username" in kw and "password" not in kw:
        return None  # a user without a password: left to redis-py's own handling
    return kw


_lock = threading.Lock()
_pools: dict[str, tuple[tuple, Pool | None]] = {}
_pid = os.getpid()


def pool(name: str) -> Pool | None:
    """This process's lean :class:`Pool` for ``[redis.NAME]``, or ``None`` when its URL needs
    redis-py. Built on first use in each process (never inherited through a fork) and rebuilt
    when the section's settings change. ``edgeworker.redis.RedisNotConfigured`` for an unknown
    name."""
    global _pid
    from . import redis as ew_redis

    conf = ew_redis.configured().get(name)
    if conf is None:
        ew_redis.client(name)  # raises RedisNotConfigured naming the known ones
    key = (conf.url, float(conf.connect_timeout), float(conf.timeout), int(conf.pool_size))
    with _lock:
        if os.getpid() != _pid:  # forked: the parent's sockets are not ours
            _pools.clear()
            _pid = os.getpid()
        got = _pools.get(name)
        if got is not None and got[0] == key:
            return got[1]
        if got is not None and got[1] is not None:
            got[1].close()
        params = lean_params(conf.url)
        p = None
        if params is not None:
            p = Pool(size=key[3], connect_timeout=key[1], timeout=key[2], **params)
        _pools[name] = (key, p)
        return p


def reset() -> None:
    """Close and forget this process's pools (rebuilt on next use)."""
    with _lock:
        for _key, p in _pools.values():
            if p is not None and _pid == os.getpid():
                p.close()
        _pools.clear()
