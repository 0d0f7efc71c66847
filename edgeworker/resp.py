"""``edgeworker.resp``: a lean RESP2 client for the Redis rate limiters' hot path.

The limiters send one ``EVALSHA`` per request. Through redis-py that costs ~100 µs of worker
CPU: a gevent ``Timeout`` per wait (``socket_timeout``), ``BlockingConnectionPool``'s queue
and locks, redis-py's command packing and reply layers, and one write + one read system call
per command. :class:`Pool` uses a pre-encoded command head per script and a small reply parser,
and depends on the mode:

- in a gevent worker (``cooperative``), every greenlet's command goes onto one shared
  connection (auto-pipelining, like StackExchange.Redis's multiplexer): the commands issued in
  one loop iteration leave in one write, one read watcher hands each reply to its greenlet in
  order. Deadlines are checked by one coarse per-pool timer (no timer per wait);
- elsewhere (threads), a bounded pool of exclusive connections, at most ``size`` open; a
  caller finding all busy waits up to ``timeout``, then gets ``ConnectionError("No
  connection available.")``.

Only plain single-server URLs take this path (:func:`lean_params`): ``redis://[user:pass@]
host[:port][/db]`` and ``unix:///path.sock[?db=N]``, with no query option but ``db``. TLS
(``rediss://``), Sentinel, Cluster and URLs with other options keep using redis-py.

Behaviour is the redis-py one: a connection is set up with ``AUTH`` (user and password as
redis-py reads them from the URL) and ``SELECT db``; replies are ``int``, ``bytes``, ``None``,
nested ``list`` and ``bytes`` for status replies; an error reply raises the exception class
redis-py would (``NoScriptError``, ``ResponseError``…) and leaves the connection in use; a
failed connection, a closed socket or a reply slower than ``timeout`` raises
``redis.exceptions.ConnectionError`` / ``TimeoutError`` and closes the connection, so no reply
is ever read by the wrong caller (a pipelined connection fails every command still waiting on
it). An idle connection the server closed is noticed before use and replaced.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from gevent.hub import Waiter as _Waiter
from redis import exceptions as rexc

from .errors import Expired
from .io import TimeoutTransport, Transport, Watchdog, open_socket
from .resp_codec import Script, _Incomplete, _parse, pack

__all__ = ["COOPERATIVE", "Pool", "Script", "lean_params", "pack", "pool", "reset"]

#: Pools built without ``cooperative=`` wait through the gevent hub when this is True, block
#: the thread when False, and follow ``gevent.monkey.is_module_patched("socket")`` when None.
COOPERATIVE: bool | None = None

_RECV = 65536
_monotonic = time.monotonic
#: how late a cooperative pool's deadlines may fire (its watchdog's resolution), and after how
#: long without a command its timer stops
RESOLUTION = 0.005
IDLE_STOP = 1.0


class Pool:
    """Connections to one Redis server: at most ``size`` (see the module docstring).

    ``address`` is ``(host, port)`` or a unix socket path. ``cooperative`` (default:
    :data:`COOPERATIVE`, else whether gevent patched ``socket``) pipelines every command on one
    connection and waits through the gevent hub; otherwise the calling thread takes a pooled
    connection and blocks in ``poll``. Methods raise ``redis.exceptions.ConnectionError``,
    ``TimeoutError``, ``ResponseError`` (and its subclasses) like redis-py.
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
            cooperative = COOPERATIVE if COOPERATIVE is not None else _gevent_patched()
        self.address = address
        self.size = int(size)
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.cooperative = cooperative
        self.closed = False
        self._opened = 0  # blocking mode: connections open (idle + in use), at most size
        self._idle: list[Any] = []
        self._waiting = 0  # threads waiting for a connection
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # deadlines of the greenlets waiting on this pool (cooperative)
        self._watchdog = Watchdog(RESOLUTION, IDLE_STOP) if cooperative else None
        self._mux: _Mux | None = None
        self.batches = 0  # cooperative: writes sent (each carries one or more commands)
        self._hello = self._handshake(username, password, int(db))
        self._scripts: dict[str, Script] = {}

    @staticmethod
    def _handshake(username: str | None, password: str | None, db: int) -> list[bytes]:
        """What redis-py (RESP2) sends on connect: ``AUTH [user] password``, ``SELECT db``."""
        cmds = []
        if username or password:
            cmds.append(
                pack("AUTH", username, password or "") if username else pack("AUTH", password)
            )
        if db:
            cmds.append(pack("SELECT", db))
        return cmds

    # -------------------------------------------------------------- public
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
        return self._opened + (1 if m is not None and m.conn is not None and not m.dead else 0)

    def idle_count(self) -> int:
        """Open connections no command is using now."""
        m = self._mux
        busy_mux = m is None or m.conn is None or m.dead or bool(m.pending)
        return len(self._idle) + (0 if busy_mux else 1)

    def close(self) -> None:
        """Close the connections (one in use by a thread when it is released; commands
        waiting on the pipelined one fail). Like a closed redis-py client, the pool still
        works afterwards: a later command connects again."""
        self.closed = True
        while self._idle:
            self._forget(self._idle.pop())
        if self._mux is not None:
            self._mux.kill(rexc.ConnectionError("Connection pool closed."))
            self._mux = None

    # -------------------------------------------------------------- internals
    def _run(self, payload: bytes, script: Script | None) -> Any:
        if self.cooperative:
            return self._run_mux(payload, script)
        conn = self._acquire()
        try:
            reply = self._roundtrip(conn, payload)
            if script is not None and reply.__class__ is rexc.NoScriptError:
                self._roundtrip(conn, pack("SCRIPT", "LOAD", script.src), raise_errors=True)
                reply = self._roundtrip(conn, payload)
        except BaseException:
            self._forget(conn)  # a half-read reply must never reach the next user
            raise
        self._release(conn)
        if isinstance(reply, rexc.ResponseError):
            raise reply
        return reply

    def _roundtrip(self, conn: Any, payload: bytes, raise_errors: bool = False) -> Any:
        """Send ``payload`` and read one reply, within ``timeout``. An error reply is returned
        (the connection is fine), unless ``raise_errors`` or it means a dead connection;
        socket failures and timeouts raise redis-py's exceptions."""
        if self._watchdog is not None:
            self._watchdog.start()  # (stopped when idle; the transport's waits need it)
        deadline = _monotonic() + self.timeout
        try:
            conn.sendall(payload, self.timeout)
            reply = self._read(conn, deadline)
        except TimeoutError:  # a watchdog's Expired, or a socket's own timeout
            raise rexc.TimeoutError("Timeout reading from socket") from None
        except OSError as exc:
            raise rexc.ConnectionError(f"Error while talking to the server: {exc}") from None
        if isinstance(reply, rexc.RedisError) and (
            raise_errors or isinstance(reply, rexc.ConnectionError)
        ):
            raise reply
        return reply

    def _read(self, conn: Any, deadline: float) -> Any:
        """One whole reply, by ``deadline``; no byte may follow it (we never pipeline)."""
        buf = b""
        while True:
            left = deadline - _monotonic()
            if left <= 0:
                raise TimeoutError
            data = conn.read(left, True)
            if not data:
                raise rexc.ConnectionError("Connection closed by server.")
            buf = buf + data if buf else data
            try:
                reply, pos = _parse(buf, 0)
            except _Incomplete:
                continue
            if pos != len(buf):
                raise rexc.InvalidResponse("Protocol Error: unexpected data after a reply")
            return reply

    # -------------------------------------------------------------- pipelined (gevent)
    def _run_mux(self, payload: bytes, script: Script | None) -> Any:
        reply = self._call_mux(payload)
        if script is not None and reply.__class__ is rexc.NoScriptError:
            loaded = self._call_mux(pack("SCRIPT", "LOAD", script.src))
            if isinstance(loaded, rexc.RedisError):
                raise loaded
            reply = self._call_mux(payload)
        if isinstance(reply, rexc.ResponseError):
            raise reply
        return reply

    def _call_mux(self, payload: bytes) -> Any:
        """Queue ``payload`` on the shared connection and wait for its reply (``timeout``)."""
        m = self._mux
        if m is None or m.dead:
            m = self._mux = _Mux(self)
        w = _Waiter(m.hub)
        try:
            m.submit(payload, w)
        except _Stale:  # closed by the server while idle: once more on a new connection
            m = self._mux = _Mux(self)
            m.submit(payload, w)
        try:
            reply = self._watchdog.wait(w, self.timeout)
        except Expired:
            m.kill(rexc.TimeoutError("Timeout reading from socket"))
            raise rexc.TimeoutError("Timeout reading from socket") from None
        if reply.__class__ is _Failure:  # shared by all the waiters: raise a copy each
            exc = reply.exc
            try:
                copy = exc.__class__(*exc.args)
            except Exception:
                copy = exc
            raise copy from None
        if isinstance(reply, rexc.ConnectionError):  # e.g. "max number of clients reached"
            m.kill(reply)
            raise reply
        return reply

    # -------------------------------------------------------------- the pool (threads)
    def _acquire(self) -> Any:
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:  # another thread took it
                break
            if conn.alive():
                return conn
            self._forget(conn)  # closed by the server while idle: replace it
        return self._acquire_slow()

    def _acquire_slow(self) -> Any:
        """Wait (up to ``timeout``) for an idle connection or a free slot, then connect."""
        deadline = _monotonic() + self.timeout
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
                if conn is None and self._opened < self.size:
                    self._opened += 1
                    break
            if conn is not None:
                if conn.alive():
                    return conn
                self._forget(conn)
                continue
            left = deadline - _monotonic()
            if left <= 0:
                raise rexc.ConnectionError("No connection available.")
            self._sleep(left)
        try:
            return self._connect()
        except BaseException:
            with self._lock:
                self._opened -= 1
            self._wake()
            raise

    def _sleep(self, left: float) -> None:
        """Wait until a connection is released or closed (or ``left`` seconds pass)."""
        with self._cond:
            self._waiting += 1
            try:
                if not self._idle and self._opened >= self.size:
                    self._cond.wait(left)
            finally:
                self._waiting -= 1

    def _wake(self) -> None:
        if self._waiting:
            with self._cond:
                self._cond.notify()

    def _release(self, conn: Any) -> None:
        if self.closed:
            self._forget(conn)
            return
        self._idle.append(conn)
        if self._waiting:
            self._wake()

    def _forget(self, conn: Any) -> None:
        conn.close()
        with self._lock:
            self._opened -= 1
        self._wake()

    def _connect(self) -> Transport | TimeoutTransport:
        addr = self.address
        try:
            sock = open_socket(addr, self.connect_timeout, self.cooperative)
        except TimeoutError:
            raise rexc.TimeoutError("Timeout connecting to server") from None
        except OSError as exc:
            where = addr if isinstance(addr, str) else f"{addr[0]}:{addr[1]}"
            raise rexc.ConnectionError(
                f"Error {exc.errno} connecting to {where}. {exc.strerror}."
            ) from None
        # cooperative: the non-blocking socket, waits on the hub, deadlines on the pool's
        # watchdog; threads: the socket waits itself (in poll), within each call's timeout
        conn: Any = Transport(sock, self._watchdog) if self.cooperative else TimeoutTransport(sock)
        try:
            for cmd in self._hello:
                reply = self._roundtrip(conn, cmd)
                if isinstance(reply, rexc.AuthenticationWrongNumberOfArgsError):
                    raise rexc.AuthenticationError("Invalid Username or Password")
                if isinstance(reply, rexc.AuthenticationError):
                    raise reply
                if isinstance(reply, rexc.ResponseError):
                    raise rexc.ConnectionError(f"Error during connection setup: {reply}")
        except BaseException:
            conn.close()
            raise
        return conn


class _Failure:
    """Handed to a waiter instead of a reply: the connection failed (``exc`` is raised)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Mux:
    """The connection a cooperative pool pipelines on (auto-pipelining).

    Commands queued by the greenlets that run in one loop iteration go out in a single write
    (a loop callback); one read watcher takes the replies in order and hands each to its
    greenlet's waiter. Any failure (connect, read, write, a reply late past ``timeout``, a
    protocol error) closes the connection and fails every command still waiting on it, so no
    reply is ever matched to the wrong command; the next command opens a new connection.
    """

    __slots__ = (
        "pool",
        "hub",
        "conn",
        "pending",
        "out",
        "wbuf",
        "flushing",
        "dead",
        "connecting",
        "buf",
        "rw",
        "ww",
    )

    def __init__(self, pool: Pool) -> None:
        from gevent import get_hub

        self.pool = pool
        self.hub = get_hub()
        self.conn: Any | None = None
        self.pending: deque[Any] = deque()  # waiters, in the order of their commands
        self.out: list[bytes] = []  # queued, not yet written
        self.wbuf = b""  # written in part; the rest waits for the socket
        self.flushing = False
        self.dead = False
        self.connecting = False
        self.buf = b""
        self.rw: Any = None
        self.ww: Any = None

    def submit(self, payload: bytes, waiter: Any) -> None:
        """Queue one command; its reply (or a ``_Failure``) will be switched to ``waiter``.
        Raises (after failing the others queued) when the connection cannot be opened."""
        if self.conn is not None and not self.pending and not self.conn.alive():
            self.kill(rexc.ConnectionError("Connection closed by server."))
            raise _Stale
        self.pending.append(waiter)
        self.out.append(payload)
        if self.conn is None:
            if not self.connecting:
                self._open()
            return
        if not self.flushing:
            self.flushing = True
            self.hub.loop.run_callback(self._flush)

    def _open(self) -> None:
        self.connecting = True
        try:
            conn = self.pool._connect()
        except BaseException as exc:
            self.pending.popleft()  # ours: the caller gets the exception itself
            self.kill(
                exc
                if isinstance(exc, rexc.RedisError)
                else rexc.ConnectionError(f"connect failed: {exc!r}")
            )
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
        self.flushing = False
        if self.dead or not self.out:
            return
        data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
        self.out.clear()
        if self.wbuf:  # still writing an earlier batch: keep the order
            self.wbuf += data
            return
        self.pool.batches += 1
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            sent = self.conn.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.kill(rexc.ConnectionError(f"Error while writing to socket: {exc}"))
            return
        if sent < len(data):
            self.wbuf = data[sent:]
            if not self.ww.active:
                self.ww.start(self._on_write)
        elif self.wbuf:
            self.wbuf = b""

    def _on_write(self) -> None:
        data, self.wbuf = self.wbuf, b""
        self.ww.stop()
        if data and not self.dead:
            self._write(data)

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
        buf = self.buf + data if self.buf else data
        pos = 0
        pending = self.pending
        n = len(buf)
        while pos < n:
            try:
                reply, pos = _parse(buf, pos)
            except _Incomplete:
                break
            except Exception as exc:  # a malformed reply: nothing after it can be trusted
                self.kill(rexc.InvalidResponse(f"Protocol Error: {exc}"))
                return
            if not pending:
                self.kill(rexc.InvalidResponse("Protocol Error: a reply nobody asked for"))
                return
            pending.popleft().switch(reply)  # runs that greenlet until it waits again
            if self.dead:
                return
        self.buf = buf[pos:] if pos < n else b""

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
        failure = _Failure(exc)
        run = self.hub.loop.run_callback
        while self.pending:
            run(self.pending.popleft().switch, failure)
        self.out.clear()
        self.wbuf = b""


class _Stale(Exception):
    """The idle shared connection was closed by the server: retry on a new one."""


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return False
    return bool(monkey.is_module_patched("socket"))


# ------------------------------------------------------------------------------ config
def lean_params(url: str) -> dict[str, Any] | None:
    """The :class:`Pool` arguments for ``url`` when it takes the lean path, else ``None``.

    Lean: ``redis://`` with one host and ``unix://``, no query option but ``db``. Host, port,
    user, password and db are read as redis-py's ``from_url`` reads them (``localhost:6379``
    by default; a query ``db`` wins over the path).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "unix"):
        return None
    query = parse_qs(parts.query)
    if set(query) - {"db"} or parts.fragment:
        return None
    out: dict[str, Any] = {}
    try:
        if parts.username:
            out["username"] = unquote(parts.username)
        if parts.password:
            out["password"] = unquote(parts.password)
        elif "username" in out:
            return None  # a user without a password: left to redis-py's own handling
        if query.get("db"):
            out["db"] = int(query["db"][0])
        if parts.scheme == "unix":
            if not parts.path:
                return None
            out["address"] = unquote(parts.path)
        else:
            host = parts.netloc.rpartition("@")[2]
            if "," in host:
                return None
            out["address"] = (unquote(parts.hostname or "localhost"), int(parts.port or 6379))
            if parts.path and "db" not in out:
                try:
                    out["db"] = int(unquote(parts.path).replace("/", ""))
                except ValueError:
                    pass
    except ValueError:
        return None  # redis-py reports a bad URL its own way
    return out


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
