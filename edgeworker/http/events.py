"""The events of the sans-IO HTTP/1.1 server protocol and its size limits.

``ServerProtocol.feed`` (protocol.py) returns these: a ``RequestHead`` per request, ``Data``
pieces of its body, ``END`` when the request is complete, or a final ``ProtocolError``.
"""

from __future__ import annotations

__all__ = ["END", "Data", "EndOfMessage", "Limits", "ProtocolError", "RequestHead"]


class Limits:
    """Size limits of a request head (the ``[http]`` keys of the same names)."""

    __slots__ = ("max_request_line", "max_header_size", "max_headers")

    def __init__(
        self, max_request_line: int = 8192, max_header_size: int = 8192, max_headers: int = 100
    ) -> None:
        self.max_request_line = max_request_line  # method SP target SP version; over → 414
        self.max_header_size = max_header_size  # all field lines "name: value\r\n"; over → 431
        self.max_headers = max_headers  # number of field lines; over → 431

    def __repr__(self) -> str:
        return (
            f"Limits(max_request_line={self.max_request_line}, "
            f"max_header_size={self.max_header_size}, max_headers={self.max_headers})"
        )


class RequestHead:
    """The request line and header section of one request.

    ``headers`` keeps every field in order as ``(name, value)`` with lower-cased names and
    values stripped of OWS. ``host`` is the Host value (or the authority of an absolute-form
    target), raw, port included. ``path`` and ``query`` are still percent-encoded.
    ``request_id`` is the value of the first request-id field (``ServerProtocol(id_field=…)``),
    else None. ``size`` counts the bytes of the request as received (nginx's
    ``$request_length``): request line, header section and a ``Content-Length`` body (a
    chunked body is not counted). It is exact when the head arrived in one read (the usual
    case); a head split over reads is counted from its fields as ``name: value`` lines.
    """

    __slots__ = (
        "method",
        "target",
        "path",
        "query",
        "version",
        "headers",
        "keep_alive",
        "content_length",
        "chunked",
        "expect_continue",
        "upgrade",
        "host",
        "request_id",
        "size",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: bytes,
        query: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        expect_continue: bool,
        upgrade: bytes | None,
        host: bytes | None,
        request_id: bytes | None = None,
        size: int = 0,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.host = host
        self.request_id = request_id
        self.size = size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestHead):
            return NotImplemented
        # (not ``size``: it depends on how the bytes were split into reads, see above)
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__ if s != "size")

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target!r} HTTP/{self.version}>"


class Data:
    """A piece of the request body, as it arrived (never the whole body buffered)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Data) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Data({self.data!r})"


class EndOfMessage:
    """The request (head and body) is complete. Use the singleton ``END``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = EndOfMessage()


class ProtocolError:
    """The input is not acceptable HTTP: answer ``status`` and close. Nothing else follows."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProtocolError)
            and other.status == self.status
            and other.reason == self.reason
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ProtocolError({self.status}, {self.reason!r})"
