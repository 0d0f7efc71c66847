"""HTTP/1.1 for edgeworker: the sans-IO server protocol, header multi-dict and response bytes."""

from edgeworker.http.headers import Headers
from edgeworker.http.protocol import (
    END,
    Data,
    EndOfMessage,
    Limits,
    ProtocolError,
    RequestHead,
    ServerProtocol,
)

__all__ = [
    "END",
    "Data",
    "EndOfMessage",
    "Headers",
    "Limits",
    "ProtocolError",
    "RequestHead",
    "ServerProtocol",
]
