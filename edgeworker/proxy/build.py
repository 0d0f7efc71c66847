"""The proxy feature's build function: ``proxy_pass`` to ``[upstream.NAME]`` groups or
``http://host:port``.

``make_content(loc, app)`` is the build function of ``edgeworker.proxy.schema.FEATURE``; it
runs once per worker (after gevent patching) and returns the location's content handler.
Upstream groups (balancer state, keep-alive pool, resolved addresses) are per worker and shared
by every location of the worker's config that names them. ``stats()`` gives this worker's view
of every group, for the status page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..confschema import parse_match
from .balancer import Group, Peer
from .client import tls_context
from .handler import ProxyHandler
from .resolver import Target
from .schema import Upstream, parse_proxy_pass, proxy_pass_tls

__all__ = ["Group", "Peer", "ProxyHandler", "groups_for", "make_content", "stats"]

# per worker: id(app) -> {name: Group}; a worker builds one App per config generation
_GROUPS: dict[int, dict[str, Group]] = {}
_CURRENT: list[dict[str, Group]] = [{}]


def groups_for(app: Any) -> dict[str, Group]:
    """The ``Group`` of every ``[upstream.NAME]`` of ``app.cfg`` (built on first use)."""
    groups = _GROUPS.get(id(app))
    if groups is None:
        groups = {name: Group.from_config(name, up) for name, up in app.cfg.upstream.items()}
        _GROUPS.clear()  # an older generation's groups are no longer used by this worker
        _GROUPS[id(app)] = groups
        _CURRENT[0] = groups
    return groups


def _direct_group(app: Any, host: str, port: int) -> Group:
    key = f"{host}:{port}"
    groups = groups_for(app)
    group = groups.get("\0" + key)
    if group is None:
        d = Upstream(servers=(key,))  # the [upstream] defaults: timeouts, keepalive 32
        peer = Peer(key, Target(host, port), max_fails=0)
        group = Group(
            key,
            [peer],
            "round_robin",
            d.keepalive,
            float(d.connect_timeout),
            float(d.read_timeout),
            float(d.send_timeout),
        )
        groups["\0" + key] = group
    return group


def make_content(loc: Any, app: Any) -> Callable[[Any], None]:
    """The content handler for ``loc.proxy_pass`` (see ``ProxyHandler``)."""
    name, host, port, prefix = parse_proxy_pass(loc.proxy_pass, app.cfg.upstream)
    https = proxy_pass_tls(loc.proxy_pass)
    if name is not None:
        group = groups_for(app)[name]
        proxy_host = name
    else:
        group = _direct_group(app, host, port)
        shown = f"[{host}]" if ":" in host else host
        proxy_host = shown if port == (443 if https else 80) else f"{shown}:{port}"
    tls = None
    if https:
        context = tls_context(
            loc.proxy_ssl_verify,
            loc.proxy_ssl_trusted_certificate,
            loc.proxy_ssl_certificate,
            loc.proxy_ssl_certificate_key,
        )
        tls = (context, loc.proxy_ssl_name)
    modifier, pattern = parse_match(loc.match)
    match_prefix = pattern if modifier in ("", "^~", "=") else None
    if prefix and match_prefix is None:
        app.log.warning(
            "%s: proxy_pass with a URI part in a regex location: the URI part is "
            "ignored, the request URI is passed unchanged",
            loc.path,
        )
        prefix = ""
    return ProxyHandler(
        group,
        proxy_host,
        prefix or None,
        match_prefix,
        dict(loc.proxy_set_header),
        loc.path,
        tuple(loc.proxy_next_upstream),
        loc.proxy_next_upstream_tries,
        redirect_rules(loc.proxy_redirect, loc.proxy_pass, prefix, match_prefix),
        tls,
        float(loc.proxy_next_upstream_timeout),
    )


def redirect_rules(
    setting: Any, proxy_pass: str, prefix: str | None, match_prefix: str | None
) -> tuple[tuple[bytes, str], ...]:
    """The ``(redirect, replacement)`` rules of ``proxy_redirect``, in order (nginx).

    ``"default"`` is the ``proxy_pass`` URL as written, replaced by the location's prefix; without
    a URI part, ``proxy_pass`` + ``/`` replaced by ``/``. ``"off"`` is no rule.
    """
    items = (setting,) if isinstance(setting, str) else setting
    rules: list[tuple[bytes, str]] = []
    for item in items:
        if item == "off":
            return ()
        if item == "default":
            if prefix and match_prefix:
                rules.append((proxy_pass.encode("latin-1"), match_prefix))
            else:  # no URI part (or one a regex location ignores): scheme://authority/
                base = "/".join(proxy_pass.split("/", 3)[:3]) + "/"
                rules.append((base.encode("latin-1"), "/"))
        else:
            rules.append((item[0].encode("latin-1"), item[1]))
    return tuple(rules)


def stats() -> dict[str, dict]:
    """This worker's view of every upstream group (peers, state, active, requests, fails)."""
    return {name: g.stats() for name, g in _CURRENT[0].items() if not name.startswith("\0")}
