"""The ``req`` object every handler receives: request data, response state, output API.

One ``Request`` lives for one HTTP request and is shared by all its phases. Attributes that
cost something to build (``args``, ``headers``, ``var``, ``ctx``, ``id``) are built on first
use, so a handler that does not touch them does not pay for them.
"""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import time
from binascii import hexlify
from collections.abc import Iterator
from operator import attrgetter
from time import time as _time
from typing import TYPE_CHECKING, Any, Protocol

from .errors import Jump, PhaseError, RequestExit
from .http.fields import field_pairs
from .http.headers import Headers
from .uri import MultiDict, expand, normalize_path, parse_args, parse_cookies, plain_paths

if TYPE_CHECKING:  # pragma: no cover
    from .http.channel import Channel

# phases, in order; ``phase`` on a request is one of these strings
REWRITE, ACCESS, CONTENT, HEADER_FILTER, BODY_FILTER, LOG = (
    "rewrite",
    "access",
    "content",
    "header_filter",
    "body_filter",
    "log",
)
_BODY_PHASES = (REWRITE, ACCESS, CONTENT)
_EXIT_PHASES = (REWRITE, ACCESS, CONTENT, HEADER_FILTER)
_PIECE = 65536  # a compressed file body is read in pieces of this size
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: An incoming request id is honoured when it is 1..128 visible ASCII characters.
_GOOD_ID = re.compile(rb"[\x21-\x7e]{1,128}").fullmatch
# request ids: 128 random bits (as nginx's $request_id, unique rather than secret), from a
# generator of our own, reseeded in every forked worker, that handler code cannot reseed;
# drawn 64 at a time (one big number in hex, cut into ids by one struct unpack)
_rng = random.Random()
_randbits = _rng.getrandbits
_ID_BATCH = 64
_ids: list[bytes] = []  # as bytes: what the header line and the request field need
_split_ids = struct.Struct("32s" * _ID_BATCH).unpack


def _after_fork() -> None:
    _rng.seed()
    _ids.clear()  # never hand out ids the parent (or a sibling) also has


os.register_at_fork(after_in_child=_after_fork)


def _next_id() -> bytes:
    """A fresh request id as bytes (32 lower-case hex digits)."""
    if not _ids:
        _ids.extend(_split_ids(hexlify(_randbits(128 * _ID_BATCH).to_bytes(16 * _ID_BATCH))))
    return _ids.pop()


def new_request_id() -> str:
    """A fresh ``$request_id``: 32 lower-case hex characters."""
    return _next_id().decode("ascii")


def _parse_lines(lines: bytes) -> list[tuple[str, str, str]]:
    """``b"\\r\\nName: value…"`` → ``[(lower-cased name, name, value), …]``."""
    out = []
    for name, value in field_pairs(lines):
        n = name.decode("latin-1")
        out.append((n.lower(), n, value.decode("latin-1")))
    return out


class Pipeline(Protocol):
    """What a request needs from the pipeline that runs it (``phases.App``)."""

    #: the request-id field: lower-case name and the start of its response line (or None)
    rid_field: bytes | None
    rid_prefix: bytes | None

    def header_filter(self, req: Request) -> bytes | None:
        """Run the location's header_filter handlers; a new body if one exited, else None."""

    def body_filter(self, req: Request, data: bytes, eof: bool) -> bytes:
        """Run the location's body_filter handlers over ``data``."""


class Request:
    """One HTTP request (the ``req`` argument of every handler).

    Besides the handler API, a request offers what edgeworker's own features use: the parsed
    ``head`` (``RequestHead``), the raw state of the response (``resp_fields``,
    ``header_lines``, ``output``, ``ended``), what the proxy tried (``upstream``) and the output
    methods that run the output filters and hand the bytes to the connection (``respond``,
    ``send_head``, ``send_body``, ``sendfile``, ``stream``, ``iter_body``, ``send_raw``,
    ``detach``).
    """

    __slots__ = (
        "_conn",
        "_app",
        "head",
        "method",
        "uri",
        "start_time",
        "phase",
        "status",
        "location",
        "captures",
        "_args",
        "parsed_headers",
        "resp_fields",
        "_var",
        "own_vars",
        "_ctx",
        "_id",
        "_cookies",
        "body",
        "output",
        "headers_sent",
        "ended",
        "exit_body",
        "content_type",
        "body_bytes_sent",
        "keep_alive",
        "server_route",
        "header_lines",
        "encoder",
        "upstream",
    )

    def __init__(self, conn: Channel, head: Any, app: Pipeline) -> None:
        self._conn = conn
        self._app = app
        #: the parsed request head (``edgeworker.http.protocol.RequestHead``)
        self.head = head
        self.method: str = head.method
        uri = plain_paths.get(head.path)  # (a path seen before: normalize_path's answer)
        self.uri: str = uri if uri is not None else normalize_path(head.path)  # BadURI: 400
        self.start_time: float = _time()
        self.phase = REWRITE
        self.status = 200
        self.location: Any = None  # the matched location (phases.LocationRuntime)
        self.captures: tuple[str, ...] = ()
        self._args: MultiDict | None = None
        #: the request ``Headers`` once ``headers`` built them; None while the fields are
        #: still only as parsed (``head.headers``, bytes pairs)
        self.parsed_headers: Headers | None = None
        #: the response ``Headers`` set so far, None while none were (see ``resp_headers``)
        self.resp_fields: Headers | None = None
        self._var: Vars | None = None
        #: variables set by handlers and the server (shared by every ``Vars`` of the request)
        self.own_vars: dict[str, str] | None = None
        self._ctx: dict | None = None
        self._cookies: dict[str, str] | None = None
        #: the request body once ``read_body()`` read it, else None
        self.body: bytes | None = None
        #: the response body printed so far (``print``/``say``), not yet sent, or None
        self.output: list[bytes] | None = None
        self.headers_sent = False
        #: the response is complete: later output calls send nothing
        self.ended = False
        self.exit_body: bytes | None = None
        self.content_type: str | None = None
        self.body_bytes_sent = 0
        self.keep_alive: bool = head.keep_alive
        self.server_route: Any = None
        #: the compressor of a compressed streamed body (``feed``/``end``), else None
        self.encoder: Any = None
        #: what ``proxy_pass`` tried, one entry per attempt: (addresses, statuses, seconds),
        #: filled as it goes; ``$upstream_addr``, ``$upstream_status`` and
        #: ``$upstream_response_time`` are made from it when read. None: not proxied
        self.upstream: tuple[list[str], list[int], list[float]] | None = None
        field = app.rid_field
        if field is None:
            self._id = None
            self.header_lines = b""
            return
        # X-Request-Id: honoured from the request (the protocol found its first value), else a
        # fresh id also set on the request, so handlers and the upstream see it (the bytes it
        # adds are not counted as received: see RequestHead.size); sent back in the response
        value = head.request_id
        if value is not None and _GOOD_ID(value):
            idb = value
        else:
            idb = _ids.pop() if _ids else _next_id()
            raw = head.headers
            if value is None:
                raw.append((field, idb))
            else:
                for i, pair in enumerate(raw):
                    if pair[0] == field:
                        raw[i] = (field, idb)
                        break
        #: the request id; bytes (visible ASCII) until ``id`` first reads it as str
        self._id = idb
        #: response header lines edgeworker prepared (``b"\\r\\nName: value"`` each: the
        #: request id, limit headers), sent as they are unless a handler takes resp_headers
        self.header_lines = app.rid_prefix + idb

    def reset_resp_headers(self) -> None:
        """Drop every response header set so far except ``X-Request-Id`` (the configured
        ``request_id_header``), which goes out with every response."""
        self.resp_fields = None
        prefix = self._app.rid_prefix
        self.header_lines = prefix + self.id.encode() if prefix is not None else b""

    # ----------------------------------------------------------------- request data
    @property
    def args(self) -> MultiDict:
        """Query arguments (multi-dict): ``args.get(name)``, ``args.getall(name)``."""
        if self._args is None:
            self._args = parse_args(self.query_string)
        return self._args

    @property
    def headers(self) -> Headers:
        """Request headers, case-insensitive multi-dict; writable (what the upstream sees)."""
        if self.parsed_headers is None:
            self.parsed_headers = Headers.from_raw(self.head.headers)
        return self.parsed_headers

    @property
    def host(self) -> str:
        """Host from the request line or ``Host`` header (lower-case, without port), else the
        server address — nginx's ``$host``."""
        raw = self.head.host
        if raw:
            host = raw.decode("latin-1").lower()
            if host.startswith("["):
                end = host.find("]")
                return host[: end + 1] if end > 0 else host
            return host.rsplit(":", 1)[0] if ":" in host else host
        return self._conn.server_addr

    #: the connection's addresses (``$remote_addr``, ``$remote_port``, ``$server_addr``,
    #: ``$server_port``)
    remote_addr = property(attrgetter("_conn.remote_addr"))
    remote_port = property(attrgetter("_conn.remote_port"))
    server_addr = property(attrgetter("_conn.server_addr"))
    server_port = property(attrgetter("_conn.server_port"))

    @property
    def binary_remote_addr(self) -> bytes:
        """The client address packed: 4 bytes for IPv4, 16 for IPv6 (``$binary_remote_addr``)."""
        conn = self._conn
        return conn.bin_addr or conn.binary_remote_addr  # packed once per connection

    @property
    def id(self) -> str:
        """``$request_id``: 32 hex characters, unique per request; or the value of the incoming
        ``[http] request_id_header`` (``X-Request-Id``) when it is 1..128 visible ASCII
        characters."""
        ident = self._id
        if ident is None:
            ident = self._id = new_request_id()
        elif ident.__class__ is bytes:
            ident = self._id = ident.decode("ascii")
        return ident

    @property
    def ctx(self) -> dict:
        """A dict shared by all phases of this request."""
        if self._ctx is None:
            self._ctx = {}
        return self._ctx

    @property
    def var(self) -> Vars:
        """nginx variables as a mapping of ``str`` (see ``Vars``)."""
        if self._var is None:
            self._var = Vars(self)
        return self._var

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            self._cookies = parse_cookies(", ".join(self.headers.getall("cookie")))
        return self._cookies

    @property
    def resp_headers(self) -> Headers:
        """Response headers; writable until the headers are sent, and in header_filter."""
        rh = self.resp_fields
        if rh is None:
            rh = self.resp_fields = Headers()
        if self.header_lines:
            # the prepared lines (request id, limit headers) join the headers the handler sees
            # (and may change or delete), first, as they go out; no longer sent separately
            rh._fields()[0:0] = _parse_lines(self.header_lines)
            self.header_lines = b""
        return rh

    def add_header_lines(self, lines: bytes) -> None:
        """Add response header lines built by edgeworker (``b"\\r\\nName: value"`` each;
        names are tokens, values hold no CR/LF/NUL): sent as they are, unless a handler takes
        ``resp_headers``, which then shows them as fields."""
        if self.resp_fields is None:
            self.header_lines += lines
        else:
            self.resp_headers._fields().extend(_parse_lines(lines))

    @property
    def var_values(self) -> dict[str, str] | None:
        """The variables set so far, when ``var`` was used during the request (else None)."""
        var = self._var
        return var._own if var is not None else None

    @property
    def request_uri(self) -> str:
        """The request target as received (``$request_uri``): path and query, still encoded."""
        return self.head.target.decode("latin-1")

    @property
    def query_string(self) -> str:
        """The query, without ``?``, still encoded (``$args``); ``""`` when there is none."""
        query = self.head.query
        return query.decode("latin-1") if query else ""

    @property
    def http_version(self) -> str:
        """``"1.1"`` or ``"1.0"``."""
        return self.head.version

    #: ``"https"`` on a TLS connection, else ``"http"`` (``$scheme``)
    scheme = property(attrgetter("_conn.scheme"))

    # ----------------------------------------------------------------- body
    def read_body(self) -> bytes:
        """The whole request body as bytes (cooperative).

        A body over ``client_max_body_size`` ends the request with 413. Allowed in the
        rewrite, access and content phases.
        """
        if self.phase not in _BODY_PHASES:
            raise PhaseError(f"req.read_body() is not allowed in the {self.phase} phase")
        if self.body is None:
            self.body = self._conn.read_body(self)
        return self.body

    def iter_body(self) -> Iterator[bytes]:
        """The request body piece by piece, as it arrives (for streaming it on); the limits
        of ``read_body`` apply. Once iterated to its end, the body is consumed."""
        return self._conn.iter_body(self)

    # ----------------------------------------------------------------- control
    def exit(
        self,
        status: int,
        body: str | bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        """End the request now with ``status`` (and optional body and headers).

        Later phases except header_filter/body_filter (for the response) and log are skipped.
        Without a body, an error status (>= 400) gets the standard error page.
        After the headers were sent (streaming), ``exit`` just ends the output.
        """
        if self.phase not in _EXIT_PHASES:
            raise PhaseError(f"req.exit() is not allowed in the {self.phase} phase")
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise ValueError(f"req.exit(): bad status {status!r}")
        if not self.headers_sent:
            self.status = status
            if headers:
                rh = self.resp_headers
                for name, value in headers.items():
                    rh[name] = value
            if content_type is not None:
                self.content_type = content_type
            if body is not None:
                self.exit_body = body.encode() if isinstance(body, str) else bytes(body)
            else:
                self.exit_body = None
            self.output = None
        raise RequestExit()

    def redirect(self, url: str, status: int = 302) -> None:
        """Answer a redirect to ``url`` (status 301, 302, 303, 307 or 308) and end the request."""
        if self.phase not in (REWRITE, ACCESS, CONTENT):
            raise PhaseError(f"req.redirect() is not allowed in the {self.phase} phase")
        if status not in REDIRECT_STATUSES:
            raise ValueError(
                f"req.redirect(): status must be one of 301, 302, 303, 307, 308, not {status!r}"
            )
        if self.headers_sent:
            raise PhaseError("req.redirect() called after the response headers were sent")
        if any(c in url for c in "\r\n\x00"):
            raise ValueError("req.redirect(): CR, LF or NUL in the url")
        self.resp_headers["Location"] = url
        self.exit(status)

    def set_uri(self, uri: str, jump: bool = False) -> None:
        """Change ``uri``. With ``jump=True`` (rewrite phase only) the location is matched again
        for the new uri and its handlers run from the rewrite phase."""
        if self.phase not in (REWRITE, ACCESS, CONTENT):
            raise PhaseError(f"req.set_uri() is not allowed in the {self.phase} phase")
        if not uri or not uri.startswith("/"):
            raise ValueError(f"req.set_uri(): the uri must start with '/': {uri!r}")
        if any(c in uri for c in "\r\n\x00"):
            raise ValueError("req.set_uri(): CR, LF or NUL in the uri")
        if jump and self.phase != REWRITE:
            raise PhaseError(f"req.set_uri(jump=True) is not allowed in the {self.phase} phase")
        self.uri = uri
        if jump:
            raise Jump()

    # ----------------------------------------------------------------- output
    def _check_output(self, api: str) -> None:
        if self.phase != CONTENT:
            raise PhaseError(f"req.{api}() is not allowed in the {self.phase} phase")
        if self.ended:
            raise PhaseError(f"req.{api}() called after req.eof()")

    @staticmethod
    def _encode(parts: tuple, sep: bytes) -> bytes:
        out = []
        for p in parts:
            if isinstance(p, bytes):
                out.append(p)
            elif isinstance(p, str):
                out.append(p.encode())
            elif isinstance(p, (bytearray, memoryview)):
                out.append(bytes(p))
            elif p is None:
                out.append(b"nil")
            elif isinstance(p, bool):
                out.append(b"true" if p else b"false")
            elif isinstance(p, (list, tuple)):
                out.append(Request._encode(tuple(p), b""))
            else:
                out.append(str(p).encode())
        return sep.join(out) if sep else b"".join(out)

    def print(self, *parts: Any) -> None:
        """Append to the response body (content phase). ``str`` is UTF-8 encoded, ``None``
        prints ``nil`` and booleans ``true``/``false``, as ``ngx.print``."""
        self._check_output("print")
        data = self._encode(parts, b"")
        if self.output is None:
            self.output = [data]
        else:
            self.output.append(data)

    def say(self, *parts: Any) -> None:
        """Like ``print`` plus a newline."""
        self._check_output("say")
        data = self._encode(parts, b"") + b"\n"
        if self.output is None:
            self.output = [data]
        else:
            self.output.append(data)

    def flush(self) -> None:
        """Send the response headers (if not yet) and the output so far, now (streaming)."""
        self._check_output("flush")
        self.stream(self.take_output(), False)

    def eof(self) -> None:
        """End the response body now; the content handler may go on (e.g. work after the
        response), but may not output any more."""
        self._check_output("eof")
        self.stream(self.take_output(), True)
        self.ended = True

    def take_output(self) -> bytes:
        """The body printed so far (``print``/``say``), taken: ``output`` is emptied."""
        out = self.output
        self.output = None
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    # ------------------------------------------------------------- to the connection
    def _replace_response(self, body: bytes) -> None:
        """Send the response a header_filter's exit prepared, whole, instead of the one on
        its way (no filter runs on it); the output ends."""
        loc = self.location
        self.location = None
        self._conn.send_response(self, body)
        self.location = loc
        self.ended = True

    def respond(self, body: bytes) -> None:
        """Send the whole response (head and ``body``); header_filter and body_filter run
        first, then compression (the whole body at once, its length exact)."""
        loc = self.location
        if loc is not None and loc.output_filters:
            if loc.header_filters:
                replaced = self._app.header_filter(self)
                if replaced is not None:
                    body = replaced
            if loc.body_filter:
                body = self._app.body_filter(self, body, True)
            if loc.compress is not None:
                enc = loc.compress.start(self, len(body))
                if enc is not None:
                    body = enc.end(body)
        self._conn.send_response(self, body)

    def send_head(self, length: int, first: bytes = b"") -> None:
        """Send the head with ``Content-Length: length`` and ``first`` (the first body bytes)
        in one write, for a body of known length sent afterwards with ``send_body`` or
        ``sendfile`` (proxied and static responses). header_filter runs first; if it ends the
        request, its response goes out whole instead and the body is not sent. Not for
        locations with a body_filter (a filter may change the length)."""
        loc = self.location
        if loc is not None and loc.output_filters:
            if loc.header_filters:
                replaced = self._app.header_filter(self)
                if replaced is not None:
                    return self._replace_response(replaced)
            if loc.compress is not None:
                enc = self.encoder = loc.compress.start(self, length, True)
                if enc is not None:  # compressed: streamed from here on, without a length
                    return self._conn.stream(self, enc.feed(first) if first else b"", False)
        self._conn.send_head(self, length, first)

    def send_body(self, data: bytes) -> None:
        """Raw body bytes after ``send_head`` (nothing for HEAD or after the end)."""
        enc = self.encoder
        if enc is not None:
            if data:
                self._conn.stream(self, enc.feed(data), False)
            return
        self._conn.send_body(self, data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """Body bytes from file ``fd`` after ``send_head``, zero-copy (read and compressed
        in pieces when the body is compressed)."""
        enc = self.encoder
        if enc is None:
            return self._conn.sendfile(self, fd, offset, count)
        if self.method == "HEAD":
            return None
        while count > 0 and not self.ended:
            piece = os.pread(fd, min(_PIECE, count), offset)
            if not piece:
                break  # the file shrank under us
            offset += len(piece)
            count -= len(piece)
            self._conn.stream(self, enc.feed(piece), False)
        return None

    def finish(self) -> None:
        """Mark the response complete (later output calls are no-ops); a compressed body
        sent with ``send_head`` gets its end."""
        enc = self.encoder
        if enc is not None and not self.ended:
            self._conn.stream(self, enc.end(b""), True)
        self.ended = True

    def stream(self, data: bytes, eof: bool) -> None:
        """Send part of a streamed (chunked) response: the head first when not yet sent
        (after header_filter), then ``data`` through body_filter; ``eof`` ends it."""
        if self.ended:
            return
        loc = self.location
        if loc is None or not loc.output_filters:
            return self._conn.stream(self, data, eof)
        head = None
        if not self.headers_sent:
            if loc.header_filters:
                replaced = self._app.header_filter(self)
                if replaced is not None:
                    return self._replace_response(replaced)
            if loc.compress is not None:
                self.encoder = loc.compress.start(self, None, True)
            if loc.body_filter:
                head = self._conn.stream_head(self)
        if loc.body_filter:
            data = self._app.body_filter(self, data, eof)
        enc = self.encoder
        if enc is not None:
            if eof:
                data = enc.end(data)
            elif data:
                data = enc.feed(data)
        self._conn.stream(self, data, eof, head)

    def send_raw(self, data: bytes) -> None:
        """Bytes to the client as they are (a relayed ``101`` head)."""
        self._conn.send_raw(data)

    def detach(self) -> tuple[socket.socket, bytes]:
        """Take the client socket over (after a relayed ``101``), with the bytes the client
        already sent past the request head; the caller closes it."""
        return self._conn.detach(self)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.request_uri}>"


_SIMPLE_VARS = {
    "request_method": lambda r: r.method,
    "method": lambda r: r.method,
    "uri": lambda r: r.uri,
    "document_uri": lambda r: r.uri,
    "request_uri": lambda r: r.request_uri,
    "args": lambda r: r.query_string,
    "query_string": lambda r: r.query_string,
    "is_args": lambda r: "?" if r.query_string else "",
    "server_protocol": lambda r: "HTTP/" + r.http_version,
    "scheme": lambda r: r.scheme,
    "host": lambda r: r.host,
    "remote_addr": lambda r: r.remote_addr,
    "remote_port": lambda r: str(r.remote_port),
    "binary_remote_addr": lambda r: r.binary_remote_addr.decode("latin-1"),
    "server_addr": lambda r: r.server_addr,
    "server_port": lambda r: str(r.server_port),
    "request_id": lambda r: r.id,
    "status": lambda r: str(r.status),
    "request_time": lambda r: f"{time.time() - r.start_time:.3f}",
    "msec": lambda r: f"{time.time():.3f}",
    "body_bytes_sent": lambda r: str(r.body_bytes_sent),
    "request": lambda r: f"{r.method} {r.request_uri} HTTP/{r.http_version}",
    "content_length": lambda r: r.headers.get("content-length"),
    "content_type": lambda r: r.headers.get("content-type"),
    "http_version": lambda r: r.http_version,
    "upstream_addr": lambda r: upstream_var(r, 0),
    "upstream_status": lambda r: upstream_var(r, 1),
    "upstream_response_time": lambda r: upstream_var(r, 2),
    "remote_user": lambda r: None,
    "time_local": lambda r: time.strftime("%d/%b/%Y:%H:%M:%S %z"),
    "time_iso8601": lambda r: time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "pid": lambda r: str(os.getpid()),
    "request_length": lambda r: str(request_length(r)),
    "connection_requests": lambda r: str(r._conn.requests),
    "https": lambda r: "on" if r._conn.tls is not None else "",
    "hostname": lambda r: socket.gethostname(),
}


def upstream_var(req: Request, which: int) -> str | None:
    """``$upstream_addr`` (0), ``$upstream_status`` (1) or ``$upstream_response_time`` (2, in
    seconds to the millisecond): one value per attempt, joined with ``", "`` as nginx does;
    None when the request was not proxied (or, for the time, before the first attempt ended)."""
    tried = req.upstream
    values = tried[which] if tried is not None else None
    if not values:
        return None
    if which == 2:
        return ", ".join([f"{t:.3f}" for t in values])
    return ", ".join(map(str, values))


def request_length(req: Request) -> int:
    """``$request_length``: bytes of the request line and header section as received plus the
    declared body length (``Content-Length``; a chunked body is not counted). A request id
    that edgeworker added is not counted (the protocol measured the request before)."""
    return req.head.size


class Vars:
    """``req.var``: nginx variables as a mapping of ``str``.

    Built-ins: ``request_method``, ``uri``, ``request_uri``, ``args``, ``host``, ``remote_addr``,
    ``binary_remote_addr``, ``request_id``, ``status``, ``request_time``, ``body_bytes_sent``,
    ``upstream_*`` and more, plus ``http_<name>`` (request header, ``-`` written ``_``),
    ``arg_<name>``, ``cookie_<name>``, ``sent_http_<name>`` (response header) and ``1``…``9``
    (regex captures of the location). Handlers may set their own variables; a value set by a
    handler shadows the built-in of the same name. ``var[name]`` raises ``KeyError`` for an
    unknown or unset variable; ``var.get(name)`` returns ``None``.
    """

    __slots__ = ("_req", "_own")

    def __init__(self, req: Request) -> None:
        self._req = req
        own = req.own_vars  # shared by every Vars of the request
        if own is None:
            own = req.own_vars = {}
        self._own: dict[str, str] = own

    def get(self, name: str, default: str | None = None) -> str | None:
        own = self._own.get(name)
        if own is not None:
            return own
        r = self._req
        fn = _SIMPLE_VARS.get(name)
        if fn is not None:
            value = fn(r)
            return default if value is None else value
        if name.startswith("http_"):
            return r.headers.get(name[5:].replace("_", "-"), default)
        if name.startswith("ssl_"):
            tls = r._conn.tls
            value = tls.var(name) if tls is not None else None
            return default if value is None else value
        if name.startswith("arg_"):
            return r.args.get(name[4:], default)
        if name.startswith("cookie_"):
            return r.cookies.get(name[7:], default)
        if name.startswith("sent_http_"):
            return r.resp_headers.get(name[10:].replace("_", "-"), default)
        if name.isdigit():
            i = int(name)
            if 1 <= i <= len(r.captures):
                return r.captures[i - 1]
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("variable names are non-empty str")
        self._own[name] = value if isinstance(value, str) else str(value)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def set(self, name: str, value: Any) -> None:
        self[name] = value

    def set_builtin(self, name: str, value: str | None) -> None:
        """Used by the server for variables it learns late (``upstream_*``)."""
        if value is None:
            self._own.pop(name, None)
        else:
            self._own[name] = value

    def expand(self, template: str) -> str:
        """Replace ``$name`` and ``${name}`` in ``template`` (unknown variables become ``""``)."""
        return expand(template, self)
