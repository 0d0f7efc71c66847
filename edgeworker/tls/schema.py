"""TLS termination's configuration: the ``ssl_*`` keys of ``[[server]]`` (and ``[http]``), and
the ``ssl`` flag of ``listen``.

``FEATURE`` is what ``edgeworker.config`` composes: the keys (nginx's names), accepted in
``[http]`` as defaults every server inherits and in ``[[server]]``; the ``ssl`` listen flag;
and the check run once all servers are decoded. After loading, each server carries its
effective values (its own or ``[http]``'s); ``ssl_certificate_by`` is a ``"module:function"``
handler (resolved in the workers, see ``edgeworker.tls.connection``); file paths are absolute; ``ssl_certificate`` and
``ssl_certificate_key`` are tuples of the same length; ``ssl_handshake_timeout`` is seconds
(``[http] client_header_timeout`` when not set). The files themselves are read when the
contexts are built (``edgeworker.tls.context``), by ``edgeworker check``, start and reload.

Keys:
    ssl_certificate: the certificate (PEM, its chain may follow), or a list (an RSA and an
        ECDSA one side by side); required on an ``ssl`` listener unless
        ``ssl_certificate_by`` is set
    ssl_certificate_key: its private key (PEM, not encrypted); a list as long as
        ``ssl_certificate``, in the same order
    ssl_protocols: the protocol versions offered: ``TLSv1.2``, ``TLSv1.3``
    ssl_ciphers: TLS 1.2 cipher suites, OpenSSL syntax (default: Mozilla "intermediate")
    ssl_prefer_server_ciphers: the server's cipher order wins over the client's
    ssl_session_tickets: session resumption with tickets, on any worker
    ssl_session_timeout: how long a session can be resumed (at least ``1s``)
    ssl_client_certificate: PEM file of the CAs that sign client certificates (required with
        ``ssl_verify_client`` ``on`` and ``optional``)
    ssl_verify_client: ``"off"``, ``"on"`` (required), ``"optional"`` or
        ``"optional_no_ca"``
    ssl_verify_depth: how many intermediate CAs may stand between a client certificate and a
        CA of ``ssl_client_certificate``
    ssl_handshake_timeout: deadline for the first byte and the whole handshake; not set:
        ``[http] client_header_timeout``
    ssl_certificate_by: ``"module:function"`` choosing the certificate of each handshake
        (``ssl_certificate_by_lua``)
"""

from __future__ import annotations

from typing import Any

from ..confschema import (
    Context,
    Duration,
    PathStr,
    PosInt,
    ServerFeature,
    StrList,
    abspath,
    parse_listen,
    suggest,
)

__all__ = [
    "FEATURE",
    "INTERMEDIATE_CIPHERS",
    "LISTEN_FLAGS",
    "PROTOCOLS",
    "VERIFY_CLIENT",
    "client_settings",
    "tls_addresses",
]

#: Mozilla's "intermediate" TLS 1.2 cipher suites (TLS 1.3 suites are OpenSSL's defaults).
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)

#: The accepted ``ssl_protocols``.
PROTOCOLS: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
_REFUSED_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")

#: ``ssl_verify_client`` values (nginx's).
VERIFY_CLIENT: tuple[str, ...] = ("off", "on", "optional", "optional_no_ca")

#: The words accepted after a listen address.
LISTEN_FLAGS: tuple[str, ...] = ("ssl",)

#: How long a session resumes (also the lifetime TLS 1.3 tickets announce): nginx's default,
#: 5 minutes.
_SESSION_TIMEOUT = 300.0

_FIELDS: tuple[tuple[str, Any, Any], ...] = (
    ("ssl_certificate", StrList, StrList()),
    ("ssl_certificate_key", StrList, StrList()),
    ("ssl_protocols", StrList, StrList(PROTOCOLS)),
    ("ssl_ciphers", str, INTERMEDIATE_CIPHERS),
    ("ssl_prefer_server_ciphers", bool, False),
    ("ssl_session_tickets", bool, True),
    ("ssl_session_timeout", Duration, Duration(_SESSION_TIMEOUT)),
    ("ssl_client_certificate", PathStr | None, None),
    ("ssl_verify_client", str, "off"),
    ("ssl_verify_depth", PosInt, 1),
    ("ssl_handshake_timeout", Duration | None, None),
    ("ssl_certificate_by", str | None, None),
)


def client_settings(server: Any) -> tuple[str, str | None, int]:
    """What decides which client certificates a server accepts: a request whose ``Host``
    selects a server with other settings than the one TLS SNI selected is misdirected."""
    return server.ssl_verify_client, server.ssl_client_certificate, server.ssl_verify_depth


def _wildcard(host: str) -> str:
    return "::" if ":" in host else "0.0.0.0"


def tls_addresses(servers: Any) -> set[tuple[str, int]]:
    """The (host, port) of every address listened on with ``ssl`` (``Server.listen_ssl``): a
    listening socket bound to one of them is TLS (a specific address served by a wildcard's
    socket is TLS or plain as the wildcard is: the loader refuses a mix)."""
    out: set[tuple[str, int]] = set()
    for server in servers:
        for text in server.listen_ssl:
            out.add(parse_listen(text))
    return out


def _check(servers: list[Any], http: Any, ctx: Context) -> None:
    # which servers listen on each address, with ssl or without
    flags: dict[tuple[str, int], dict[bool, str]] = {}
    for server in servers:
        ssl_addrs = set(server.listen_ssl)
        for text in server.listen:
            flags.setdefault(parse_listen(text), {}).setdefault(text in ssl_addrs, server.path)
        FEATURE.inherit(server, http)
        if server.ssl_handshake_timeout is None:
            server.ssl_handshake_timeout = http.client_header_timeout
        _check_server(server, ctx, bool(ssl_addrs))
    for addr, kinds in flags.items():
        # a specific address on a port a wildcard of its family also listens on shares the
        # wildcard's socket: it must be TLS or plain as the wildcard is
        wild = flags.get((_wildcard(addr[0]), addr[1])) if addr[0] != _wildcard(addr[0]) else None
        merged = dict(kinds)
        for kind, path in (wild or {}).items():
            merged.setdefault(kind, path)
        if len(merged) == 2:
            shown = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
            ctx.err(
                f"{merged[True]}.listen",
                f"{shown} is ssl in {merged[True]} but plain in {merged[False]}: one address "
                "and port is either TLS or plain HTTP (a wildcard address shares its socket "
                "with the specific addresses of its port)",
            )


def _check_server(server: Any, ctx: Context, has_ssl: bool) -> None:
    sp = server.path
    server.ssl_certificate = tuple(abspath(ctx.base, p) for p in server.ssl_certificate)
    server.ssl_certificate_key = tuple(abspath(ctx.base, p) for p in server.ssl_certificate_key)
    certs, keys = server.ssl_certificate, server.ssl_certificate_key
    if server.ssl_certificate_by is not None:
        ctx.check_handlers(f"{sp}.ssl_certificate_by", (server.ssl_certificate_by,))
    if has_ssl and not certs and not keys and server.ssl_certificate_by is None:
        ctx.err(
            sp,
            "a server listening with ssl needs ssl_certificate and ssl_certificate_key "
            "(or ssl_certificate_by)",
        )
    elif len(certs) != len(keys):
        ctx.err(
            f"{sp}.ssl_certificate_key",
            f"{len(keys)} key(s) for {len(certs)} certificate(s): give one key per certificate, "
            "in the same order",
        )
    for proto in server.ssl_protocols:
        if proto in _REFUSED_PROTOCOLS:
            ctx.err(
                f"{sp}.ssl_protocols",
                f'"{proto}" is refused (insecure): use {" and ".join(PROTOCOLS)}',
            )
        elif proto not in PROTOCOLS:
            hint = suggest(proto, PROTOCOLS) or " (known: TLSv1.2, TLSv1.3)"
            ctx.err(f"{sp}.ssl_protocols", f'unknown protocol "{proto}"{hint}')
    if not server.ssl_protocols:
        ctx.err(f"{sp}.ssl_protocols", "at least one protocol is required")
    if server.ssl_verify_client not in VERIFY_CLIENT:
        ctx.err(
            f"{sp}.ssl_verify_client",
            f'invalid value "{server.ssl_verify_client}": expected one of '
            + ", ".join(VERIFY_CLIENT)
            + suggest(server.ssl_verify_client, VERIFY_CLIENT),
        )
    elif server.ssl_verify_client in ("on", "optional") and server.ssl_client_certificate is None:
        ctx.err(
            f"{sp}.ssl_verify_client",
            f'"{server.ssl_verify_client}" needs ssl_client_certificate (the CAs to verify '
            "client certificates with)",
        )
    if server.ssl_session_timeout < 1:
        ctx.err(
            f"{sp}.ssl_session_timeout",
            "must be at least 1s (OpenSSL counts session lifetimes in whole seconds)",
        )


#: ``[http]`` and ``[[server]]`` ssl_* keys, the ``ssl`` listen flag, their checks.
FEATURE = ServerFeature(fields=_FIELDS, check=_check, listen_flags=LISTEN_FLAGS)
