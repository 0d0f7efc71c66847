"""The per-connection loop of a worker: bytes in and out of one socket, nothing else.

``Connection.serve()`` runs in its own greenlet. It feeds what it reads into the sans-IO
``ServerProtocol``, hands each request head to the ``App`` (phases.py), and writes what the
app produces. Every timeout of the ``[http]`` section is enforced here:

- ``keepalive_timeout``: an idle keep-alive connection is closed silently;
- ``client_header_timeout``: a head not complete in time gets 408 and close;
- ``client_body_timeout``: between two reads of the body (408 and close);
- ``send_timeout``: between two writes to the client (the connection is dropped).
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Iterator
from time import time as _time
from typing import TYPE_CHECKING, Any

from gevent import getcurrent
from gevent import sleep as _gsleep

from .errors import BodyError, ClientGone, Drain
from .http.fields import accel as _accel
from .http.framing import NO_BODY_STATUS as _NO_BODY_STATUS
from .http.protocol import END, Data, ProtocolError, RequestHead, ServerProtocol
from .http.responses import STATUS_REASONS, chunk, error_response, http_date, status_line
from .io import transport
from .request import Request
from .tls.connection import TLSClient
from .tls.connection import accept as tls_accept

if TYPE_CHECKING:  # pragma: no cover
    from .phases import App

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: what an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAMING_HEADERS = frozenset(
    ("content-length", "transfer-encoding", "connection", "date", "server")
)
_FRAMING_RAW = frozenset(name.encode() for name in _FRAMING_HEADERS)
# nginx adds add_header values only to these statuses (unless "always")
ADD_HEADER_STATUS = frozenset((200, 201, 204, 206, 301, 302, 303, 304, 307, 308))
# an unread request body up to this size is read and dropped to keep the connection;
# a larger one closes the connection instead
_DISCARD_LIMIT = 1 << 20
# how long an idle keep-alive connection of an exiting worker waits for a request in flight
DRAIN_GRACE = 1.0


_KEEP_ALIVE = b"\r\nConnection: keep-alive\r\n\r\n"
_CLOSE = b"\r\nConnection: close\r\n\r\n"
_date_line = [-1, b""]
_STATUS_LINES = {code: status_line(code, "1.1") for code in STATUS_REASONS}

#: the common response head in C (``fast_response_head`` in edgeworker/_speedups.c, given
#: the values _head_bytes reads and these same lines), or None: then _head_bytes' Python
#: builds every head
_fast_response_head = _accel.fast_response_head if _accel is not None else None
_NO_FIELDS = (b"", False)  # the fields block of a response without fields of its own


def _server_date() -> bytes:
    """``Server`` and ``Date`` header lines, formatted once per second."""
    now = int(_time())
    if now != _date_line[0]:
        _date_line[1] = b"Server: edgeworker\r\nDate: " + http_date().encode()
        _date_line[0] = now
    return _date_line[1]


def _yield() -> None:
    _gsleep(0)


class Connection:
    """One accepted client connection."""

    __slots__ = (
        "sock",
        "app",
        "http",
        "proto",
        "events",
        "remote_addr",
        "remote_port",
        "server_addr",
        "server_port",
        "listen_key",
        "names",
        "route",
        "bin_addr",
        "requests",
        "busy",
        "closing",
        "io",
        "_recv",
        "_send",
        "greenlet",
        "tls",
        "scheme",
        "_contexts",
        "h2",
    )

    def __init__(
        self,
        sock: socket.socket,
        addr: Any,
        listen_key: tuple[str, int],
        app: App,
        tls_contexts: Any = None,
        h2: Any = None,
    ):
        self.sock = sock
        self.app = app
        self.http = app.http
        self.proto = ServerProtocol(app.limits, app.rid_field, app.underscores)
        self.events: deque = deque()
        if isinstance(addr, tuple):
            self.remote_addr = addr[0]
            self.remote_port = addr[1]
        else:  # unix socket
            self.remote_addr = "unix:"
            self.remote_port = 0
        local = sock.getsockname()
        if isinstance(local, tuple):
            self.server_addr, self.server_port = local[0], local[1]
        else:
            self.server_addr, self.server_port = "unix:", 0
        self.listen_key = listen_key
        self.names: Any = None  # the servers of the address it arrived on (App.handle)
        self.route: Any = None  # its one server, once App.handle found nothing can change it
        self.bin_addr: bytes | None = None
        self.requests = 0
        self.busy = False  # a request is being processed
        self.closing = False  # set by a draining worker: answer with Connection: close
        # the socket without timeout: reads and writes to the non-blocking socket underneath,
        # waits on its own watchers, deadlines on the worker's watchdog (edgeworker.io);
        # a client resetting the connection reads as its end
        self.io = io = transport(sock, reset_is_eof=True)
        #: ``_recv(timeout, wait_first=False)``: what the client sent (b"" at its end), within
        #: ``timeout`` (``TimeoutError``); ``wait_first`` goes to the hub even when data is
        #: waiting (the turn-taking after a response, see ``serve``)
        self._recv = io.read
        self._send = io.send  # what the socket takes now (BlockingIOError: nothing)
        self.greenlet: Any = None
        #: the TLS contexts (``edgeworker.tls.context.Contexts``), on a TLS listener (the
        #: handshake is the first thing ``serve`` does); then ``tls`` is the connection's
        #: ``edgeworker.tls.connection.TLSInfo``
        self._contexts = tls_contexts
        self.tls: Any = None
        self.scheme = "http"
        #: on a listener with ``http2``: ``h2(connection, first bytes)`` serves the connection
        #: as HTTP/2 (``edgeworker.server_h2.serve``), when ALPN chose ``h2`` or the client
        #: began with the HTTP/2 preface (cleartext, prior knowledge); else None
        self.h2 = h2

    @property
    def binary_remote_addr(self) -> bytes:
        if self.bin_addr is None:
            addr = self.remote_addr
            try:
                if ":" in addr:
                    self.bin_addr = socket.inet_pton(socket.AF_INET6, addr)
                else:
                    self.bin_addr = socket.inet_aton(addr)
            except OSError:
                self.bin_addr = addr.encode()
        return self.bin_addr

    # ------------------------------------------------------------------ reading
    def _next_body_event(self):
        """Next ``Data`` or ``END`` of the current request (reads with client_body_timeout).

        Raises ``BodyError(400/408)`` when the body is broken or late, ``ClientGone`` when the
        client went away.
        """
        events = self.events
        while not events:
            try:
                data = self._recv(self.http.client_body_timeout)
            except TimeoutError:
                raise BodyError(408) from None
            except OSError:
                raise ClientGone() from None
            events.extend(self.proto.feed(data))
            if not data and not events:
                raise ClientGone()
        ev = events.popleft()
        if ev.__class__ is ProtocolError:
            raise BodyError(ev.status)
        return ev

    def read_body(self, req: Request) -> bytes:
        """Read the whole body of ``req`` (called through ``req.read_body()``)."""
        return b"".join(self.iter_body(req))

    def iter_body(self, req: Request) -> Iterator[bytes]:
        """The body of ``req`` piece by piece, as it arrives (for streaming it upstream).

        Sends ``100 Continue`` when the client asked for it; a body over the location's
        ``client_max_body_size`` ends the request with 413, a late body piece with 408
        (``client_body_timeout``), broken chunked framing with 400 — each by raising
        ``RequestExit`` after preparing that response. Once iterated to its end, the body is
        consumed (a second call yields nothing).
        """
        head = req.head
        limit = req.location.client_max_body_size if req.location is not None else 0
        if head.content_length is not None and limit and head.content_length > limit:
            req.keep_alive = False
            req.exit(413)
        if head.content_length is None and not head.chunked:
            return
        if head.expect_continue and not req.headers_sent:
            self._sendall(_CONTINUE)
            head.expect_continue = False
        total = 0
        try:
            while True:
                ev = self._next_body_event()
                if ev.__class__ is not Data:
                    break
                total += len(ev.data)
                if limit and total > limit:
                    req.keep_alive = False
                    req.exit(413)
                yield ev.data
        except BodyError as err:
            req.keep_alive = False
            req.exit(err.status)
        head.content_length = None
        head.chunked = False  # the body is consumed

    def detach(self, req: Request) -> tuple[socket.socket, bytes]:
        """Hand the raw socket over (after a ``101 Switching Protocols`` was relayed), with
        the bytes the client already sent past the request head. The connection loop then
        ends without touching the socket again; the caller closes it."""
        req.keep_alive = False
        self.closing = True
        leftover = self.proto.upgraded()
        self.sock = None
        return self.io.detach(), leftover

    def _discard_body(self, req: Request) -> bool:
        """Drop the unread body of ``req``; False if the connection must close instead."""
        head = req.head
        if head.content_length is None and not head.chunked:
            return True
        if head.expect_continue:
            return False  # the client waits for 100-continue: it never sends the body
        if head.content_length is not None and head.content_length > _DISCARD_LIMIT:
            return False
        total = 0
        try:
            while True:
                ev = self._next_body_event()
                if ev.__class__ is Data:
                    total += len(ev.data)
                    if total > _DISCARD_LIMIT:
                        return False
                else:
                    return True
        except (BodyError, ClientGone):
            return False

    # ------------------------------------------------------------------ writing
    def _sendall(self, data: bytes) -> None:
        """Send all of ``data``; each wait for the client to read is bounded by send_timeout
        (nginx: between two successive writes). A client that is gone raises ClientGone."""
        # a callable held in a slot is looked up first, then called: ``self._send(data)``
        # would take the generic (unspecialized) method lookup, hundreds of instructions
        send = self._send
        try:
            sent = send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientGone() from exc
        if sent == len(data):
            return
        try:
            self.io.send_rest(data, sent, self.http.send_timeout)
        except OSError as exc:  # Expired included (a TimeoutError)
            raise ClientGone() from exc

    def send_error(self, status: int) -> None:
        """Answer a protocol-level error (before any request exists) and let the caller close."""
        try:
            self._sendall(error_response(status, keep_alive=False))
        except ClientGone:
            pass

    def _head_bytes(self, req: Request, length: int | None) -> bytes:
        """Build the response head. ``length`` None means a streamed body."""
        if _fast_response_head is not None and length is not None and not self.closing:
            loc = req.location
            if loc is not None and not loc.add_header and req.content_type is None:
                # the common head in C (None: anything unusual, built below)
                rh = req.resp_fields
                head = _fast_response_head(
                    req.status,
                    length,
                    req.keep_alive,
                    req.header_lines,
                    _NO_FIELDS if rh is None else rh._wire,
                    loc.content_type_line,
                    _STATUS_LINES,
                    _date_line,
                    _KEEP_ALIVE,
                    _CLOSE,
                )
                if head is not None:
                    return head
        status = req.status
        loc = req.location
        keep = req.keep_alive and not self.closing
        now = int(_time())
        date = _date_line[1] if now == _date_line[0] else _server_date()
        line = _STATUS_LINES.get(status)
        parts = [line if line is not None else status_line(status, "1.1"), date]
        if req.header_lines:  # prepared: X-Request-Id, limit headers (Request.add_header_lines)
            parts.append(req.header_lines)
        rh = req.resp_fields
        has_ct = False
        if rh is not None:
            wire = rh._wire
            raw = rh._raw if rh._items is None else None
            if wire is not None:  # a proxied response's fields, prepared (ProxyResponse)
                parts.append(wire[0])
                has_ct = wire[1]
            elif raw is not None:  # still as parsed (a proxied response): stays bytes
                for field in raw:
                    lname = field[0].lower()
                    if lname in _FRAMING_RAW:
                        continue  # framing is ours, never the upstream's
                    if lname == b"content-type":
                        has_ct = True
                    parts.append(b"\r\n%b: %b" % field)
            else:
                for lname, name, value in rh._fields():  # (lower-cased name, name, value)
                    if lname in _FRAMING_HEADERS:
                        continue  # framing is ours, never the handler's
                    if lname == "content-type":
                        has_ct = True
                    parts.append(f"\r\n{name}: {value}".encode("latin-1"))
        if loc is not None and loc.add_header and status in ADD_HEADER_STATUS:
            for name, value in loc.add_header:
                value = req.var.expand(value)
                # a variable may carry decoded CR/LF/NUL ($arg_x=%0d%0a...): such a value is
                # dropped, never sent (response splitting); outside latin-1 becomes "?"
                if "\r" in value or "\n" in value or "\x00" in value:
                    continue
                parts.append(b"\r\n" + name + b": " + value.encode("latin-1", "replace"))
        no_body = status in _NO_BODY_STATUS or status < 200
        if not has_ct and not no_body:
            ct = req.content_type
            if ct is not None:
                parts.append(b"\r\nContent-Type: " + ct.encode("latin-1"))
            elif loc is not None:
                parts.append(loc.content_type_line)
            else:
                parts.append(b"\r\nContent-Type: text/plain")
        if no_body:
            pass
        elif length is not None:
            parts.append(b"\r\nContent-Length: %d" % length)
        elif req.http_version == "1.1":
            parts.append(b"\r\nTransfer-Encoding: chunked")
        else:
            keep = False  # HTTP/1.0 streamed body: delimited by close
        req.keep_alive = keep
        parts.append(_KEEP_ALIVE if keep else _CLOSE)
        return b"".join(parts)

    def send_response(self, req: Request, body: bytes) -> None:
        """Send a whole response (head + body) in one write (two for a big body)."""
        status = req.status
        if status < 200 or status in _NO_BODY_STATUS:
            body = b""
        n = len(body)
        head = self._head_bytes(req, n)
        req.headers_sent = True
        if req.method == "HEAD":
            self._sendall(head)
        elif n < 65536:
            self._sendall(head + body)
            req.body_bytes_sent = n
        else:
            self._sendall(head)
            self._sendall(body)
            req.body_bytes_sent = n

    def send_head(self, req: Request, length: int, first: bytes = b"") -> None:
        """Send the head with ``Content-Length: length`` and ``first`` (the first body bytes)
        in one write, for a body of known length sent afterwards with ``send_body``."""
        head = self._head_bytes(req, length)
        req.headers_sent = True
        if first and req.method != "HEAD":
            self._sendall(head + first)
            req.body_bytes_sent += len(first)
        else:
            self._sendall(head)

    def send_body(self, req: Request, data: bytes) -> None:
        """Raw body bytes after ``send_head`` (nothing for HEAD or after an exit)."""
        if data and req.method != "HEAD" and not req.ended:
            self._sendall(data)
            req.body_bytes_sent += len(data)

    def send_raw(self, data: bytes) -> None:
        """Bytes to the client as they are (a relayed ``101`` head); ClientGone if gone."""
        self._sendall(data)

    def sendfile(self, req: Request, fd: int, offset: int, count: int) -> None:
        """Zero-copy body from file ``fd`` after ``send_head`` (``os.sendfile``), waiting
        cooperatively (at most send_timeout each time) while the socket buffer is full."""
        if req.method == "HEAD" or req.ended:
            return
        sendfile = self.io.sendfile
        timeout = self.http.send_timeout
        while count > 0:
            try:
                sent = sendfile(fd, offset, min(count, 1 << 30), timeout)
            except OSError as exc:  # Expired included (a TimeoutError)
                raise ClientGone() from exc
            if sent == 0:
                break  # the file shrank under us
            offset += sent
            count -= sent
            req.body_bytes_sent += sent

    def stream_head(self, req: Request) -> bytes:
        """The head of a streamed response, built now and marked sent; the caller passes it
        to ``stream`` with the first body bytes."""
        head = self._head_bytes(req, None)
        req.headers_sent = True
        return head

    def stream(self, req: Request, data: bytes, eof: bool, head: bytes | None = None) -> None:
        """Send part of a streamed response (chunked for HTTP/1.1): the head first when not
        yet sent (``head``, when ``stream_head`` built it already)."""
        if req.ended:
            return
        out = []
        if head is not None:
            out.append(head)
        elif not req.headers_sent:
            out.append(self._head_bytes(req, None))
            req.headers_sent = True
        chunked = req.http_version == "1.1" and req.status not in _NO_BODY_STATUS
        head_only = req.method == "HEAD" or req.status in _NO_BODY_STATUS
        if data and not head_only:
            out.append(chunk(data) if chunked else data)
            req.body_bytes_sent += len(data)
        if eof:
            req.ended = True
            if chunked and not head_only:
                out.append(b"0\r\n\r\n")
        if out:
            self._sendall(b"".join(out))

    # ------------------------------------------------------------------ main loop
    def serve(self) -> None:
        """Serve requests until the connection closes; never raises."""
        app = self.app
        http = self.http
        events = self.events
        proto = self.proto
        keepalive_requests = http.keepalive_requests
        self.greenlet = getcurrent()
        # turn: a response was just sent; the other connections get their turn before this
        # one reads on (see the end of the loop)
        turn = False
        try:
            if self._contexts is not None and not self._start_tls():
                return
            if self.h2 is not None and self._to_h2():
                return
            recv = self._recv  # (after the handshake, which may replace it; see _sendall)
            keepalive_timeout = http.keepalive_timeout
            while True:
                # the next request head (returns when the connection should close)
                deadline = None
                while True:
                    if events:
                        head = events.popleft()
                        if head is END:  # the end of the previous request
                            continue
                        cls = head.__class__
                        if cls is RequestHead:
                            if turn:  # a pipelined request: the others go first all the same
                                _yield()
                            break
                        if cls is ProtocolError:
                            self.send_error(head.status)
                            return
                        continue  # (Data: the unread body of the previous request)
                    if proto.in_head:
                        now = time.monotonic()
                        if deadline is None:
                            deadline = now + http.client_header_timeout
                        timeout = deadline - now
                        if timeout <= 0:
                            self.send_error(408)
                            return
                    else:
                        timeout = keepalive_timeout if self.requests else http.client_header_timeout
                        if self.closing:
                            # the worker is exiting: a request already on its way is still
                            # answered (with Connection: close); a quiet connection is closed
                            timeout = min(timeout, DRAIN_GRACE)
                    try:
                        data = recv(timeout, turn)
                        turn = False
                    except Drain:
                        # the worker is exiting: serve what is on its way, then close
                        self.closing = True
                        continue
                    except TimeoutError:
                        if proto.in_head:
                            self.send_error(408)
                        return
                    except OSError:
                        return
                    # (events is empty here) the usual read: one whole request without a body
                    head = proto.whole(data)
                    if head is not None:
                        break
                    events.extend(proto.parse(data))
                    if not data and not events:
                        return
                n = self.requests = self.requests + 1
                self.busy = True
                if n >= keepalive_requests:
                    head.keep_alive = False
                req = app.handle(self, head)
                if req is None or not req.keep_alive or self.closing:
                    return
                if (head.content_length is not None or head.chunked) and not self._discard_body(
                    req
                ):
                    return  # an unread body that cannot be skipped: close instead
                self.busy = False
                # fairness: a client that sends its next request fast would keep this
                # greenlet going (its recv never waits) and starve the other connections;
                # after each response the others take their turn, as in nginx's event loop:
                # the next read waits on the hub first (which also lets the usual case, no
                # request there yet, skip a failing recv and a separate yield)
                turn = True
        except ClientGone:
            return
        except Exception:  # a bug of ours: never take the worker down
            app.log.exception("unexpected error on connection from %s", self.remote_addr)
        finally:
            self.close()

    def _to_h2(self) -> bool:
        """On a listener with ``http2``: serve the connection as HTTP/2 when ALPN chose ``h2``
        or (cleartext) the client sent the connection preface first; True when it did (the
        connection is then done). Otherwise what was read is HTTP/1.x, parsed into ``events``."""
        if self.tls is not None:
            if self.tls.alpn_protocol() != "h2":
                return False
            self.h2(self, b"")
            return True
        data = b""
        deadline = time.monotonic() + self.http.client_header_timeout
        while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
            try:
                more = self._recv(max(0.0, deadline - time.monotonic()))
            except Drain:
                return True  # the worker is exiting: nothing was asked yet
            except OSError:  # TimeoutError included: nothing complete in time, closed silently
                return True
            if not more:
                return True
            data += more
        if data.startswith(H2_PREFACE):
            self.h2(self, data)
            return True
        self.events.extend(self.proto.feed(data))
        return False

    def _start_tls(self) -> bool:
        """The TLS handshake, first thing on a TLS listener (``edgeworker.tls.accept``);
        False when the connection is to close."""
        app = self.app
        names = self.names = app.router.table_for((self.server_addr, self.server_port))
        try:
            found = tls_accept(
                self.io,
                names,
                self._contexts,
                app.log,
                self.remote_addr,
                self.http.send_timeout,
                app.certificate_by,
                TLSClient(self.remote_addr, self.remote_port, self.server_addr, self.server_port)
                if app.certificate_by
                else None,
            )
        except Drain:  # the worker is exiting: a connection still in its handshake closes
            return False
        if found is None:
            return False
        self.io, self.tls = found
        self._recv = self.io.read
        self._send = self.io.send
        self.scheme = "https"
        return True

    def close(self) -> None:
        self.proto.close()  # breaks the parser <-> protocol reference cycle
        self.io.close()  # (not a detached socket: the upgrade tunnel's now)


#: the HTTP/1.1 response head of a request (``Connection._head_bytes``), for the HTTP/2
#: streams, whose fields are these same ones (``conn``: anything with ``closing``)
response_head = Connection._head_bytes

__all__ = ["ADD_HEADER_STATUS", "H2_PREFACE", "Connection", "response_head"]
