"""The per-field parser callbacks: each header field is sorted as httptools parses it.

httptools calls ``on_header(name, value)`` once per field. :class:`RequestFields` (the server's
request heads) and :class:`ResponseFields` (proxied response heads) do the per-field work in
one call and keep what the head's end needs. Their ``add`` method *is* the parser's
``on_header``. The C parsers of the common whole request and response (``parse_request``,
``parse_response_head`` in ``edgeworker/_speedups.c``, which the install builds; this module
exports it as ``accel``, None with ``EDGEWORKER_NO_ACCEL=1``) sort their
fields the same way; tests/unit/test_http_fields.py and tests/unit/test_proxy_response_head.py
give the same inputs to both ways.
"""

from __future__ import annotations

import os

from .framing import content_length

__all__ = ["HOP_BY_HOP", "ROUTING_FIELDS", "RequestFields", "ResponseFields", "accel"]


#: Request fields the protocol itself reads (framing, routing, connection management): the ones
#: ``RequestFields.add`` (and ``parse_request``) sorts out by name. The request-id field may not be
#: one of them (a config error).
ROUTING_FIELDS = frozenset(
    ("host", "content-length", "transfer-encoding", "connection", "expect", "upgrade")
)


class RequestFields:
    """The fields of a request head (or of a trailer section), sorted as they arrive.

    ``add(name, value)`` stores ``(lower-cased name, value without trailing SP/HTAB)`` in
    ``list`` and adds ``len(name) + len(value) + 4`` to ``size``. It also records what framing
    and routing need: ``host`` (the last value) and ``nhost``; ``conn`` and ``te`` (several
    values joined with ``,``); ``cl`` (int), with the first problem of a Content-Length field
    in ``cl_error`` (``"duplicate Content-Length"``, ``"invalid Content-Length"``); ``expect``
    (the last Expect is ``100-continue``); ``upgrade`` (the last value); ``rid`` (the first value
    of the ``id_field`` field); ``underscore`` (a name holds ``_``); ``te_ows`` (trailing
    whitespace with a tab after a Transfer-Encoding value: llhttp does not take
    ``chunked<HTAB>`` as chunked and fails only after the head). ``reset()`` starts a new
    section with a new ``list``.
    """

    __slots__ = ("list", "id_field", "host", "nhost", "conn", "te", "cl", "cl_error", "expect",
                 "upgrade", "rid", "te_ows", "underscore", "size")

    def __init__(self, id_field: bytes | None = None) -> None:
        if id_field is not None and not isinstance(id_field, bytes):
            raise TypeError("id_field must be bytes or None")
        self.id_field = id_field
        self.reset()

    def reset(self) -> None:
        self.list: list[tuple[bytes, bytes]] = []
        self.host = self.conn = self.te = self.cl = self.cl_error = None
        self.upgrade = self.rid = None
        self.expect = self.te_ows = self.underscore = False
        self.nhost = self.size = 0

    def add(self, name: bytes, value: bytes) -> None:
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError("add() takes a bytes name and a bytes value")
        name = name.lower()
        stripped = value.rstrip(b" \t")
        self.list.append((name, stripped))
        self.size += len(name) + len(stripped) + 4
        if 95 in name:  # "_"
            self.underscore = True
        if name == b"host":
            self.nhost += 1
            self.host = stripped
        elif name == b"expect":
            self.expect = stripped.lower() == b"100-continue"
        elif name == b"upgrade":
            self.upgrade = stripped
        elif name == b"connection":
            self.conn = stripped if self.conn is None else self.conn + b"," + stripped
        elif name == b"content-length":
            if self.cl is not None:
                if self.cl_error is None:
                    self.cl_error = "duplicate Content-Length"
            else:
                cl = content_length(stripped)
                if cl is None:
                    if self.cl_error is None:
                        self.cl_error = "invalid Content-Length"
                else:
                    self.cl = cl
        elif name == b"transfer-encoding":
            if stripped is not value and 9 in value[len(stripped) :]:  # a tab
                self.te_ows = True
            self.te = stripped if self.te is None else self.te + b"," + stripped
        elif self.rid is None and name == self.id_field:
            self.rid = stripped


#: Response fields never relayed to the client: hop-by-hop (RFC 9110 §7.6.1), framing
#: (edgeworker frames the response itself), and Date and Server (the connection's, as nginx)
HOP_BY_HOP = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"date", b"server",
))


def field_pairs(lines: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(name, value)`` of each field line of ``lines`` (``b"\\r\\nName: value"`` each, as
    they go out in a head; names are tokens, values hold no CR or LF)."""
    out = []
    for line in lines.split(b"\r\n")[1:]:
        name, _, value = line.partition(b": ")
        out.append((name, value))
    return out


class ResponseFields:
    """The fields of a proxied response head, sorted as they arrive.

    ``add(name, value)``: a ``HOP_BY_HOP`` field goes to ``hop``; ``connection`` collects
    Connection's values (joined with ``,``; its tokens name more hop-by-hop fields);
    Content-Length and Transfer-Encoding set ``framed``, and ``length`` (a Content-Length of
    digits; None after a Transfer-Encoding). Every other field is kept, with ``has_ct`` for a
    Content-Type and the index among the kept of each Location and Refresh field in
    ``redirects`` (None when there is none, for proxy_redirect). ``reset()`` forgets an interim
    (1xx) head.

    The fields are held as they go out in the client's response head (``b"\\r\\nName: value"``
    each): ``lines`` the kept ones, ``hop_lines`` the hop-by-hop ones, each one bytes (as
    ``parse_response_head`` fills them) or a list of them (as ``add`` does). Read from them:
    ``wire`` (the kept lines joined), ``kept`` and ``hop`` (``(name, value)`` pairs, made at
    each read). ``set_kept(i, value)`` replaces the value of kept field ``i``.
    """

    __slots__ = ("lines", "hop_lines", "connection", "redirects", "length", "has_ct", "framed")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lines: list[bytes] | bytes = []
        self.hop_lines: list[bytes] | bytes = []
        self.connection: bytes | None = None
        self.redirects: list[int] | None = None
        self.length: int | None = None
        self.has_ct = False
        self.framed = False

    @property
    def wire(self) -> bytes:
        lines = self.lines
        return lines if lines.__class__ is bytes else b"".join(lines)  # type: ignore[return-value]

    @property
    def kept(self) -> list[tuple[bytes, bytes]]:
        return field_pairs(self.wire)

    @property
    def hop(self) -> list[tuple[bytes, bytes]]:
        lines = self.hop_lines
        joined = lines if lines.__class__ is bytes else b"".join(lines)
        return field_pairs(joined)  # type: ignore[arg-type]

    def set_kept(self, i: int, value: bytes) -> None:
        kept = self.kept
        kept[i] = (kept[i][0], value)
        self.lines = b"".join(b"\r\n%b: %b" % field for field in kept)

    def add(self, name: bytes, value: bytes) -> None:
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError("add() takes a bytes name and a bytes value")
        line = b"\r\n%b: %b" % (name, value)
        lname = name.lower()
        if lname in HOP_BY_HOP:
            self.hop_lines.append(line)  # type: ignore[union-attr]
            if lname == b"connection":
                c = self.connection
                self.connection = value if c is None else c + b"," + value
            elif lname == b"content-length":
                self.framed = True
                length = content_length(value)
                if length is not None:
                    self.length = length
            elif lname == b"transfer-encoding":
                self.framed = True
                self.length = None
            return
        lines = self.lines  # (a list while the head is parsed)
        if lname == b"content-type":
            self.has_ct = True
        elif lname == b"location" or lname == b"refresh":
            if self.redirects is None:
                self.redirects = []
            self.redirects.append(len(lines))
        lines.append(line)  # type: ignore[union-attr]


def _load_accel():
    if os.environ.get("EDGEWORKER_NO_ACCEL"):
        return None
    try:
        from .. import _speedups
    except ImportError as exc:
        raise ImportError(
            "edgeworker's C part (edgeworker/_speedups.c) is not built: install edgeworker "
            "again with a C compiler and the Python headers (Debian: gcc python3-dev); "
            "EDGEWORKER_NO_ACCEL=1 runs its pure-Python twins instead"
        ) from exc
    return _speedups


#: the C module (``edgeworker/_speedups.c``), or None
accel = _load_accel()
