"""A small streaming HTTP/1.1 client on gevent sockets and ``httptools.HttpResponseParser``.

Used by the proxy (``handler.py``) and by ``edgeworker.http.request``. Nothing here knows about
balancing: it connects to one address, sends bytes, and reads one response at a time.

Errors are ``UpstreamError`` with the nginx status they map to: ``502`` for refused, reset,
closed-too-early and invalid responses, ``504`` (``UpstreamTimeout``) when ``connect_timeout``,
``send_timeout`` (between two writes) or ``read_timeout`` (between two reads) passes.
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Iterator
from typing import Any

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from ..errors import UpstreamError, UpstreamInvalid, UpstreamTimeout
from ..http.fields import ResponseFields, accel
from ..http.framing import INTERIM, NO_BODY, TO_CLOSE, content_length, response_body
from ..io import RECV, TimeoutTransport, Transport, open_socket, transport

#: the common response whole in the first read, parsed in C (see parse_response_head in
#: edgeworker/_speedups.c); None with EDGEWORKER_NO_ACCEL=1: httptools parses every response
_parse_head = accel.parse_response_head if accel is not None else None
_new = object.__new__

RECV_SIZE = RECV
#: the largest response head read from an upstream (nginx: proxy_buffer_size, 4k or 8k); past
#: it the response is invalid: 502, "upstream sent too big header"
MAX_HEAD = 65536


class UpConn:
    """One connection to an upstream address (possibly reused from a pool).

    ``timed``: the socket has no timeout; reads and writes go through an ``edgeworker.io``
    transport (the non-blocking socket underneath, waits on the hub, deadlines on the
    worker's watchdog), TLS included. Otherwise the socket waits itself, within the timeout
    set before each read or write.
    """

    __slots__ = (
        "sock",
        "key",
        "requests",
        "idle_since",
        "reused",
        "timed",
        "io",
        "plain",
        "recv",
        "_send",
    )

    def __init__(self, sock: socket.socket, key: tuple, timed: bool = False) -> None:
        self.sock = sock
        self.timed = timed
        self.key = key
        self.requests = 0
        self.idle_since = 0.0
        self.reused = False
        io: Any = transport(sock) if timed else TimeoutTransport(sock)
        self.io = io
        #: a plain socket of the worker (not TLS, no timeout of its own): the first read of a
        #: response may wait before trying, and its head is parsed in C when it can be
        self.plain = io.__class__ is Transport
        #: ``recv(timeout, wait_first=False)``: what the upstream sent next (``b""`` at EOF),
        #: waiting at most ``timeout`` seconds; ``wait_first`` goes to the hub before trying
        #: (right after a request was sent, when nothing can be there yet). Raises
        #: ``TimeoutError`` when the time passes, ``OSError`` when the connection fails.
        self.recv = io.read
        self._send = io.send  # what the socket takes now, without waiting

    def alive(self) -> bool:
        """True if an idle connection still looks usable: the peer has not closed it and has
        sent nothing unexpected (one check without waiting). TLS connections are not
        checked (a session ticket may be waiting); a stale one is retried instead."""
        return self.io.alive()

    def close(self) -> None:
        self.io.close()

    def send(self, data: bytes, timeout: float) -> None:
        """Write ``data`` whole; ``send_timeout`` applies between two writes.

        Raises ``UpstreamTimeout`` or ``UpstreamError``."""
        try:
            try:
                sent = self._send(data)  # the usual case: the socket buffer takes it all at once
            except BlockingIOError:
                sent = 0
            if sent != len(data):
                self.io.send_rest(data, sent, timeout)
        except TimeoutError:  # Expired included
            raise UpstreamTimeout("upstream timed out while sending request") from None
        except OSError as exc:
            raise UpstreamError(f"error while sending request to upstream: {exc}") from None


def connect(
    addr: tuple,
    timeout: float,
    key: tuple,
    tls_host: str | None = None,
    timed: bool = False,
    context=None,
) -> UpConn:
    """Open a TCP connection to ``addr`` (``(ip, port)`` or an IPv6 tuple) within ``timeout``.

    ``tls_host`` wraps the socket in TLS (verified against that name, sent as SNI unless it is
    an IP address), for https URLs; ``context`` is the ``ssl.SSLContext`` (default: the
    system's CAs, verification on).
    ``timed``: afterwards the socket has no timeout and reads/writes (and the TLS handshake)
    arm deadlines on the worker's ``Watchdog`` instead (gevent workers only: the proxy).
    Raises ``UpstreamTimeout`` or ``UpstreamError`` (refused, unreachable, TLS handshake
    failed) with ``sent=False``.
    """
    sock = None
    try:
        sock = open_socket(addr, timeout)
        if timed:
            sock.settimeout(None)
        if tls_host is None:
            return UpConn(sock, key, timed)
        sock = (context or tls_context()).wrap_socket(
            sock, server_hostname=tls_host, do_handshake_on_connect=False
        )
        conn = UpConn(sock, key, timed)
        conn.io.handshake(timeout)  # within the connect timeout (Expired: a TimeoutError)
        return conn
    except TimeoutError:
        if sock is not None:
            sock.close()
        raise UpstreamTimeout("upstream timed out while connecting", sent=False) from None
    except OSError as exc:
        if sock is not None:
            sock.close()
        reason = exc.strerror or str(exc)
        if tls_host is not None and type(exc).__module__ == "ssl":
            reason = f"TLS handshake failed: {exc}"
        raise UpstreamError(f"connect() failed ({reason})", sent=False) from None


@functools.cache
def tls_context(
    verify: bool = True, cafile: str | None = None, cert: str | None = None, key: str | None = None
):
    """The ``ssl.SSLContext`` for upstream connections set up this way (one per kind, shared
    by the proxy and ``edgeworker.http.request``): the system's CAs (or ``cafile``'s),
    certificate and host name checked; ``verify=False`` checks neither (nginx's default).
    ``cert``/``key``: a client certificate for mutual TLS. ``OSError`` or ``ssl.SSLError``
    for a file that cannot be loaded (not cached)."""
    import ssl

    context = ssl.create_default_context(cafile=cafile)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


class Response:
    """The response being read from an ``UpConn``: head first (``read_head``), then the body
    piece by piece (``body()``), without holding it whole.

    After ``read_head``: ``status``, ``raw_headers`` (``[(name, value)]`` bytes as received),
    ``version``; ``done`` is True when the whole body already arrived (``pending`` holds it).
    ``reusable`` tells, once the body is read, whether the connection may go back to a pool.
    """

    # defaults at class level: a response sets only what differs (cheaper to create)
    status = 0
    head_done = False
    done = False
    keep_alive = False
    close_delimited = False
    upgraded = False
    tail = b""
    received = 0
    length: int | None = None  # Content-Length of the response, when given
    _info = False
    _framed = False
    _version: str | None = None  # set when the head was parsed without httptools
    fields: ResponseFields | None = None  # a ProxyResponse's (see there)
    # callbacks httptools looks up but we do not use: present (None), so creating a parser
    # finds them without raising and catching an AttributeError for each
    on_message_begin = None
    on_status = None
    on_chunk_header = None
    on_chunk_complete = None

    def __init__(self, conn: UpConn, read_timeout: float, head_only: bool = False) -> None:
        self.conn = conn
        self.read_timeout = read_timeout
        self.head_only = head_only  # HEAD request: the response has no body whatever it says
        self.parser = HttpResponseParser(self)
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.pending: list[bytes] = []

    @property
    def version(self) -> str:
        """The response's HTTP version (``"1.1"``): as read in C, else asked of the parser
        when read (nothing on the proxy's path reads it, and httptools formats it at some
        cost). None before a head was read."""
        if self._version is not None:
            return self._version
        parser = self.parser
        return parser.get_http_version() if parser is not None else None

    # ---------------------------------------------------------------- parser callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))
        if len(name) in (14, 17):
            self._framing(name.lower(), value)

    def _framing(self, lname: bytes, value: bytes) -> None:
        """``Content-Length`` / ``Transfer-Encoding``: how the body is delimited."""
        if lname == b"content-length":
            self._framed = True
            length = content_length(value)
            if length is not None:
                self.length = length
        elif lname == b"transfer-encoding":
            self._framed = True
            self.length = None

    def on_headers_complete(self) -> None:
        fields = self.fields
        if fields is not None:  # a ProxyResponse: its fields read the framing
            self._framed = fields.framed
            self.length = fields.length
        status = self.parser.get_status_code()
        body = response_body(status, self.head_only, self._framed)
        if body == INTERIM:
            self._info = True  # 100 Continue, 103 Early Hints: skipped
            self._forget_fields()
            self._framed = False
            self.length = None
            return
        self.status = status
        self.head_done = True
        if body == NO_BODY:
            self.done = True
            self.keep_alive = self.parser.should_keep_alive()
        elif body == TO_CLOSE:
            self.close_delimited = True

    def _forget_fields(self) -> None:
        """An interim (1xx) head ended: its fields are not the response's."""
        self.raw_headers = []

    def on_body(self, data: bytes) -> None:
        if not self.done:
            self.pending.append(data)

    def on_message_complete(self) -> None:
        if self._info:
            self._info = False
            return
        if not self.done:
            self.done = True
            self.keep_alive = self.parser.should_keep_alive() and not self.close_delimited

    def release(self) -> None:
        """Drop the parser once the response is no longer read: the parser holds this
        response's bound methods, and breaking that cycle lets reference counting free both
        at once instead of leaving them to the cyclic GC."""
        self.parser = None

    # ---------------------------------------------------------------- reading
    def _recv(self, wait_first: bool = False) -> bytes:
        """Read once (``b""`` at EOF); a timeout or a failed read as ``UpstreamError``."""
        try:
            return self.conn.recv(self.read_timeout, wait_first)
        except TimeoutError:  # Expired included
            raise UpstreamTimeout("upstream timed out while reading response") from None
        except OSError as exc:
            raise UpstreamError(f"error while reading response from upstream: {exc}") from None

    def _take(self, data: bytes) -> None:
        """Parse ``data`` (not empty), read from the upstream."""
        self.received += len(data)
        parser = self.parser
        if parser is None:  # a ProxyResponse's (made only when its head is not read in C)
            if self.head_done:  # (released: reading on would parse mid-body bytes as a head)
                raise RuntimeError("the response was released")
            parser = self.parser = HttpResponseParser(self)
        try:
            parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self.upgraded = True
            self.tail = data[exc.args[0] :]
        except HttpParserError as exc:
            if self.done and self.head_only:
                return  # bytes after a HEAD response: ignored, connection not reused
            raise UpstreamInvalid(f"upstream sent an invalid response: {exc}") from None

    def _feed(self, wait_first: bool = False) -> bool:
        """Read once and parse; False on EOF."""
        data = self._recv(wait_first)
        if not data:
            return False
        self._take(data)
        return True

    def read_head(self) -> None:
        """Read until the response head is complete (a 101 included).

        Raises ``UpstreamTimeout`` (no byte within ``read_timeout``) or ``UpstreamError``
        (closed, reset, or not HTTP).
        """
        # the request was just sent: nothing can be there yet, so the first read waits first
        # (a TLS transport asks its TLS object first all the same; a socket waiting itself
        # does not tell)
        self._read_head(self.conn.plain)

    def _read_head(self, wait_first: bool) -> None:
        first = wait_first
        while not self.head_done:
            more = self._feed(first)
            first = False
            if not more:
                if self.received:
                    raise UpstreamError(
                        "upstream prematurely closed connection while reading response header"
                    )
                raise UpstreamError("upstream closed the connection without answering")
            if not self.head_done and self.received > MAX_HEAD:
                raise UpstreamInvalid("upstream sent too big header")

    def body(self) -> Iterator[bytes]:
        """The body pieces as they arrive (de-chunked). A close-delimited body ends at EOF;
        any other EOF before the end raises ``UpstreamError`` ("prematurely closed")."""
        while True:
            if self.pending:
                pieces = self.pending
                self.pending = []
                yield from pieces
            if self.done:
                return
            if not self._feed():
                if self.close_delimited:
                    self.done = True
                    self.keep_alive = False
                    continue
                raise UpstreamError("upstream prematurely closed connection while reading upstream")

    def read_all(self, limit: int | None = None) -> bytes:
        """The whole body (``limit``: stop early with ``UpstreamError`` past that size)."""
        out = []
        size = 0
        for piece in self.body():
            out.append(piece)
            size += len(piece)
            if limit is not None and size > limit:
                raise UpstreamError(f"response body larger than {limit} bytes")
        return b"".join(out)

    @property
    def reusable(self) -> bool:
        """The body was read to its end and the upstream keeps the connection."""
        return self.done and self.keep_alive and not self.upgraded


class ProxyResponse(Response):
    """A ``Response`` read by the proxy, its fields sorted into a ``ResponseFields``
    (``fields``): by ``parse_response_head`` in C for the common whole response, else by the
    ``ResponseFields``' ``add`` as httptools' ``on_header``. ``fields.wire`` holds the fields
    relayed to the client as they go out in the client's response head (``b"\r\nName: value"``
    each; ``has_ct`` when one is ``Content-Type``), ``fields.kept`` the same as pairs;
    ``fields.hop`` holds the ``HOP_BY_HOP`` ones and ``fields.connection``
    the value of ``Connection`` (several joined with ``,``), whose tokens name more hop-by-hop
    fields. ``raw_headers`` is every field (kept, then hop-by-hop)."""

    # no parser yet: the first read goes to parse_response_head (C) unless it is turned off, and a
    # parser is made only for a response it does not take (see read_head)
    parser = None
    head_only = False

    def __init__(self, conn: UpConn, read_timeout: float, head_only: bool = False) -> None:
        self.conn = conn
        self.read_timeout = read_timeout
        if head_only:
            self.head_only = True
        self.pending: list[bytes] = []

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        return self.fields.kept + self.fields.hop

    def _forget_fields(self) -> None:
        self.fields.reset()

    def _sort_fields(self) -> None:
        """Before httptools parses: its on_header sorts each field into ``fields``."""
        fields = self.fields = ResponseFields()
        self.on_header = fields.add  # (before the parser looks its callbacks up)

    def read_head(self) -> None:
        if _parse_head is None or not self.conn.plain:
            self._sort_fields()
            return Response.read_head(self)
        # the request was just sent: wait, read, and parse the usual whole response in C
        try:  # (_recv, inlined)
            data = self.conn.recv(self.read_timeout, True)
        except TimeoutError:  # Expired included
            raise UpstreamTimeout("upstream timed out while reading response") from None
        except OSError as exc:
            raise UpstreamError(f"error while reading response from upstream: {exc}") from None
        if data:
            got = _parse_head(data, self.head_only)
            if got is not None:
                self.received = len(data)
                fields = self.fields = _new(ResponseFields)
                (self.status, self.keep_alive, body, fields.length, fields.lines,
                 fields.hop_lines, fields.connection, fields.redirects, fields.has_ct,
                 fields.framed) = got
                self.length = fields.length
                self.head_done = self.done = True
                self._version = "1.1"
                if body:
                    self.pending = [body]
                return None
            self._sort_fields()
            self._take(data)  # anything else: httptools, from the first byte
        else:
            self._sort_fields()
        # the rest of the head (an EOF is read again there, and reported)
        return self._read_head(False)


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Frame ``pieces`` as a chunked body (ending with the last chunk)."""
    for piece in pieces:
        if piece:
            yield b"%x\r\n%b\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def monotonic() -> float:
    return time.monotonic()
