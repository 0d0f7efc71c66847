"""How an HTTP/1.x message is delimited and whether its connection lives on: the rules for
``Content-Length``, ``Transfer-Encoding``, ``Connection`` and ``Upgrade``, for the requests
edgeworker serves (``ServerProtocol``) and the responses it reads from upstreams (the proxy and
the HTTP client). Each rule is written here once.

Requests (RFC 9112 §6, stricter than nginx where the RFC allows a choice):

* ``Content-Length``: plain digits, at most ``MAX_LENGTH_DIGITS`` (no sign, hex, list or spaces
  inside), given once (``RequestFields.add`` applies this per field: ``content_length``);
* never together with ``Transfer-Encoding`` (400); ``Transfer-Encoding`` must end in
  ``chunked`` and name it once (400); other codings are not implemented (501, like nginx); it
  is refused in an HTTP/1.0 request (400, like nginx); a value with a tab in its trailing
  whitespace is refused (400: llhttp would not read it as chunked, and fail only after the head);
* ``Connection``: ``close`` among its tokens ends the connection after the response;
  otherwise HTTP/1.1 keeps it, and HTTP/1.0 keeps it only with ``keep-alive``;
* an ``Upgrade`` request that also declares a body is refused (400): the body would go to the
  tunnel, which a front proxy could exploit.

Upstream responses: 1xx other than 101 are interim heads (skipped); a HEAD request's answer,
204 and 304 have no body whatever they declare; a response with neither ``Content-Length`` nor
``Transfer-Encoding`` (and not 101) is delimited by the connection's close. llhttp
(``httptools``) checks the grammar of both, chunk sizes included.

The C parsers (``parse_request``, ``parse_response_head`` in edgeworker/_speedups.c) take only
messages where these rules have the plain answer (no ``Transfer-Encoding`` or ``Upgrade``,
``Connection`` absent, ``close`` or ``keep-alive``, one ``Content-Length`` of digits) and hand
every other one to llhttp and this module; tests/unit/test_http_fields.py and
tests/unit/test_proxy_response_head.py give the same inputs to both ways.
"""

from __future__ import annotations

from ..errors import FramingError

__all__ = [
    "INTERIM",
    "MAX_LENGTH_DIGITS",
    "NO_BODY",
    "NO_BODY_STATUS",
    "TO_CLOSE",
    "DELIMITED",
    "FramingError",
    "check_upgrade",
    "content_length",
    "keep_alive",
    "request_chunked",
    "response_body",
    "split_tokens",
]

#: the longest ``Content-Length`` value taken, in digits (anything longer is refused: 400)
MAX_LENGTH_DIGITS = 18

#: the statuses whose responses have no body, whatever their head declares (RFC 9110 §6.4.1;
#: 1xx too: checked apart, as ``status < 200``)
NO_BODY_STATUS = frozenset((204, 304))

# response_body's answers
INTERIM, NO_BODY, DELIMITED, TO_CLOSE = range(4)


def split_tokens(value: bytes) -> list[bytes]:
    """The comma-separated elements of a (combined) field value, lower-cased, OWS stripped."""
    return [item.strip(b" \t") for item in value.lower().split(b",")]


def content_length(value: bytes) -> int | None:
    """A ``Content-Length`` value as an int; None when it is not plain digits (at most
    ``MAX_LENGTH_DIGITS``)."""
    if value.isdigit() and len(value) <= MAX_LENGTH_DIGITS:
        return int(value)
    return None


def request_chunked(version: str, cl: int | None, te: bytes | None, te_ows: bool) -> bool:
    """Whether a request's body is chunked (else it is ``cl`` bytes, or none), from its
    ``Content-Length`` (``cl``), its ``Transfer-Encoding`` values joined with ``,`` (``te``)
    and whether a Transfer-Encoding value had a tab in its trailing whitespace. Raises
    ``FramingError`` (400 or 501) for framing that is refused."""
    if te_ows:
        raise FramingError(400, "invalid Transfer-Encoding")
    if te is None:
        return False
    if version == "1.0":
        raise FramingError(400, "Transfer-Encoding in an HTTP/1.0 request")
    if cl is not None:
        raise FramingError(400, "both Content-Length and Transfer-Encoding")
    codings = split_tokens(te)
    if codings[-1] != b"chunked":
        raise FramingError(400, "Transfer-Encoding does not end in chunked")
    if len(codings) > 1:
        if codings.count(b"chunked") > 1 or b"" in codings:
            raise FramingError(400, "invalid Transfer-Encoding")
        raise FramingError(501, "unsupported transfer coding")
    return True


def keep_alive(conn: bytes | None, version: str) -> bool:
    """Whether the connection lives on after this message, from its ``Connection`` values
    joined with ``,`` (``conn``) and its HTTP version (``"1.0"`` or ``"1.1"``)."""
    if conn is None:
        return version == "1.1"
    conn = conn.lower()
    if conn == b"keep-alive":
        return True
    if conn == b"close":
        return False
    tokens = split_tokens(conn)
    if b"close" in tokens:
        return False
    return version == "1.1" or b"keep-alive" in tokens


def check_upgrade(chunked: bool, cl: int | None) -> None:
    """An ``Upgrade`` request (one llhttp will hand over) may not declare a body: 400."""
    if chunked or cl:
        raise FramingError(400, "Upgrade request with a body")


def response_body(status: int, head_only: bool, framed: bool) -> int:
    """How an upstream response's body is delimited: ``INTERIM`` (a 1xx head other than 101:
    the final head follows), ``NO_BODY`` (the answer to a HEAD request, 204, 304),
    ``TO_CLOSE`` (not ``framed`` by Content-Length or Transfer-Encoding, and not 101: the body
    ends when the upstream closes) or ``DELIMITED`` (by its framing; a 101 hands over)."""
    if 100 <= status < 200 and status != 101:
        return INTERIM
    if head_only or status in NO_BODY_STATUS:
        return NO_BODY
    if status != 101 and not framed:
        return TO_CLOSE
    return DELIMITED
