"""Host names of upstream servers, resolved without blocking the worker.

A ``Target`` is one configured ``host:port``. An IP literal never needs resolving. A name is
resolved with ``socket.getaddrinfo`` — in a worker that is gevent's resolver (the worker is
monkey-patched before this module is imported), so the lookup yields to other requests instead
of blocking the process. The first lookup happens on first use (the request waits for it,
cooperatively); afterwards the addresses are refreshed every ``interval`` seconds (default 30)
in a background greenlet while requests keep using the previous answer, so a changed DNS
record is followed without a reload. A failed refresh keeps the old addresses (logged); a name
that never resolved makes ``addresses()`` raise ``ResolveError`` (the proxy answers 502).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable

from ..errors import ResolveError

log = logging.getLogger("edgeworker")

DEFAULT_INTERVAL = 30.0

Lookup = Callable[[str, int], list[tuple[str, int]]]


def system_lookup(host: str, port: int) -> list[tuple[str, int]]:
    """``getaddrinfo`` for TCP; IPv4 and IPv6 answers in the resolver's order, deduplicated."""
    out: list[tuple[str, int]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        addr = (sockaddr[0], port)
        if addr not in out:
            out.append(addr)
    return out


def _spawn(fn: Callable[[], None]) -> None:
    try:
        import gevent

        gevent.spawn(fn)
    except ImportError:  # pragma: no cover - gevent is a dependency
        fn()


def address_text(addr: tuple) -> str:
    """``host:port`` (``[v6]:port``) of a resolved address, as ``$upstream_addr`` shows it."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Target:
    """A ``host:port`` and its current addresses; ``next_address()`` rotates through them."""

    __slots__ = ("host", "port", "_addrs", "_expires", "_refreshing", "_rr", "interval", "lookup",
                 "fixed")

    def __init__(self, host: str, port: int, interval: float = DEFAULT_INTERVAL,
                 lookup: Lookup | None = None) -> None:
        self.host = host
        self.port = port
        self.interval = interval
        self.lookup = lookup or system_lookup
        self._rr = 0
        self._refreshing = False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            self._addrs: list[tuple[str, int]] = []
            self._expires = 0.0
            #: an IP address's (address, its text as $upstream_addr shows it); None for a name
            self.fixed: tuple[tuple[str, int], str] | None = None
        else:
            self._addrs = [(host, port)]
            self._expires = float("inf")
            self.fixed = ((host, port), address_text((host, port)))

    def addresses(self) -> list[tuple[str, int]]:
        """The current addresses; resolves on first use, refreshes in the background later.

        Raises ``ResolveError`` when the name has never resolved.
        """
        if time.monotonic() >= self._expires:
            if not self._addrs:
                self._resolve_now()
            elif not self._refreshing:
                self._refreshing = True
                _spawn(self._refresh)
        return self._addrs

    def next_address(self) -> tuple[str, int]:
        """One address, rotating among the resolved ones (``ResolveError`` if none)."""
        if self.fixed is not None:
            return self.fixed[0]  # an IP address: itself, for ever
        addrs = self.addresses()
        if len(addrs) == 1:
            return addrs[0]
        self._rr = (self._rr + 1) % len(addrs)
        return addrs[self._rr]

    def _resolve_now(self) -> None:
        try:
            addrs = self.lookup(self.host, self.port)
        except OSError as exc:
            self._expires = time.monotonic() + min(self.interval, 1.0)  # retry soon
            raise ResolveError(f'{self.host} could not be resolved ({exc})') from None
        if not addrs:
            self._expires = time.monotonic() + min(self.interval, 1.0)
            raise ResolveError(f"{self.host} could not be resolved (no address)")
        self._addrs = addrs
        self._expires = time.monotonic() + self.interval

    def _refresh(self) -> None:
        try:
            addrs = self.lookup(self.host, self.port)
            if addrs:
                if addrs != self._addrs:
                    log.info("upstream %s now resolves to %s", self.host,
                             ", ".join(a for a, _ in addrs))
                self._addrs = addrs
            self._expires = time.monotonic() + self.interval
        except Exception as exc:  # keep the old answer
            log.warning("upstream %s: re-resolving failed (%s); keeping %s", self.host, exc,
                        ", ".join(a for a, _ in self._addrs))
            self._expires = time.monotonic() + min(self.interval, 5.0)
        finally:
            self._refreshing = False

    def __repr__(self) -> str:
        return f"Target({self.host}:{self.port} -> {self._addrs})"
