"""The proxy feature's configuration: ``proxy_pass`` and its location keys, ``[upstream.NAME]``.

``FEATURE`` is what ``edgeworker.config`` composes: the location keys (``proxy_pass``,
``proxy_set_header``, ``proxy_redirect``, ``proxy_ssl_*`` for ``https://`` upstreams,
``proxy_next_upstream*``), their checks, the ``[upstream.NAME]`` table, and the build function
(``edgeworker.proxy.build:make_content``).

Keys:
    proxy_pass: ``"http://UPSTREAM[/prefix]"`` or ``"http://host:port[/prefix]"``;
        ``https://`` for TLS to the upstream (nginx ``proxy_pass``)
    proxy_set_header: request fields sent to the upstream, values with ``$variables``; an
        empty value removes the field (nginx ``proxy_set_header``)
    proxy_redirect: rewrites the upstream's ``Location``/``Refresh`` URLs: ``"default"``,
        ``"off"``, or a list of ``"default"`` and ``["redirect", "replacement"]`` pairs (nginx
        ``proxy_redirect``)
    proxy_ssl_verify: verify an ``https://`` upstream's certificate (nginx
        ``proxy_ssl_verify``, off by default there)
    proxy_ssl_name: the name sent (SNI) and verified; ``""``: each server's own host name
    proxy_ssl_trusted_certificate: PEM file of the CAs to trust instead of the system's
    proxy_ssl_certificate: a client certificate (PEM) shown to the upstream (mutual TLS),
        with ``proxy_ssl_certificate_key``
    proxy_ssl_certificate_key: the key of ``proxy_ssl_certificate`` (PEM)
    proxy_next_upstream: the failures after which the next server is tried: ``error``,
        ``timeout``, ``invalid_header``, ``http_500``, ``http_502``, ``http_503``,
        ``http_504``, ``http_403``, ``http_404``, ``http_429``, ``non_idempotent``, or
        ``"off"``
    proxy_next_upstream_tries: at most this many attempts (0: one per server of the group)
    proxy_next_upstream_timeout: no new attempt once this long has passed since the first
        began (0: no limit)
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import msgspec

from ..confschema import (
    Base,
    Context,
    Duration,
    Feature,
    NonNegInt,
    PathStr,
    PosInt,
    StrList,
    Table,
    parse_host_port,
    suggest,
)

__all__ = [
    "BALANCE_METHODS",
    "FEATURE",
    "NEXT_UPSTREAM",
    "Upstream",
    "UpstreamServer",
    "parse_proxy_pass",
    "proxy_pass_tls",
]

BALANCE_METHODS: tuple[str, ...] = ("round_robin", "least_conn", "ip_hash", "hash", "random")


class UpstreamServer(Base):
    """One peer of an upstream (nginx ``server`` in ``upstream``).

    Keys:
        address: ``"host:port"``; a host name is resolved without blocking and refreshed
            every 30 s
        weight: the server's share of the requests
        max_fails: failed attempts within ``fail_timeout`` that mark the server down (0: never)
        fail_timeout: the window counting failures, and how long a server stays down
        backup: gets requests only when every other server is down or was tried (not with
            ``ip_hash``, ``hash`` or ``random``)
        max_conns: at most this many requests in flight to the server, per worker (0: no
            limit)
    """

    address: str
    weight: PosInt = 1
    max_fails: NonNegInt = 1
    fail_timeout: Duration = Duration(10.0)
    backup: bool = False
    #: nginx ``max_conns``: at most this many requests in flight to the server, per worker
    #: (0: no limit)
    max_conns: NonNegInt = 0


class Upstream(Base):
    """``[upstream.NAME]``: a balanced group of peers. ``servers`` items are all
    ``UpstreamServer`` after loading (a plain string is an address with the defaults).

    Keys:
        servers: the peers: ``"host:port"`` or ``{ address, weight, max_fails, fail_timeout,
            backup, max_conns }`` each; at least one that is not a backup
        balance: ``"round_robin"`` (smooth weighted), ``"least_conn"``, ``"ip_hash"``,
            ``"hash"`` or ``"random"``
        hash: the key of ``balance = "hash"``, text with ``$variables`` (nginx ``hash KEY``)
        consistent: ``balance = "hash"`` with ketama consistent hashing (nginx
            ``hash KEY consistent``)
        two: ``balance = "random"`` picks two servers and sends to the less busy one (nginx
            ``random two least_conn``)
        keepalive: idle connections kept per worker (0: none; nginx ``keepalive``)
        connect_timeout: the longest wait for a connection: 504 after it (nginx
            ``proxy_connect_timeout``)
        read_timeout: the longest wait between two reads from the server: 504 after it
            (nginx ``proxy_read_timeout``)
        send_timeout: the longest wait between two writes to the server: 504 after it
            (nginx ``proxy_send_timeout``)
    """

    servers: tuple[UpstreamServer | str, ...]
    balance: str = "round_robin"
    #: the key of ``balance = "hash"`` (nginx ``hash KEY``): text with ``$variables``
    hash: str = ""
    #: ``balance = "hash"``: ketama consistent hashing (nginx ``hash KEY consistent``)
    consistent: bool = False
    #: ``balance = "random"``: pick two servers at random, send to the less busy one (nginx
    #: ``random two least_conn``)
    two: bool = False
    keepalive: NonNegInt = 32
    connect_timeout: Duration = Duration(5.0)
    read_timeout: Duration = Duration(60.0)
    send_timeout: Duration = Duration(60.0)
    name: str = msgspec.field(default="", name="__name__")

    def __post_init__(self) -> None:
        self.servers = tuple(
            UpstreamServer(address=s) if isinstance(s, str) else s for s in self.servers
        )


#: The values of ``proxy_next_upstream`` (nginx's, without ``updating``).
NEXT_UPSTREAM = (
    "error",
    "timeout",
    "invalid_header",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_403",
    "http_404",
    "http_429",
    "non_idempotent",
    "off",
)


def parse_proxy_pass(value: str, upstreams: dict[str, Any]) -> tuple[str | None, str, int, str]:
    """Parse ``proxy_pass`` into (upstream name or None, host, port, path prefix).

    ``"http://NAME[/prefix]"`` names an upstream when NAME (no port) is a key of ``upstreams``
    (host is then NAME and port 0); else ``"http://host:port[/prefix]"`` is one direct peer
    (the port is required, so a misspelt upstream name is an error). ``https://`` is the same
    with TLS to the upstream (see ``proxy_pass_tls``). The prefix is ``""`` when
    absent; as in nginx, a prefix replaces the part of the URI that matched the location.
    ``ValueError`` for another scheme or a malformed address.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(
            f'invalid proxy_pass "{value}": expected "http(s)://UPSTREAM" or '
            '"http(s)://host:port[/prefix]"'
        )
    authority, slash, path = rest.partition("/")
    prefix = slash + path
    if not authority:
        raise ValueError(f'invalid proxy_pass "{value}": missing host')
    if authority in upstreams:
        return authority, authority, 0, prefix
    if not re.search(r":\d*$", authority):
        hint = suggest(authority, upstreams)
        raise ValueError(
            f'invalid proxy_pass "{value}": no upstream named "{authority}" '
            + (f"{hint[1:]}" if hint else '(a direct address needs "host:port")')
        )
    host, port = parse_host_port(authority)
    return None, host, port, prefix


def proxy_pass_tls(value: str) -> bool:
    """True for an ``https://`` proxy_pass (TLS to the upstream)."""
    return value[:8].lower() == "https://"


def check_upstream(u: Upstream, path: str, ctx: Context) -> None:
    """The checks of one ``[upstream.NAME]``."""
    if not u.servers:
        ctx.err(f"{path}.servers", "an upstream needs at least one server")
    if u.balance not in BALANCE_METHODS:
        ctx.err(
            f"{path}.balance",
            f'invalid balance "{u.balance}": expected one of '
            + ", ".join(BALANCE_METHODS)
            + suggest(u.balance, BALANCE_METHODS),
        )
    for i, s in enumerate(u.servers):
        assert isinstance(s, UpstreamServer)
        try:
            parse_host_port(s.address)
        except ValueError as e:
            ctx.err(f"{path}.servers[{i}]", str(e))
        if s.backup and u.balance in ("ip_hash", "hash", "random"):
            ctx.err(f"{path}.servers[{i}]", f'backup servers cannot be used with "{u.balance}"')
    if u.balance == "hash" and not u.hash:
        ctx.err(f"{path}.hash", 'balance = "hash" needs a key, e.g. hash = "$request_uri"')
    elif u.balance != "hash" and (u.hash or u.consistent):
        ctx.err(f"{path}.hash" if u.hash else f"{path}.consistent", 'only for balance = "hash"')
    if u.two and u.balance != "random":
        ctx.err(f"{path}.two", 'only for balance = "random"')
    if u.servers and all(isinstance(s, UpstreamServer) and s.backup for s in u.servers):
        ctx.err(f"{path}.servers", "an upstream needs at least one non-backup server")


def _check_redirect(value: Any, path: str, ctx: Context) -> None:
    items = (value,) if isinstance(value, str) else value
    for i, item in enumerate(items):
        where = path if isinstance(value, str) else f"{path}[{i}]"
        if isinstance(item, str):
            if item == "off" and isinstance(value, str):
                continue
            if item != "default":
                ctx.err(
                    where,
                    f'invalid value "{item}": expected "default", "off" or '
                    '["redirect", "replacement"]' + suggest(item, ("default", "off")),
                )
        elif not item[0]:
            ctx.err(where, "the redirect to replace is empty")
        elif item[0].startswith("~"):
            ctx.err(where, "regular expressions are not supported in proxy_redirect")


def _why(e: OSError | ssl.SSLError) -> Any:
    return getattr(e, "strerror", None) or e


def check_location(loc: Any, lp: str, ctx: Context) -> None:
    """The checks of a location's proxy keys (``proxy_pass`` names a declared upstream or a
    ``host:port``; the TLS files load; the ``proxy_next_upstream`` values are known)."""
    if loc.proxy_pass is not None:
        try:
            parse_proxy_pass(loc.proxy_pass, ctx.tables["upstream"])
        except ValueError as e:
            ctx.err(f"{lp}.proxy_pass", str(e))
    _check_redirect(loc.proxy_redirect, f"{lp}.proxy_redirect", ctx)
    ca = loc.proxy_ssl_trusted_certificate
    if ca is not None:
        try:
            ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as e:
            ctx.err(f"{lp}.proxy_ssl_trusted_certificate", f"cannot load {ca}: {_why(e)}")
    cert, key = loc.proxy_ssl_certificate, loc.proxy_ssl_certificate_key
    if (cert is None) != (key is None):
        ctx.err(
            f"{lp}.proxy_ssl_certificate",
            "proxy_ssl_certificate and proxy_ssl_certificate_key go together",
        )
    elif cert is not None:
        try:
            ssl.create_default_context().load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            ctx.err(f"{lp}.proxy_ssl_certificate", f"cannot load {cert} with {key}: {_why(e)}")
    bad = [t for t in loc.proxy_next_upstream if t not in NEXT_UPSTREAM]
    if bad:
        ctx.err(
            f"{lp}.proxy_next_upstream",
            f'invalid value "{bad[0]}": expected '
            + ", ".join(f'"{t}"' for t in NEXT_UPSTREAM)
            + suggest(bad[0], NEXT_UPSTREAM),
        )
    elif "off" in loc.proxy_next_upstream and len(loc.proxy_next_upstream) > 1:
        ctx.err(f"{lp}.proxy_next_upstream", '"off" cannot be combined with other values')
    ctx.check_header_names(f"{lp}.proxy_set_header", loc.proxy_set_header)


FEATURE = Feature(
    content="edgeworker.proxy.build:make_content",
    fields=(
        ("proxy_pass", str | None, None),
        ("proxy_set_header", dict[str, str], {}),
        # nginx proxy_redirect: "default", "off", or a list of "default" and
        # [redirect, replacement] pairs rewriting the upstream's Location/Refresh
        ("proxy_redirect", str | tuple[str | tuple[str, str], ...], "default"),
        # https:// proxy_pass: verify the upstream's certificate (nginx proxy_ssl_verify,
        # whose default is off: edgeworker verifies unless told not to)
        ("proxy_ssl_verify", bool, True),
        # the name sent (SNI) and verified; "" means each server's own host name
        ("proxy_ssl_name", str, ""),
        # PEM file of the CAs to trust instead of the system's
        ("proxy_ssl_trusted_certificate", PathStr | None, None),
        # the client certificate (PEM) shown to the upstream, and its key: mutual TLS
        ("proxy_ssl_certificate", PathStr | None, None),
        ("proxy_ssl_certificate_key", PathStr | None, None),
        # nginx proxy_next_upstream: the failures after which the next server is tried
        ("proxy_next_upstream", StrList, StrList(("error", "timeout"))),
        # at most this many attempts (0: one per server)
        ("proxy_next_upstream_tries", NonNegInt, 0),
        # no new attempt once this long has passed since the first one began (0: no limit)
        ("proxy_next_upstream_timeout", Duration, Duration(0.0)),
    ),
    check=check_location,
    tables=(Table("upstream", Upstream, check_upstream),),
)
