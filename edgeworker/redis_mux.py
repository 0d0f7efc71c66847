"""``edgeworker.redis_mux``: the Redis client of the rate limiters, auto-pipelined in gevent.

In a gevent worker (``cooperative``) a :class:`Pool` puts every greenlet's command onto one
connection: the commands issued in one loop iteration leave in one write, one read watcher
parses the replies with ``hiredis`` and hands each to its greenlet in order, one coarse
:class:`~edgeworker.io.Watchdog` checks the deadlines. Elsewhere (threads) a redis-py
``BlockingConnectionPool`` of ``size`` connections serves them. Behaviour is redis-py's: ``AUTH``
and ``SELECT`` on connect; raw replies (``int``, ``bytes``, ``None``, ``list``; status replies as
``bytes``); an error reply raises redis-py's exception class; a failed or closed connection, or
a reply slower than ``timeout``, raises ``ConnectionError`` / ``TimeoutError`` and closes it,
failing every command still waiting on it (no reply reaches the wrong caller).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
from gevent import get_hub, monkey
from gevent.hub import Waiter as _Waiter
from redis import exceptions as rexc
from redis.backoff import NoBackoff
from redis.connection import BlockingConnectionPool, DefaultParser, Encoder, parse_url
from redis.connection import UnixDomainSocketConnection as _Unix
from redis.retry import Retry

from .errors import Expired
from .io import Transport, Watchdog, open_socket

__all__ = ["COOPERATIVE", "Pool", "Script", "lean_params", "pack"]

#: ``cooperative`` of the pools built without it (None: whether gevent patched ``socket``)
COOPERATIVE: bool | None = None
RESOLUTION, IDLE_STOP = 0.005, 1.0  # the watchdog: how late deadlines fire; idle until it stops
_RECV = 65536
_MORE = object()  # hiredis: no whole reply buffered yet
_enc = Encoder("utf-8", "strict", False).encode  # redis-py's argument encoding


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
        head = self._heads.get(shape := (len(keys), len(args)))
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
    """Connections to one Redis server at ``address``, ``(host, port)`` or a unix socket path
    (see the module docstring). Methods raise ``redis.exceptions``' ``ConnectionError``,
    ``TimeoutError``, ``ResponseError`` (and its subclasses)."""

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
        self.address, self.size, self.cooperative = address, int(size), cooperative
        self.connect_timeout, self.timeout = float(connect_timeout), float(timeout)
        self.closed, self.batches = False, 0  # batches: writes sent (one or more commands each)
        self._mux: _Mux | None = None
        self._live: set[Any] = set()  # threads: connections handed out and still sound
        if cooperative:
            self._watchdog = Watchdog(RESOLUTION, IDLE_STOP)
            self._hub = get_hub()  # (a cooperative pool serves the greenlets of one thread)
            auth = [username] if username else []
            hello = [pack("AUTH", *auth, password or "")] if username or password else []
            self._hello = hello + ([pack("SELECT", int(db))] if int(db) else [])
            return
        kw = dict(username=username, password=password, db=int(db), retry=Retry(NoBackoff(), 0))
        if isinstance(address, str):
            kw.update(path=address, connection_class=_Unix)
        else:
            kw.update(host=address[0], port=address[1])
        kw.update(max_connections=self.size, timeout=self.timeout, socket_timeout=self.timeout)
        self._pool = BlockingConnectionPool(socket_connect_timeout=self.connect_timeout, **kw)

    def execute(self, *args: Any) -> Any:
        """Run one command and return its reply (an error reply is raised)."""
        return self._run(pack(*args), None)

    def evalsha(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``EVALSHA`` ``script``'s reply; on ``NOSCRIPT`` ``SCRIPT LOAD`` it and run it again."""
        return self._run(script.command(keys, args), script)

    @property
    def opened(self) -> int:
        """Connections open now (idle or in use)."""
        m = self._mux
        return len(self._live) + (m is not None and m.conn is not None and not m.dead)

    def close(self) -> None:
        """Close the connections (one in use by a thread when released; commands waiting on
        the pipelined one fail). As with redis-py, a later command connects again."""
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

    def _call_thread(self, payload: bytes) -> Any:
        """Threads: one command on a redis-py connection; an error reply is returned."""
        conn = self._acquire()
        try:
            conn.send_packed_command([payload])
            reply = conn.read_response()
        except rexc.ResponseError as exc:
            reply = exc  # an error reply: the connection is fine
        except BaseException:
            self._release(conn, True)  # a half-read reply must never reach the next user
            raise
        self._release(conn)
        return reply

    def _acquire(self) -> Any:
        conn = self._pool.get_connection()
        self._live.add(conn)
        return conn

    def _release(self, conn: Any, broken: bool = False) -> None:
        if broken or self.closed:
            self._live.discard(conn)
            conn.disconnect()
        self._pool.release(conn)

    def _call(self, payload: bytes) -> Any:
        """gevent: queue ``payload`` on the shared connection, wait for its reply (``timeout``)."""
        m = self._mux
        w = _Waiter(self._hub)
        if m is None or m.dead or not m.submit(payload, w):  # (not: closed by the server)
            m = self._mux = _Mux(self)
            m.submit(payload, w)
            m.open()
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


class _Mux:
    """The connection a cooperative pool pipelines on, until it fails (connect, read, write,
    a reply late past ``timeout``, a protocol error); the next command opens a new one."""

    def __init__(self, pool: Pool) -> None:
        self.pool, self.hub = pool, pool._hub
        self.conn = self.rw = self.ww = None  # the Transport, its read and write watchers
        self.pending: deque[Any] = deque()  # waiters, in the order of their commands
        self.out: list[bytes] = []  # queued, not yet written
        self.wbuf = b""  # taken from out, not yet accepted by the socket
        self.flushing = self.dead = False
        self.reader = hiredis.Reader(  # error replies: redis-py's exception instances
            protocolError=rexc.InvalidResponse,
            replyError=DefaultParser.parse_error,
            notEnoughData=_MORE,
        )

    def submit(self, payload: bytes, waiter: Any) -> bool:
        """Queue one command; its reply (or ``(exc,)``) will be switched to ``waiter``. False:
        the idle connection was closed by the server (not queued)."""
        if self.conn is not None and not self.pending and not self.conn.alive():
            self.kill(rexc.ConnectionError("Connection closed by server."))
            return False
        self.pending.append(waiter)
        self.out.append(payload)
        if self.conn is not None and not self.flushing:
            self.flushing = True
            self.hub.loop.run_callback(self._flush)
        return True

    def open(self) -> None:
        """Connect (the commands queued meanwhile wait); the set-up commands go first. Raises
        (after failing the others queued) when it cannot connect."""
        addr = self.pool.address
        try:
            sock = open_socket(addr, self.pool.connect_timeout, True)
        except OSError as exc:  # the others queued fail alike; ours raises it
            self.pending.popleft()
            where = addr if isinstance(addr, str) else f"{addr[0]}:{addr[1]}"
            err = rexc.ConnectionError(f"Error {exc.errno} connecting to {where}. {exc.strerror}.")
            if isinstance(exc, TimeoutError):
                err = rexc.TimeoutError("Timeout connecting to server")
            self.kill(err)
            raise err from None
        except BaseException as exc:
            self.pending.popleft()
            self.kill(rexc.ConnectionError(f"connect failed: {exc!r}"))
            raise
        if self.dead:  # killed while connecting (pool closed)
            return sock.close()
        self.conn = conn = Transport(sock, self.pool._watchdog)
        self.rw, self.ww = conn.watchers()
        self.rw.start(self._on_read)
        self.pending.extendleft([None] * len(self.pool._hello))  # (no waiter: see _on_read)
        self.out[:0] = self.pool._hello
        self.flushing = True
        self.hub.loop.run_callback(self._flush)

    def _flush(self) -> None:
        """Loop callback and write watcher: write what is queued, in order, in one write."""
        self.flushing = False
        out = self.out
        if out and not self.dead:
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
            return self.kill(rexc.ConnectionError(f"Error while writing to socket: {exc}"))
        self.wbuf = self.wbuf[sent:]
        if self.wbuf and not self.ww.active:  # the rest when the socket takes it
            self.ww.start(self._flush)
        elif not self.wbuf and self.ww.active:
            self.ww.stop()

    def _on_read(self) -> None:
        """Hub callback: read what arrived and hand out every whole reply, in order."""
        try:
            data = self.conn.recv(_RECV)
        except BlockingIOError:
            return
        except OSError as exc:
            return self.kill(rexc.ConnectionError(f"Error while reading from socket: {exc}"))
        if not data:
            return self.kill(rexc.ConnectionError("Connection closed by server."))
        reader, pending = self.reader, self.pending
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # a malformed reply: nothing after it can be trusted
                return self.kill(rexc.InvalidResponse(f"Protocol Error: {exc}"))
            if reply is _MORE:
                return
            if not pending:
                return self.kill(rexc.InvalidResponse("Protocol Error: a reply nobody asked for"))
            w = pending.popleft()
            if w is not None:
                w.switch(reply)  # runs that greenlet until it waits again
                if self.dead:
                    return
            elif isinstance(reply, rexc.RedisError):  # set-up failed, as in redis-py's
                if isinstance(reply, rexc.AuthenticationWrongNumberOfArgsError):
                    reply = rexc.AuthenticationError("Invalid Username or Password")
                elif not isinstance(reply, rexc.ConnectionError):  # (AuthenticationError is)
                    reply = rexc.ConnectionError(f"Error during connection setup: {reply}")
                return self.kill(reply)

    def kill(self, exc: BaseException) -> None:
        """Close the connection; every command waiting on it fails with ``exc``."""
        if self.dead:
            return
        self.dead = True
        if self.pool._mux is self:
            self.pool._mux = None
        for w in (self.rw, self.ww, self.conn):
            if w is not None:
                w.close()  # (a watcher closed is stopped)
        run, failure = self.hub.loop.run_callback, (exc,)
        for w in self.pending:
            if w is not None:
                run(w.switch, failure)
        self.pending.clear()


def lean_params(url: str) -> dict[str, Any] | None:
    """The :class:`Pool` arguments for ``url`` when it is a plain single server, else
    ``None`` (TLS, Sentinel, Cluster, options: a redis-py client): ``redis://[user:pass@]host
    [:port][/db]`` or ``unix:///path.sock[?db=N]``, no query option but ``db``, a user only with
    a password; read by redis-py's ``parse_url`` (``localhost:6379`` by default; a query ``db``
    wins)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "unix") or parts.fragment or "," in parts.netloc:
        return None
    try:
        kw = parse_url(url)
    except ValueError:
        return None  # redis-py reports a bad URL its own way
    if kw.pop("connection_class", None) is not None:  # unix
        kw["address"] = kw.pop("path", None)
    else:
        kw["address"] = (kw.pop("host", "localhost"), kw.pop("port", 6379))
    plain = kw["address"] and not set(kw) - {"address", "username", "password", "db"}
    return kw if plain and ("password" in kw or "username" not in kw) else None
