"""Sans-IO HTTP/1.1 server protocol: bytes in, events out.

``ServerProtocol.feed(data)`` parses what a client sent and returns the events it completes, in
order: a ``RequestHead`` per request, ``Data`` pieces of its body as they arrive, ``END`` when
the request is complete, or a final ``ProtocolError`` (answer its ``status`` and close). No
sockets, no clocks: the worker's socket loop moves bytes, this module decides what they mean.

Parsing is done by llhttp (``httptools.HttpRequestParser``) in strict mode; the callbacks below
add the rules llhttp leaves open (RFC 9112, nginx where the RFC lets us choose):

* framing and Connection: the rules of framing.py (``Content-Length`` plain digits given once,
  never with ``Transfer-Encoding``, which must end in ``chunked``; 400, or 501 for other
  codings). Chunk sizes, chunk extensions, bare CR/LF, obs-fold, space before the colon,
  control bytes and non-token names are rejected by llhttp itself (400).
* request line: HTTP/1.0 and 1.1 (1.x with a higher minor is served as 1.1, as RFC 9112 §2.3 and
  nginx do); HTTP/2.0 and higher → 505 (nginx); HTTP/0.9 and the HTTP/2 preface → 400 (nginx).
  Methods llhttp does not know → 400; ``CONNECT`` and ``TRACE`` → 405 (nginx). The target must
  be origin-form (``/…``), ``*`` with OPTIONS, or absolute-form ``http(s)://authority/…`` (whose
  authority then replaces the Host header, RFC 9112 §3.2.2); a ``#`` fragment → 400.
* Host: required in HTTP/1.1, at most once, and syntactically a host[:port] (400 otherwise).
* limits (``Limits``): request line over ``max_request_line`` → 414; header section over
  ``max_header_size`` or more than ``max_headers`` fields → 431. They are checked while the head
  arrives, so an endless head is cut after at most one read past the limit, never buffered.
* an ``Upgrade`` request that also declares a body → 400 (framing.py).

The common request that is a whole read between requests (no body, nothing pipelined after
it, a method and a Host llhttp and these rules passed before) is parsed in C without llhttp
(``whole``, on ``parse_request`` in edgeworker/_speedups.c): it takes a strict subset of what
llhttp accepts and gives the same head; anything else goes to llhttp (``parse``). The
connection loop calls the two itself (``whole`` answers with the head alone, its ``END``
implied); ``feed`` is both. tests/unit/test_http_fields.py compares both ways.
"""

from __future__ import annotations

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from httptools.parser.errors import HttpParserInvalidMethodError

from .events import END, Data, EndOfMessage, Limits, ProtocolError, RequestHead
from .fields import RequestFields, accel
from .framing import FramingError, check_upgrade, request_chunked, split_tokens
from .framing import keep_alive as _keep_alive

__all__ = [
    "END",
    "Data",
    "EndOfMessage",
    "Limits",
    "ProtocolError",
    "RequestHead",
    "ServerProtocol",
    "split_tokens",
]


class _Reject(Exception):
    """Raised inside a parser callback to stop llhttp; the error is in ``_error``."""


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing after a final request."""


# Connection states.
_IDLE, _HEAD, _BODY, _CLOSED, _UPGRADED, _DEAD = range(6)

_METHODS: dict[bytes, str] = {}  # method bytes → str, filled as llhttp reports them
_GOOD_HOSTS: set[bytes] = set()  # Host values already validated (short ones, bounded)
_new = object.__new__
_REFUSED_METHODS = frozenset(("CONNECT", "TRACE"))  # 405, like nginx

#: the common request that is a whole read, parsed in C without llhttp (``parse_request`` in
#: edgeworker/_speedups.c, on these tables: only methods llhttp has reported, only Host values
#: already validated), or None: llhttp parses every request
_parse_request = None
if accel is not None:
    accel.configure(_METHODS, _REFUSED_METHODS, _GOOD_HOSTS)
    _parse_request = accel.parse_request

# Characters of a reg-name / IPv4 host (RFC 3986 unreserved, pct-encoded, sub-delims).
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;="
_IPV6_CHARS = b"0123456789abcdefABCDEF:."
_DIGITS = b"0123456789"

# Bytes of a chunk-size line, chunk extensions or partial trailer field that may arrive
# without llhttp reporting progress, before the request is refused.
_MAX_CHUNK_STALL_MIN = 4096


def _valid_host(host: bytes) -> bool:
    """host = uri-host [ ":" port ] (RFC 9112 §3.2, RFC 3986 §3.2.2); no ".." (nginx)."""
    if not host:
        return False
    if host[0] == 0x5B:  # "[" IP-literal "]"
        end = host.find(b"]")
        if end < 2 or host[1:end].translate(None, _IPV6_CHARS):
            return False
        rest = host[end + 1 :]
        return not rest or (rest[0] == 0x3A and not rest[1:].translate(None, _DIGITS))
    name, colon, port = host.partition(b":")
    if not name or name.translate(None, _HOST_CHARS) or b".." in name:
        return False
    return not colon or not port.translate(None, _DIGITS)


class ServerProtocol:
    """One client connection's HTTP/1.1 request stream, sans-IO.

    ``feed(data)`` returns the events completed by ``data`` (see the module docstring).
    ``feed(b"")`` reports the peer's end of sending: ``[]`` between requests, else a
    ``ProtocolError(400)``. After a ``ProtocolError``, or after the ``END`` of a request that does
    not keep the connection alive, later input is ignored (``feed`` returns ``[]``).

    After the ``END`` of a request whose head has ``upgrade`` set, parsing stops: call
    ``upgraded()`` to take the bytes that followed it and tunnel the connection; or, to decline
    the upgrade, keep calling ``feed()``: those bytes are parsed as HTTP first.
    """

    __slots__ = (
        "_parser",
        "_state",
        "in_head",
        "_events",
        "_data",
        "_error",
        "_tail",
        "_max_line",
        "_max_url",
        "_max_hsize",
        "_max_headers",
        "_max_stall",
        "_url",
        "_fields",
        "on_header",
        "_head_raw",
        "_began",
        "_mixed",
        "_progress",
        "_stall",
        "_chunked",
        "_keep_alive",
        "_upgrading",
        "_drop_underscores",
        "_id_field",
    )

    def __init__(self, limits: Limits | None = None, id_field: bytes | None = None,
                 underscores: bool = True) -> None:
        """``id_field``: the lower-case name of a request-id field (``X-Request-Id``) whose
        first value each ``RequestHead`` carries as ``request_id``.

        ``underscores=False``: fields whose name holds ``_`` are left out of the head (nginx's
        ``underscores_in_headers off`` with ``ignore_invalid_headers on``): no handler, variable
        or upstream sees them. They still count against the limits.
        """
        if limits is None:
            limits = Limits()
        self._drop_underscores = not underscores
        self._max_line = limits.max_request_line
        # A URL longer than this may make the request line too long (methods llhttp knows have
        # at most 20 characters); the line is then measured exactly.
        self._max_url = limits.max_request_line - 30
        self._max_hsize = limits.max_header_size
        self._max_headers = limits.max_headers
        # Trailer fields do not count as progress: allow a whole trailer section plus a line.
        self._max_stall = limits.max_header_size + _MAX_CHUNK_STALL_MIN
        self._state = _IDLE
        #: True when a request head has started but is not complete (``_state == _HEAD``,
        #: kept beside it: the connection loop reads it before every wait for a request)
        self.in_head = False
        self._events: list = []
        self._data = b""
        self._error: ProtocolError | None = None
        self._tail = b""
        self._url = b""
        # the current head's fields, sorted as llhttp parses them (fields.py): its add method
        # is the parser's on_header callback
        fields = self._fields = RequestFields(id_field)
        self._id_field = id_field
        self.on_header = fields.add
        self._head_raw = self._stall = 0
        self._began = self._mixed = self._progress = self._chunked = self._upgrading = False
        self._keep_alive = True
        parser = HttpRequestParser(self)
        # Versions are checked in on_headers_complete (1.x → 1.1, 2+ → 505); nothing else lenient.
        parser.set_dangerous_leniencies(lenient_version=True)
        self._parser: HttpRequestParser | None = parser

    # ------------------------------------------------------------------ public API

    @property
    def idle(self) -> bool:
        """True when no part of a request is buffered (between requests)."""
        return self._state != _HEAD and self._state != _BODY

    def feed(self, data: bytes) -> list:
        """Parse ``data``; return the events it completes, in order (see the class docstring)."""
        head = self.whole(data)
        if head is not None:
            return [head, END]
        return self.parse(data)

    def whole(self, data: bytes) -> RequestHead | None:
        """The common request that is the whole of ``data``, between requests: one request
        without a body, nothing after it, parsed in C (``parse_request``); its ``END`` is
        implied. None for anything else (and always without the C part): then ``parse(data)``
        gives the events. ``feed`` is ``whole``, then ``parse`` when it gave None."""
        if self._state != _IDLE or _parse_request is None or not data:
            return None
        got = _parse_request(data, self._drop_underscores, self._max_headers, self._max_hsize,
                             self._max_url, self._id_field)
        if got is None:
            return None
        head = _new(RequestHead)
        (head.method, head.target, head.path, head.query, head.version, head.headers,
         head.keep_alive, head.content_length, head.chunked, head.expect_continue,
         head.upgrade, head.host, head.request_id, head.size) = got
        self._chunked = self._upgrading = False
        if not head.keep_alive:
            self._keep_alive = False
            self._close()  # (as after llhttp's last request)
        # (keep-alive: _keep_alive is still True, as every request since was)
        return head

    def parse(self, data: bytes) -> list:
        """``feed`` without its C part: every request is parsed by llhttp."""
        state = self._state
        if state >= _CLOSED:
            if state != _UPGRADED:
                return []
            # The upgrade was declined: the bytes after that request are HTTP after all.
            tail, self._tail = self._tail, b""
            if not self._keep_alive:
                self._close()
                return []
            self._state = _IDLE
            if not data:
                events = self.feed(tail) if tail else []
                return events + self.feed(b"")
            data = tail + data
        elif not data:
            if state == _IDLE:
                self._close()
                return []
            return self._die([], ProtocolError(400, "connection closed in the middle of a request"))

        events = self._events = []
        self._data = data
        self._began = self._mixed = self._progress = False
        try:
            self._parser.feed_data(data)  # type: ignore[union-attr]
        except HttpParserUpgrade as exc:
            self._tail = data[exc.args[0] :]
            self._state = _UPGRADED
            self.in_head = False
            if not self._upgrading:  # not expected (we ask llhttp): parse the rest as HTTP
                tail, self._tail = self._tail, b""
                self._state = _IDLE if self._keep_alive else _CLOSED
                if tail and self._keep_alive:
                    events.extend(self.feed(tail))
            return events
        except HttpParserError as exc:
            if self._state == _CLOSED:  # stopped on purpose after a final request
                self._close()
                return events
            error = self._error
            if error is None:
                error = _llhttp_error(exc)
            return self._die(events, error)

        state = self._state
        if state == _HEAD:
            return self._head_budget(events, len(data))
        if state == _BODY and self._chunked:
            if self._progress:
                self._stall = 0
            else:
                self._stall += len(data)
                if self._stall > self._max_stall:
                    return self._die(events, ProtocolError(400, "chunk framing line too long"))
        return events

    def upgraded(self) -> bytes:
        """After an Upgrade request's ``END``: the bytes that followed its head.

        The protocol is finished afterwards (``feed`` returns ``[]``); the caller tunnels.
        Raises ``RuntimeError`` if no upgrade is pending.
        """
        if self._state != _UPGRADED:
            raise RuntimeError("no upgrade pending")
        tail = self._tail
        self._tail = b""
        self._close()
        return tail

    def close(self) -> None:
        """Forget the parser (breaks its reference cycle); later ``feed`` calls return ``[]``."""
        self._close()

    # ------------------------------------------------------------------ internals

    def _close(self) -> None:
        self._state = _DEAD
        self.in_head = False
        self._parser = None

    def _die(self, events: list, error: ProtocolError) -> list:
        events.append(error)
        self._close()
        return events

    def _fail(self, status: int, reason: str) -> None:
        self._error = ProtocolError(status, reason)
        raise _Reject(reason)

    def _head_budget(self, events: list, fed: int) -> list:
        """A head is still incomplete after a read: bound what it may buffer."""
        if not self._began:
            self._head_raw += fed  # every byte of this read belongs to the head
        elif not self._mixed:
            self._head_raw = fed  # the head began in this read (after optional empty lines)
        else:  # a previous request ended in this read: count what is known of this head
            self._head_raw = len(self._url) + self._fields.size
        # Beside the URL (checked exactly in on_url) a request line holds < 32 bytes.
        if self._head_raw - len(self._url) - 32 > self._max_hsize:
            return self._die(events, ProtocolError(431, "request header too large"))
        if len(self._fields.list) > self._max_headers:
            return self._die(events, ProtocolError(431, "too many request header fields"))
        return events

    def _check_fields(self, fields: RequestFields, what: str) -> None:
        """Exact limits of a complete header (or trailer) section."""
        if len(fields.list) > self._max_headers:
            self._fail(431, f"too many request {what} fields")
        if fields.size > self._max_hsize:  # "name: value\r\n" each
            self._fail(431, f"request {what} too large")

    # ------------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        self._state = _HEAD
        self.in_head = True
        self._began = True
        self._url = b""
        self._fields.reset()

    def on_url(self, url: bytes) -> None:
        url = self._url = self._url + url
        if len(url) > self._max_url:
            method = self._parser.get_method()  # type: ignore[union-attr]
            if len(method) + len(url) + 10 > self._max_line:
                self._fail(414, "request line too long")

    # on_header is the RequestFields' add (set in __init__). It only collects: limits are
    # checked per read in feed() and exactly once the section is complete (cheaper than per
    # field, and still cut within one read of crossing a limit). Fields after a chunked body
    # (trailers) land in a fresh list and are dropped (nginx).

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS.setdefault(raw_method, raw_method.decode("ascii"))
        # The version: read it straight from the bytes when this request line starts the
        # current read (llhttp has validated that line); get_http_version() costs ~4x more.
        data = self._data
        at = len(raw_method) + len(self._url) + 1
        if self._began and not self._mixed and data[0] > 32:
            # the whole head is in this read, from its first byte: its size is where the
            # blank line ends (llhttp validated the head: bare LF and obs-fold were refused)
            size = data.find(b"\r\n\r\n") + 4
            if data[at : at + 11] == b" HTTP/1.1\r\n":
                version = "1.1"
            else:
                version = self._version(parser)
        else:
            size = 0  # counted below, from the fields
            version = self._version(parser)
        fields = self._fields
        headers = fields.list
        if len(headers) > self._max_headers or fields.size > self._max_hsize:
            self._check_fields(fields, "header")  # 431
        # (after the limits, which a head read in pieces meets before its end: the same status
        # however the head arrives)
        if method in _REFUSED_METHODS:
            self._fail(405, f"{method} is not allowed")

        # The fields that matter to framing and routing (sorted by RequestFields.add).
        if fields.cl_error is not None:
            self._fail(400, fields.cl_error)
        host = fields.host
        nhost = fields.nhost

        # Request target.
        target = self._url
        absolute = None
        if target[:1] == b"/":
            if 63 in target:  # "?" (int tests are much faster than b"?" in target)
                path, _, query = target.partition(b"?")
            else:
                path = target
                query = b""
            if 35 in target:  # "#"
                self._fail(400, "fragment in request target")
        elif target == b"*":
            if method != "OPTIONS":
                self._fail(400, "asterisk-form target is only for OPTIONS")
            path = target
            query = b""
        else:
            absolute, path, query = self._absolute_form(target)

        # Host: required in HTTP/1.1 (even with an absolute-form target, like nginx), once.
        if nhost == 1:
            if host not in _GOOD_HOSTS:
                _check_host(self, host)
        elif nhost == 0:
            if version == "1.1":
                self._fail(400, "missing Host header")
        else:
            self._fail(400, "more than one Host header")
        if absolute is not None:
            host = absolute  # the target's authority replaces Host (RFC 9112 §3.2.2)

        # Framing and Connection (framing.py).
        cl = fields.cl
        try:
            chunked = request_chunked(version, cl, fields.te, fields.te_ows)
        except FramingError as exc:
            self._fail(exc.status, exc.reason)
        self._chunked = chunked
        keep_alive = _keep_alive(fields.conn, version)
        if keep_alive and not parser.should_keep_alive():
            # llhttp will refuse anything after this request (it reads Proxy-Connection as
            # Connection): close after the response instead of answering the next one with 400
            keep_alive = False
        self._keep_alive = keep_alive

        upgrade = fields.upgrade
        if upgrade is not None:
            if parser.should_upgrade():
                try:
                    check_upgrade(chunked, cl)
                except FramingError as exc:
                    self._fail(exc.status, exc.reason)
            else:
                upgrade = None
        self._upgrading = upgrade is not None

        if size == 0:  # request line, fields (OWS not counted), blank line
            size = len(raw_method) + len(target) + 14 + fields.size
        if fields.underscore and self._drop_underscores:
            headers = [field for field in headers if 95 not in field[0]]
        head = _new(RequestHead)
        head.method = method
        head.target = target
        head.path = path
        head.query = query
        head.version = version
        head.headers = headers
        head.keep_alive = keep_alive
        head.content_length = cl
        head.chunked = chunked
        head.expect_continue = fields.expect and version == "1.1"
        head.upgrade = upgrade
        head.host = host
        head.request_id = fields.rid
        head.size = size + cl if cl else size
        self._events.append(head)
        self._state = _BODY
        self.in_head = False
        if chunked:  # trailer fields get their own list, count and size budget
            self._stall = 0
            fields.reset()

    def _version(self, parser: HttpRequestParser) -> str:
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            version = self._odd_version(version)
        return version

    def _odd_version(self, version: str) -> str:
        """A version other than 1.0/1.1: 1.x → "1.1"; 0.x → 400; 2 and above → 505."""
        major = version.partition(".")[0]
        if major == "1":
            return "1.1"  # HTTP/1.x, x > 1: served as 1.1 (RFC 9112 §2.3, nginx)
        if major == "0":
            self._fail(400, "HTTP/0.9 is not supported")
        self._fail(505, f"HTTP/{version} is not supported")
        raise AssertionError  # unreachable

    def _absolute_form(self, target: bytes) -> tuple[bytes, bytes, bytes]:
        """Split ``http(s)://authority/path?query``; the authority must be a valid host."""
        lowered = target[:8].lower()
        if lowered.startswith(b"http://"):
            rest = target[7:]
        elif lowered.startswith(b"https://"):
            rest = target[8:]
        else:
            self._fail(400, "invalid request target")
        if 35 in rest:  # "#"
            self._fail(400, "fragment in request target")
        end = len(rest)
        for sep in (b"/", b"?"):
            i = rest.find(sep)
            if 0 <= i < end:
                end = i
        authority = rest[:end]
        if b"@" in authority or not _valid_host(authority):
            self._fail(400, "invalid authority in request target")
        path = rest[end:]
        query = b""
        if 63 in path:
            path, _, query = path.partition(b"?")
        return authority, path or b"/", query

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._events.append(Data(body))

    def on_chunk_header(self) -> None:
        self._progress = True

    def on_chunk_complete(self) -> None:
        self._progress = True

    def on_message_complete(self) -> None:
        if self._chunked and self._fields.list:
            self._check_fields(self._fields, "trailer section")
        self._events.append(END)
        self._mixed = True
        if self._keep_alive:
            self._state = _IDLE
        else:
            self._state = _CLOSED
            if not self._upgrading:
                raise _Stop("final request")


def _check_host(protocol: ServerProtocol, host: bytes | None) -> None:
    """Refuse (400) a Host value that is not host[:port]; remember short valid ones."""
    if host is None or not _valid_host(host):
        protocol._fail(400, "invalid Host header")
    elif len(host) <= 64 and len(_GOOD_HOSTS) < 4096:
        _GOOD_HOSTS.add(host)


def _llhttp_error(exc: HttpParserError) -> ProtocolError:
    """Map an llhttp error to the answer (400 unless the request line says otherwise)."""
    if isinstance(exc, HttpParserInvalidMethodError):
        return ProtocolError(400, "invalid method")
    reason = str(exc) or "malformed request"
    if "PRI" in reason:  # "Pause on PRI/Upgrade": the HTTP/2 connection preface
        return ProtocolError(400, "HTTP/2 connection preface on an HTTP/1.1 port")
    return ProtocolError(400, reason)
