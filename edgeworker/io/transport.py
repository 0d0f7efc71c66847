"""Connected stream sockets with deadlines: the only waits on sockets in edgeworker.

A transport is one connection (a client's, an upstream's, a Redis server's). Its users call
``send(data)`` (what the socket takes now, without waiting: a bound method of the non-blocking
socket itself, no Python frame) and ``read(timeout)`` (the next bytes, waiting when none are
there), and come back here only when a write could not finish (``send_rest``) or to wait.

- ``Transport``: a plain socket in a gevent worker. It has no timeout: reads and writes go to
  the non-blocking socket underneath, a wait is one hub switch on the socket's own watcher, and
  its deadline is a store into a ``Watchdog`` (``watchdog.py``), no timer per wait.
- ``TLSTransport``: the same over TLS. Its reads may find bytes already decrypted
  (``pending()``), a read or a write may have to wait for the other direction
  (want-read/want-write), and the handshake has a deadline of its own.
- ``TimeoutTransport``: a socket that waits itself, within the timeout set before each call
  (outside a gevent worker's connection greenlets: threads, ``edgeworker.http.request``).

Errors are ``OSError``: ``Expired`` (a ``TimeoutError``) when a deadline passes,
``TimeoutError`` from a socket's own timeout, the socket's errors otherwise.
"""

from __future__ import annotations

import os
import select
import socket
import time
from functools import partial
from typing import Any

from greenlet import getcurrent

from .watchdog import WATCHDOG, Watchdog

#: the most a read returns
RECV = 65536
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_RESET = (ConnectionResetError, BrokenPipeError)
_monotonic = time.monotonic


def _events(sock: Any) -> tuple[Any, Any, Any]:
    """(hub, read watcher, write watcher) of ``sock``: a gevent socket's own, else new ones on
    this thread's hub (and the socket made non-blocking)."""
    hub = getattr(sock, "hub", None)
    rev = getattr(sock, "_read_event", None)
    if hub is not None and rev is not None:
        return hub, rev, sock._write_event
    from gevent import get_hub

    sock.setblocking(False)
    hub = get_hub()
    fd = sock.fileno()
    return hub, hub.loop.io(fd, 1), hub.loop.io(fd, 2)


class Transport:
    """A plain stream socket in a gevent worker (see the module docstring).

    ``sock``: a gevent socket without timeout (or any socket: it is made non-blocking).
    ``watchdog`` bounds the waits: they store their deadlines into its ``armed`` directly, so
    its timer must run (started here; a watchdog that stops when idle is started again by its
    user before a wait). ``reset_is_eof``: a connection reset by the peer reads as the end
    (``b""``) instead of raising.
    """

    __slots__ = (
        "sock",
        "raw",
        "recv",
        "send",
        "reset_is_eof",
        "watchdog",
        "detached",
        "_armed",
        "_hub",
        "_wait_read",
        "_wait_write",
        "_poll",
        "_rev",
        "_reader",
        "_on_readable",
        "_switch",
    )

    def __init__(
        self, sock: Any, watchdog: Watchdog = WATCHDOG, reset_is_eof: bool = False
    ) -> None:
        self.sock = sock
        raw = getattr(sock, "_sock", sock)  # gevent's socket wraps a non-blocking one
        self.raw = raw
        hub, rev, wev = _events(sock)
        self._hub = hub
        self._rev = rev
        self._reader: list[Any] = [None]
        self._wait_read = self._make_wait_read(hub, rev)
        self._wait_write = partial(hub.wait, wev)
        #: what the socket takes now, without waiting (``BlockingIOError``: nothing)
        self.send = raw.send
        #: what the socket holds now, without waiting (``BlockingIOError``: nothing yet)
        self.recv = raw.recv
        self.reset_is_eof = reset_is_eof
        self.detached = False
        self.watchdog = watchdog
        self._armed = watchdog.armed
        self._poll: Any = None  # (see alive)
        watchdog.start()  # the waits below store their deadlines into ``armed`` directly

    def _make_wait_read(self, hub: Any, rev: Any) -> Any:
        """The wait for the socket to be readable: one hub switch, the read watcher left
        running after it (``read`` has it inline).

        ``hub.wait`` starts the watcher and stops it after each wait; when a wait ends in
        one turn of the loop and the next starts in a later one (a proxied request waits on
        the client, then on the upstream, then on the client), the event loop changes the
        socket's interest in between and back (a failing ``epoll_ctl`` each time). Left
        running, the watcher costs nothing while the peer is quiet; an event that finds
        no reader stops it (the next wait starts it again).
        """
        reader = self._reader
        switch = hub.switch

        def on_readable() -> None:  # (a plain function: gevent throws into a bound one's
            g = reader[0]  # ``__self__`` when it closes the socket)
            if g is None:
                rev.stop()
            else:
                g.switch()

        def wait_read() -> None:
            if rev.callback is not on_readable:
                rev.start(on_readable)
            reader[0] = getcurrent()
            try:
                switch()
            finally:
                reader[0] = None

        self._on_readable = on_readable
        self._switch = switch
        return wait_read

    def pending(self) -> int:
        """Bytes already received and buffered above the socket (none for a plain one)."""
        return 0

    def fileno(self) -> int:
        return self.raw.fileno()

    def read(self, timeout: float, wait_first: bool = False) -> bytes:
        """What the peer sent next (``b""`` at EOF), waiting at most ``timeout`` seconds.

        The socket is tried first: when data is waiting, no switch and no deadline happen.
        ``wait_first`` goes to the hub before trying (when nothing can be there yet, or to let
        the other greenlets take their turn).
        """
        raw = self.raw
        try:
            if not wait_first:
                try:
                    return raw.recv(RECV)
                except BlockingIOError:
                    pass
            g = getcurrent()
            armed = self._armed
            armed[g] = _monotonic() + timeout
            rev = self._rev
            on_readable = self._on_readable
            reader = self._reader
            switch = self._switch  # (not called as self._switch(): a generic method lookup)
            try:
                while True:  # (_wait_read, inlined)
                    if rev.callback is not on_readable:
                        rev.start(on_readable)
                    reader[0] = g
                    switch()
                    try:
                        return raw.recv(RECV)
                    except BlockingIOError:  # a spurious wake-up: wait again
                        continue
            finally:
                reader[0] = None
                armed.pop(g, None)
        except _RESET:
            if self.reset_is_eof:
                return b""
            raise

    def send_rest(self, data: bytes, sent: int, timeout: float) -> None:
        """Send ``data`` from ``sent`` on (after ``send`` took only that much), waiting for the
        peer to read; each wait is bounded by ``timeout`` (between two writes, as nginx)."""
        view = memoryview(data)
        g = getcurrent()
        armed = self._armed
        send = self.send
        try:
            while sent < len(view):
                view = view[sent:]
                armed[g] = _monotonic() + timeout
                self._wait_write()
                try:
                    sent = send(view)
                except BlockingIOError:
                    sent = 0
        finally:
            armed.pop(g, None)

    def sendall(self, data: bytes, timeout: float) -> None:
        """Send all of ``data`` (``send``, then ``send_rest`` if the socket took less)."""
        try:
            sent = self.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.send_rest(data, sent, timeout)

    def sendfile(self, fd: int, offset: int, count: int, timeout: float) -> int:
        """Send up to ``count`` bytes of file ``fd`` from ``offset`` (zero-copy), waiting at
        most ``timeout`` for the socket to take them; the bytes sent (0: the file ended)."""
        out = self.raw.fileno()
        while True:
            try:
                return os.sendfile(out, fd, offset, count)
            except BlockingIOError:
                self.wait_writable(timeout)

    def wait_readable(self, timeout: float) -> None:
        """Return when there is something to read (``Expired`` after ``timeout``)."""
        if self.pending():
            return
        self._wait(self._wait_read, timeout)

    def wait_writable(self, timeout: float) -> None:
        """Return when the socket takes more (``Expired`` after ``timeout``)."""
        self._wait(self._wait_write, timeout)

    def _wait(self, wait: Any, timeout: float) -> None:
        g = getcurrent()
        armed = self._armed
        armed[g] = _monotonic() + timeout
        try:
            wait()
        finally:
            armed.pop(g, None)

    def watchers(self) -> tuple[Any, Any]:
        """New (read, write) watchers of the socket on its hub, not started, for a user that
        reacts to the socket in callbacks instead of waiting (the Redis multiplexer)."""
        loop = self._hub.loop
        fd = self.raw.fileno()
        return loop.io(fd, 1), loop.io(fd, 2)

    def alive(self) -> bool:
        """True if an idle connection still looks usable: the peer has not closed it and has
        sent nothing unexpected (nothing to read: one ``poll`` without waiting, on the real
        ``poll``, as gevent's costs a timer per call)."""
        poll = self._poll
        if poll is None:
            poll = self._poll = _real_poll()
            poll.register(self.raw.fileno(), select.POLLIN)
        return not poll.poll(0)  # EOF, stray bytes or an error: either way not reusable

    def detach(self) -> Any:
        """The socket, handed over: ``close`` no longer closes it."""
        self._rev.stop()
        return _detach(self)

    def close(self) -> None:
        """Close the socket (unless it was detached); errors are ignored."""
        self._rev.stop()
        _close(self)


def _detach(self: Any) -> Any:
    """The socket, handed over: ``close`` no longer closes it."""
    self.detached = True
    return self.sock


def _close(self: Any) -> None:
    """Close the socket (unless it was detached); errors are ignored."""
    if self.detached:
        return
    try:
        self.sock.close()
    except OSError:
        pass


class TLSTransport(Transport):
    """A TLS connection in a gevent worker: a gevent ``SSLSocket`` without timeout, whose TLS
    object reads and writes over the non-blocking socket underneath (see the module
    docstring). Made before the handshake (``handshake``) or after it.

    ``tls``: the object that reads, writes and handshakes without waiting (raising
    ``ssl.SSLWantReadError``/``SSLWantWriteError``): by default the TLS object of gevent's
    socket (an upstream's); a ``BIOTLS`` for TLS over memory buffers (a client's, made by
    ``edgeworker.tls``)."""

    __slots__ = ("tls",)

    def __init__(
        self,
        sock: Any,
        watchdog: Watchdog = WATCHDOG,
        reset_is_eof: bool = False,
        tls: Any = None,
    ) -> None:
        super().__init__(sock, watchdog, reset_is_eof)
        if _SSLError is None:
            _load_ssl()
        self.tls = sock._sslobj if tls is None else tls
        self.send = self._send_now
        self.recv = self._recv_now

    def pending(self) -> int:
        return self.tls.pending()

    def _send_now(self, data: Any) -> int:
        try:
            return self.tls.write(data)
        except (_WantRead, _WantWrite):
            return 0

    def _recv_now(self, size: int = RECV) -> bytes:
        """What the TLS object gives now (``BlockingIOError``: it needs the socket first)."""
        try:
            return self.tls.read(size)
        except (_WantRead, _WantWrite):
            raise BlockingIOError from None
        except _SSLError as exc:
            return _eof(exc)

    def _call(self, op: Any, arg: Any, timeout: float, wait: Any = None) -> Any:
        """``op(arg)`` once it no longer wants to read or write, all its waits within
        ``timeout`` (``Expired``); ``wait`` first, when given."""
        g = None
        armed = self._armed
        try:
            while True:
                if wait is not None:
                    if g is None:
                        g = getcurrent()
                        armed[g] = _monotonic() + timeout
                    wait()
                try:
                    return op(arg)
                except _WantRead:
                    wait = self._wait_read
                except _WantWrite:
                    wait = self._wait_write
        finally:
            if g is not None:
                armed.pop(g, None)

    def handshake(self, timeout: float) -> None:
        """Run the TLS handshake, within ``timeout`` (``Expired``; ``ssl.SSLError``)."""
        self._call(lambda _: self.tls.do_handshake(), None, timeout)

    def read(self, timeout: float, wait_first: bool = False) -> bytes:
        """As ``Transport.read``; ``wait_first`` waits only when no decrypted bytes are
        buffered (``pending``)."""
        tls = self.tls
        wait = self._wait_read if wait_first and not tls.pending() else None
        try:
            return self._call(tls.read, RECV, timeout, wait)
        except _SSLError as exc:
            return _eof(exc)
        except _RESET:
            if self.reset_is_eof:
                return b""
            raise

    def send_rest(self, data: bytes, sent: int, timeout: float) -> None:
        view = memoryview(data)
        write = self.tls.write
        while sent < len(view):
            view = view[sent:]
            sent = self._call(write, view, timeout)

    def sendfile(self, fd: int, offset: int, count: int, timeout: float) -> int:
        """As ``Transport.sendfile``, through TLS: read from the file, then encrypted."""
        data = os.pread(fd, min(count, RECV), offset)
        if data:
            self.sendall(data, timeout)
        return len(data)

    def alive(self) -> bool:
        """TLS connections are not checked (a session ticket may be waiting): True."""
        return True

    def detach(self) -> Any:
        """The connection, handed over (``close`` no longer closes it): gevent's socket, or
        for TLS over memory buffers (``BIOTLS``) a ``TLSStream`` over this transport (which
        goes on waiting through it)."""
        if isinstance(self.tls, BIOTLS):
            self.detached = True
            return TLSStream(self)
        return Transport.detach(self)


class TLSStream:
    """A socket-like object over a detached ``TLSTransport`` (``settimeout``, ``recv``,
    ``sendall``, ``shutdown``, ``close``), for ``relay``: the client side of an upgraded
    connection (WebSocket) that arrived over TLS. Its waits are the transport's, bounded by
    the timeout last set."""

    __slots__ = ("transport", "timeout")

    def __init__(self, transport: TLSTransport) -> None:
        self.transport = transport
        self.timeout = 60.0

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = 60.0 if timeout is None else timeout

    def recv(self, size: int = RECV) -> bytes:
        return self.transport.read(self.timeout)

    def sendall(self, data: Any) -> None:
        self.transport.sendall(data, self.timeout)

    def shutdown(self, how: int) -> None:
        self.transport.sock.shutdown(how)

    def close(self) -> None:
        self.transport._rev.stop()
        try:
            self.transport.sock.close()
        except OSError:
            pass


class TLSError(OSError):
    """A TLS failure of a ``BIOTLS`` (OpenSSL's error queue): ``reason`` is OpenSSL's reason
    of the first error, in the stdlib ``ssl`` module's spelling (``CERTIFICATE_VERIFY_FAILED``,
    ``UNSUPPORTED_PROTOCOL``), for logs and counters."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BIOTLS:
    """A TLS object over memory buffers (a pyOpenSSL ``Connection`` made without a socket)
    and a non-blocking socket, with the interface ``TLSTransport`` drives: ``read``,
    ``write``, ``do_handshake`` and ``pending``, which never wait but raise
    ``ssl.SSLWantReadError`` (the socket has nothing yet) or ``ssl.SSLWantWriteError`` (it
    takes nothing now); a read returns ``b""`` at the peer's close (clean or ragged), other
    TLS failures raise ``TLSError``.

    Reads and writes call OpenSSL through the bindings pyOpenSSL is built on, with the
    connection's handles (its ``SSL`` and memory ``BIO``s): pyOpenSSL's own methods cost a
    third more instructions per keep-alive request. As OpenSSL's own, a ``write`` that wanted
    to write is called again with the same data: the bytes it encrypted are sent first and
    its count returned then. ``obj``: the ``Connection``; ``raw``: the socket."""

    __slots__ = ("obj", "raw", "_ssl", "_into", "_from", "_out", "_owed")

    def __init__(self, obj: Any, raw: Any) -> None:
        if _lib is None:
            _load_openssl()
        self.obj = obj
        self.raw = raw
        self._ssl = obj._ssl
        self._into = obj._into_ssl
        self._from = obj._from_ssl
        self._out = b""  # encrypted bytes the socket did not take yet
        self._owed = 0  # the count of the write they belong to

    def pending(self) -> int:
        """Bytes readable without the socket: decrypted, or received and not yet decrypted."""
        return _lib.SSL_pending(self._ssl) or _lib.BIO_get_mem_data(self._into, _NULL)

    def _flush(self) -> None:
        """Send what TLS wrote; ``SSLWantWriteError`` when the socket takes no more now."""
        out = self._out
        waiting = _lib.BIO_get_mem_data(self._from, _NULL)
        while waiting:
            n = _lib.BIO_read(self._from, _BUF, waiting if waiting < RECV else RECV)
            out = out + _ffi.unpack(_BUF, n) if out else _ffi.unpack(_BUF, n)
            waiting -= n
        while out:
            try:
                sent = self.raw.send(out)
            except BlockingIOError:
                self._out = out
                raise _WantWrite() from None
            out = out[sent:]
        self._out = b""

    def _fill(self) -> None:
        """Move what the socket holds into TLS; ``SSLWantReadError`` when it holds nothing."""
        try:
            data = self.raw.recv(RECV)
        except BlockingIOError:
            raise _WantRead() from None
        if data:
            _lib.BIO_write(self._into, data, len(data))
        else:
            _lib.BIO_set_mem_eof_return(self._into, 0)

    def do_handshake(self) -> None:
        ssl = self._ssl
        while True:
            result = _lib.SSL_do_handshake(ssl)
            if result == 1:
                self._flush()
                return
            if _lib.SSL_get_error(ssl, result) == _SSL_WANT_READ:
                self._flush()
                self._fill()
                continue
            self._flush_some()  # the alert that tells the client why
            raise _tls_error()

    def read(self, size: int = RECV) -> bytes:
        """Never waits to write (a tunnel reads and writes in two greenlets): what TLS wrote
        of its own while reading (a key update's answer) is sent now if the socket takes it,
        else before the next write's bytes."""
        lib = _lib
        ssl = self._ssl
        if not lib.SSL_pending(ssl) and not lib.BIO_get_mem_data(self._into, _NULL):
            # nothing for TLS to read yet: the socket first (an exception fewer than asking
            # TLS, which would want to read, and asking again)
            self._fill()
        while True:
            n = lib.SSL_read(ssl, _BUF, size if size < RECV else RECV)
            if n > 0:
                data = _ffi.unpack(_BUF, n)
                if self._out or lib.BIO_get_mem_data(self._from, _NULL):
                    self._flush_some()
                return data
            error = lib.SSL_get_error(ssl, n)
            if error == _SSL_WANT_READ:
                self._flush_some()
                self._fill()
                continue
            if error in _SSL_EOF:
                # the peer's close: close_notify, or the connection ending without it (a
                # ragged EOF, accepted as ssl sockets do by default)
                lib.ERR_clear_error()
                return b""
            raise _tls_error()

    def _flush_some(self) -> None:
        if self._out or _lib.BIO_get_mem_data(self._from, _NULL):
            try:
                self._flush()
            except _WantWrite:
                pass

    def write(self, data: Any) -> int:
        if self._owed:  # the bytes of the previous write first: that write's count then
            self._flush()
            owed, self._owed = self._owed, 0
            return owed
        # (bytes as they are; a memoryview, a bytearray through a cdata over its buffer)
        n = _lib.SSL_write(
            self._ssl, data if data.__class__ is bytes else _ffi.from_buffer(data), len(data)
        )
        if n <= 0:
            raise _tls_error()
        self._owed = n
        self._flush()
        self._owed = 0
        return n


class TimeoutTransport:
    """A socket that waits itself: each call sets its timeout first (see the module
    docstring). ``send`` never takes anything (0): ``send_rest`` sends it all."""

    __slots__ = ("sock", "reset_is_eof", "detached")

    def __init__(self, sock: Any, reset_is_eof: bool = False) -> None:
        self.sock = sock
        self.reset_is_eof = reset_is_eof
        self.detached = False

    def pending(self) -> int:
        return 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: Any) -> int:
        return 0

    def read(self, timeout: float, wait_first: bool = False) -> bytes:
        sock = self.sock
        sock.settimeout(timeout)
        try:
            return sock.recv(RECV)
        except _RESET:
            if self.reset_is_eof:
                return b""
            raise

    def send_rest(self, data: bytes, sent: int, timeout: float) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(memoryview(data)[sent:] if sent else data)

    def sendall(self, data: bytes, timeout: float) -> None:
        self.send_rest(data, 0, timeout)

    def handshake(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        self.sock.do_handshake()

    def alive(self) -> bool:
        """As ``Transport.alive``; TLS connections are not checked (True)."""
        sock = self.sock
        if getattr(sock, "_sslobj", None) is not None:
            return True
        raw = getattr(sock, "_sock", None)  # gevent: the non-blocking socket underneath
        try:
            if raw is not None:
                raw.recv(1, _PEEK)
            else:
                old = sock.gettimeout()
                sock.settimeout(0.0)
                try:
                    sock.recv(1, _PEEK)
                finally:
                    sock.settimeout(old)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    detach = _detach
    close = _close


def open_socket(address: tuple | str, timeout: float, gevent: bool = False) -> Any:
    """A stream socket connected to ``address`` (``(host, port)``, or a unix socket's path)
    within ``timeout`` seconds (the socket's own timeout, still set), with ``TCP_NODELAY``.
    On failure it is closed and the error raised (``TimeoutError``, ``OSError``).
    ``gevent``: a gevent socket even in a process gevent did not patch; else ``socket.socket``
    as it is."""
    unix = isinstance(address, str)
    if unix:
        family = socket.AF_UNIX
    else:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    if gevent:
        from gevent import socket as gsocket

        sock = gsocket.socket(family, socket.SOCK_STREAM)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        if not unix:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def relay(
    src: Any,
    dst: Any,
    idle: float,
    last: list[float],
    counter: list[int] | None,
    first: bytes = b"",
) -> None:
    """Copy bytes from ``src`` to ``dst`` until ``src`` ends (then ``dst`` is shut for
    writing), either fails, or nothing moved either way for ``idle`` seconds (``last[0]``, the
    monotonic time of the last move, is shared by both directions; both sockets are shut).
    ``counter[0]`` adds up the bytes copied. ``first``: bytes already read for ``dst`` (past
    a head), sent before any copied. One direction of an upgraded connection's tunnel; every
    wait, ``first`` included, is bounded."""
    wait = min(idle, 5.0)
    src.settimeout(wait)
    dst.settimeout(wait)
    if first:
        try:
            dst.sendall(first)
        except OSError:
            _shut(src, dst)
            return
    while True:
        try:
            data = src.recv(RECV)
        except TimeoutError:
            if _monotonic() - last[0] > idle:
                _shut(src, dst)
                return
            continue
        except OSError:
            _shut(src, dst)
            return
        if not data:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        last[0] = _monotonic()
        try:
            dst.sendall(data)
        except OSError:
            _shut(src, dst)
            return
        if counter is not None:
            counter[0] += len(data)


def _shut(a: Any, b: Any) -> None:
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def transport(sock: Any, watchdog: Watchdog = WATCHDOG, reset_is_eof: bool = False) -> Any:
    """The transport for ``sock``: ``TLSTransport`` for a gevent TLS socket, ``Transport``
    for any other."""
    if getattr(sock, "_sslobj", None) is not None:
        return TLSTransport(sock, watchdog, reset_is_eof)
    return Transport(sock, watchdog, reset_is_eof)


def _real_poll() -> Any:
    try:
        from gevent import monkey

        return monkey.get_original("select", "poll")()
    except ImportError:  # pragma: no cover
        return select.poll()


def _eof(exc: Exception) -> bytes:
    """A TLS read that ended: ``b""`` for the peer's close (clean, or without close_notify:
    a ragged EOF, accepted as ssl sockets do by default); anything else is raised."""
    import ssl

    if isinstance(exc, ssl.SSLZeroReturnError) or exc.args[0] == ssl.SSL_ERROR_EOF:
        return b""
    raise exc


# ssl's exceptions, bound when the first TLSTransport is made (importing ssl here would import it
# in the master, before a worker's gevent patching)
_SSLError: Any = None
_WantRead: Any = None
_WantWrite: Any = None


def _load_ssl() -> None:
    global _SSLError, _WantRead, _WantWrite
    import ssl

    _SSLError, _WantRead, _WantWrite = ssl.SSLError, ssl.SSLWantReadError, ssl.SSLWantWriteError


# OpenSSL's bindings (pyOpenSSL's), bound when the first BIOTLS is made (a worker without a TLS
# listener never loads them)
_lib: Any = None
_ffi: Any = None
_NULL: Any = None
_BUF: Any = None  # what SSL_read and BIO_read write into, copied out at once (one per process)
_SSL_WANT_READ = 2
_SSL_EOF: tuple[int, ...] = ()


def _load_openssl() -> None:
    global _lib, _ffi, _NULL, _BUF, _SSL_WANT_READ, _SSL_EOF
    from cryptography.hazmat.bindings.openssl.binding import Binding

    if _SSLError is None:
        _load_ssl()
    lib, ffi = Binding.lib, Binding.ffi
    _SSL_WANT_READ = lib.SSL_ERROR_WANT_READ
    _SSL_EOF = (lib.SSL_ERROR_ZERO_RETURN, lib.SSL_ERROR_SYSCALL)
    _NULL, _BUF = ffi.NULL, ffi.new("char[]", RECV)
    _lib, _ffi = lib, ffi


def _tls_error() -> TLSError:
    """OpenSSL's error queue as a ``TLSError`` (the queue emptied): the first reason,
    upper-case with underscores (``certificate verify failed``: ``CERTIFICATE_VERIFY_FAILED``)."""
    code = _lib.ERR_get_error()
    _lib.ERR_clear_error()
    text = _lib.ERR_reason_error_string(code) if code else _NULL
    reason = _ffi.string(text).decode("ascii", "replace") if text != _NULL else "TLS error"
    return TLSError(reason.upper().replace(" ", "_"))
