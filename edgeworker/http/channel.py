"""The response channel: what a request needs from the connection it arrived on.

The connection (``edgeworker.server.Connection``) implements it; the request and the pipeline
see only this interface. Every method takes the request whose response it frames (its status,
headers, keep-alive and method decide the head); none runs a handler: the output filters
(header_filter, body_filter) run in the pipeline before the bytes get here.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, Protocol


class Channel(Protocol):
    """One client connection, seen from a request."""

    remote_addr: str
    remote_port: int
    server_addr: str
    server_port: int
    #: requests received on this connection so far (``$connection_requests``)
    requests: int
    #: the client address packed, once ``binary_remote_addr`` computed it (else None)
    bin_addr: bytes | None
    #: the servers of the address the connection arrived on, set by the pipeline
    names: Any
    #: the one server of every request of the connection, once the pipeline knows it (else
    #: None: each request looks its server up)
    route: Any
    #: ``"https"`` on a TLS connection, else ``"http"``
    scheme: str
    #: the TLS side of the connection (``edgeworker.tls.connection.TLSInfo``), or None
    tls: Any

    @property
    def binary_remote_addr(self) -> bytes: ...

    def read_body(self, req: Any) -> bytes:
        """The whole request body."""

    def iter_body(self, req: Any) -> Iterator[bytes]:
        """The request body piece by piece, as it arrives."""

    def send_response(self, req: Any, body: bytes) -> None:
        """Head and whole body, in one write when small."""

    def send_head(self, req: Any, length: int, first: bytes = b"") -> None:
        """The head with ``Content-Length: length`` (and the first body bytes)."""

    def send_body(self, req: Any, data: bytes) -> None:
        """Body bytes after ``send_head``."""

    def sendfile(self, req: Any, fd: int, offset: int, count: int) -> None:
        """Body bytes from a file after ``send_head``."""

    def stream(self, req: Any, data: bytes, eof: bool, head: bytes | None = None) -> None:
        """Part of a streamed body (the head first, unless sent)."""

    def stream_head(self, req: Any) -> bytes:
        """The head of a streamed response, marked sent but not yet written: the caller
        passes it to ``stream`` with the first body bytes."""

    def send_raw(self, data: bytes) -> None:
        """Bytes to the client as they are."""

    def send_error(self, status: int) -> None:
        """A protocol-level error response; the connection closes after it."""

    def detach(self, req: Any) -> tuple[socket.socket, bytes]:
        """Hand the socket over (an upgraded connection) with the bytes read past the head."""
