"""HTTP/1.1 for edgeworker: the sans-IO server protocol, header multi-dict and response bytes.

``edgeworker.http.request(method, url, …)`` is the pooled, cooperative HTTP client for handlers
(``edgeworker.httpclient``), loaded on first use so that the master never imports it.
"""

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


def __getattr__(name: str):
    if name in ("request", "RequestError", "RequestTimeout"):
        from edgeworker import httpclient

        return getattr(httpclient, name)
    raise AttributeError(f"module 'edgeworker.http' has no attribute {name!r}")
