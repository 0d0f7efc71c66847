"""``edgeworker.io``: the transport layer, the only code that waits on sockets and arms I/O
deadlines (``transport.py``, on one kind of watchdog: ``watchdog.py``)."""

from ..errors import Expired
from .transport import (
    BIOTLS,
    RECV,
    TimeoutTransport,
    TLSError,
    TLSTransport,
    Transport,
    open_socket,
    relay,
    transport,
)
from .watchdog import WATCHDOG, Watchdog

__all__ = [
    "BIOTLS",
    "RECV",
    "WATCHDOG",
    "Expired",
    "TLSError",
    "TLSTransport",
    "TimeoutTransport",
    "Transport",
    "Watchdog",
    "open_socket",
    "relay",
    "transport",
]
