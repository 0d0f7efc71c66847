"""HTTP/2's configuration: the ``http2`` flag of ``listen`` and the ``http2_*`` keys.

``listen = ["0.0.0.0:443 ssl http2"]``: TLS with ALPN offering ``h2`` and ``http/1.1``;
``listen = ["127.0.0.1:8080 http2"]``: cleartext HTTP/2 with prior knowledge beside HTTP/1.1.
As nginx's listen options, the flag belongs to the address: a server that listens on an address
another server flags ``http2`` serves HTTP/2 there too (its ``listen_http2`` lists it). ALPN is
offered by a server's certificate context, so a server's TLS addresses are either all HTTP/2
or none (an error names the server otherwise).

``http2_max_concurrent_streams`` (128, nginx's): the streams a client may have open at once
(SETTINGS_MAX_CONCURRENT_STREAMS; more are refused with RST_STREAM REFUSED_STREAM). The other
limits are the ``[http]`` ones HTTP/1.1 uses (see docs/http2.md).

Keys:
    http2_max_concurrent_streams: the streams an HTTP/2 client may have open at once on a
        connection (SETTINGS_MAX_CONCURRENT_STREAMS); one more is refused with RST_STREAM
        REFUSED_STREAM, the connection stays. The default server of the address decides
"""

from __future__ import annotations

from typing import Any

from ..confschema import Context, PosInt, ServerFeature, parse_listen

__all__ = ["FEATURE", "LISTEN_FLAGS", "http2_addresses"]

#: The words accepted after a listen address.
LISTEN_FLAGS: tuple[str, ...] = ("http2",)

_FIELDS: tuple[tuple[str, Any, Any], ...] = (("http2_max_concurrent_streams", PosInt, 128),)


def http2_addresses(servers: Any) -> set[tuple[str, int]]:
    """The (host, port) of every address that serves HTTP/2 (``Server.listen_http2``)."""
    return {parse_listen(text) for server in servers for text in server.listen_http2}


def _check(servers: list[Any], http: Any, ctx: Context) -> None:
    flagged = {text for server in servers for text in server.listen_http2}
    for server in servers:
        FEATURE.inherit(server, http)
        server.listen_http2 = tuple(a for a in server.listen if a in flagged)
        tls = set(server.listen_ssl)
        h2_tls = tls.intersection(server.listen_http2)
        if h2_tls and h2_tls != tls:
            plain = sorted(tls - h2_tls)
            ctx.err(
                f"{server.path}.listen",
                f"{', '.join(plain)} is ssl without http2 while {sorted(h2_tls)[0]} has http2: "
                "a server's TLS addresses all offer HTTP/2 or none do (ALPN is offered by the "
                "server's certificate)",
            )


#: ``[http]`` and ``[[server]]`` http2_* keys, the ``http2`` listen flag, their check.
FEATURE = ServerFeature(fields=_FIELDS, check=_check, listen_flags=LISTEN_FLAGS)
