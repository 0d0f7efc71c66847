"""Request routing compiled from the Config: server selection and location matching (nginx rules).

Built once in the master (``Router.from_config``) and inherited by the workers through fork;
the per-request methods do no allocation beyond their result:

- ``Router.find_server(local_addr, host)``: the connection's local address picks the candidate
  servers (those listening on exactly that address; if none, those listening on the wildcard
  address of that port), then ``Host`` picks one of them: exact name, longest leading wildcard
  (``*.example.com``, ``.example.com``), longest trailing wildcard (``www.example.*``), first
  matching regex (``~^www\\d+\\.example\\.com$``), else the default server (the first one
  listed for that address). Hosts are compared lower-cased, without port and trailing dot.
- ``ServerRoute.find_location(uri)``: ``=`` exact (a dict lookup) wins; else the longest prefix
  (precomputed, longest first); if it is ``^~`` it wins; else the first regex in file order that
  matches (``~`` case-sensitive, ``~*`` insensitive; searched, not anchored, as in nginx),
  with its captures; else the longest prefix; else None (404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import Config, Location, Server, parse_listen, parse_match

__all__ = ["Router", "ServerRoute", "normalize_host"]

_CACHE_MAX = 1024


def normalize_host(host: str | None) -> str:
    """Lower-case ``host``, drop its ``:port`` and a trailing dot; ``""`` for None.

    ``"[::1]:8080"`` becomes ``"[::1]"``.
    """
    if not host:
        return ""
    h = host.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        h = h[: end + 1] if end >= 0 else h
    else:
        colon = h.rfind(":")
        if colon >= 0:
            h = h[:colon]
    return h.rstrip(".")


#: find_location remembers this many answers per server, for URIs up to this length
FOUND_MAX = 1024
FOUND_URI_MAX = 256


@dataclass(eq=False)
class ServerRoute:
    """One ``[[server]]`` compiled for location lookup.

    ``path`` is the config path (``server[0]``), ``index`` its position in the config.
    """

    server: Server
    index: int
    path: str
    exact: dict[str, Location] = field(default_factory=dict)
    #: (prefix, location, stops regex search) sorted longest first; file order among equals.
    prefixes: list[tuple[str, Location, bool]] = field(default_factory=list)
    regexes: list[tuple[re.Pattern[str], Location]] = field(default_factory=list)
    #: recent answers of find_location by URI (the route never changes once built; a reload
    #: builds new routes): one dict lookup instead of the prefix and regex searches
    found: dict[str, tuple[Location, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def from_server(cls, server: Server, index: int) -> ServerRoute:
        """Compile ``server``'s locations; ``ValueError`` on an invalid ``match``."""
        route = cls(server=server, index=index, path=server.path or f"server[{index}]")
        for loc in server.location:
            modifier, pattern = parse_match(loc.match)
            if modifier == "=":
                route.exact.setdefault(pattern, loc)
            elif modifier in ("", "^~"):
                route.prefixes.append((pattern, loc, modifier == "^~"))
            else:
                flags = re.IGNORECASE if modifier == "~*" else 0
                route.regexes.append((re.compile(pattern, flags), loc))
        route.prefixes.sort(key=lambda item: -len(item[0]))
        return route

    def find_location(self, uri: str) -> tuple[Location, tuple[str, ...]] | None:
        """The location serving ``uri`` (a normalized path) and the regex captures
        (``()`` unless a regex location matched; groups that did not take part are ``""``).
        None when nothing matches: answer 404."""
        found = self.found.get(uri)
        if found is not None:
            return found
        found = self._search(uri)
        if found is not None and len(uri) <= FOUND_URI_MAX:
            if len(self.found) >= FOUND_MAX:  # random URIs cannot grow it: start over
                self.found.clear()
            self.found[uri] = found
        return found

    def _search(self, uri: str) -> tuple[Location, tuple[str, ...]] | None:
        loc = self.exact.get(uri)
        if loc is not None:
            return loc, ()
        best: Location | None = None
        for prefix, ploc, stop in self.prefixes:
            if uri.startswith(prefix):
                if stop:
                    return ploc, ()
                best = ploc
                break
        for rx, rloc in self.regexes:
            m = rx.search(uri)
            if m is not None:
                return rloc, tuple(g or "" for g in m.groups())
        if best is not None:
            return best, ()
        return None


@dataclass(eq=False)
class _NameTable:
    """The servers sharing one listen address and their server_name lookup structures."""

    default: ServerRoute
    exact: dict[str, ServerRoute] = field(default_factory=dict)
    #: (".example.com", bare "example.com" also matches, route), longest suffix first.
    leading: list[tuple[str, bool, ServerRoute]] = field(default_factory=list)
    #: ("www.example.", route), longest first.
    trailing: list[tuple[str, ServerRoute]] = field(default_factory=list)
    regexes: list[tuple[re.Pattern[str], ServerRoute]] = field(default_factory=list)
    cache: dict[str | None, ServerRoute] = field(default_factory=dict)
    #: the one server of this address, when there is only one (it gets every request)
    only: ServerRoute | None = None
    count: int = 0

    def add(self, route: ServerRoute) -> None:
        self.count += 1
        for name in route.server.server_name:
            if name.startswith("~"):
                self.regexes.append((re.compile(name[1:], re.IGNORECASE), route))
            elif name.startswith("*."):
                self.leading.append((name[1:], False, route))
            elif name.startswith(".") and len(name) > 1:
                self.leading.append((name, True, route))
            elif name.endswith(".*"):
                self.trailing.append((name[:-1], route))
            else:
                self.exact.setdefault(name, route)

    def finish(self) -> None:
        self.leading.sort(key=lambda item: -len(item[0]))
        self.trailing.sort(key=lambda item: -len(item[0]))
        self.only = self.default if self.count == 1 else None

    def lookup(self, raw_host: str | None) -> ServerRoute:
        """The server for a raw ``Host`` value (cached by the raw value, bounded)."""
        route = self.cache.get(raw_host)
        if route is not None:
            return route
        route = self._lookup(normalize_host(raw_host))
        if raw_host is not None and len(raw_host) > 255:
            return route
        if len(self.cache) >= _CACHE_MAX:
            self.cache.clear()
        self.cache[raw_host] = route
        return route

    def _lookup(self, host: str) -> ServerRoute:
        route = self.exact.get(host)
        if route is not None:
            return route
        for suffix, bare_too, route in self.leading:
            if host.endswith(suffix) and len(host) > len(suffix):
                return route
            if bare_too and host == suffix[1:]:
                return route
        for prefix, route in self.trailing:
            if host.startswith(prefix) and len(host) > len(prefix):
                return route
        for rx, route in self.regexes:
            if rx.search(host):
                return route
        return self.default


class Router:
    """Server selection and location lookup for a whole Config (see the module docstring)."""

    def __init__(self, routes: list[ServerRoute]) -> None:
        """Build the address tables from compiled server routes, in config order."""
        self.routes = routes
        self._by_addr: dict[tuple[str, int], _NameTable] = {}
        for route in routes:
            for listen in route.server.listen:
                addr = parse_listen(listen)
                table = self._by_addr.get(addr)
                if table is None:
                    table = self._by_addr[addr] = _NameTable(default=route)
                table.add(route)
        for table in self._by_addr.values():
            table.finish()

    @classmethod
    def from_config(cls, cfg: Config) -> Router:
        """Compile every server of ``cfg``."""
        return cls([ServerRoute.from_server(s, i) for i, s in enumerate(cfg.server)])

    def find_server(self, local_addr: tuple[str, int], host: str | None) -> ServerRoute:
        """The server for a request that arrived on ``local_addr`` (the connection's
        ``getsockname()``; IPv4-mapped IPv6 addresses are unmapped) with this ``Host``."""
        return self.table_for(local_addr).lookup(host)

    def table_for(self, local_addr: tuple[str, int]) -> _NameTable:
        """The servers of the address a connection arrived on (fixed for its lifetime: the
        connection looks it up once)."""
        addr_host, port = local_addr[0], local_addr[1]
        table = self._by_addr.get((addr_host, port))
        if table is None:
            if addr_host.startswith("::ffff:"):
                addr_host = addr_host[7:]
                table = self._by_addr.get((addr_host, port))
            if table is None:
                first, second = ("::", "0.0.0.0") if ":" in addr_host else ("0.0.0.0", "::")
                table = self._by_addr.get((first, port)) or self._by_addr.get((second, port))
            if table is None:
                # an address no server listens on (cannot happen for our own sockets)
                table = _NameTable(default=self.routes[0], only=self.routes[0])
        return table
