"""``edgeworker check``: like ``nginx -t``. Load and validate the config, then import every
handler it names, without running any of them (no ``init``).

``check(path)`` returns ``(config, [])`` when all is well, else ``(config or None, messages)``,
each message naming its place in the file, the config path and the cause, e.g.
``/etc/ew.toml:14: server[0].location[2].access: cannot import "app:auth": No module named
'app'`` (``ConfigError.messages``: the text to show as it is).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

from . import runtime
from .config import PHASES, Config, load
from .errors import ConfigError
from .handlers import HandlerError, add_python_path, resolve
from .tls import context as tls_context

__all__ = ["check", "handler_specs"]

_ONE = (object(),)
_THREE = (object(), b"", False)
_TWO = ("example.com", object())  # ssl_certificate_by: fn(server_name, client)


def handler_specs(cfg: Config) -> Iterator[tuple[str, str, tuple[object, ...] | None]]:
    """Every handler named in ``cfg``, in file order, as (config path, spec, call arguments).

    Call arguments are placeholders of the handler's calling convention (``fn(req)``, or
    ``fn(req, chunk, eof)`` for body_filter), None for the process hooks. Location phase
    handlers inherited from ``[http]`` are listed once, under ``http.<phase>``.
    """
    for key in ("init", "init_worker", "exit_worker"):
        for spec in getattr(cfg.main, key):
            yield f"main.{key}", spec, None
    for key in PHASES:
        for spec in getattr(cfg.http, key):
            yield f"http.{key}", spec, _THREE if key == "body_filter" else _ONE
    for server in cfg.server:
        if server.ssl_certificate_by is not None and server.listen_ssl:
            yield f"{server.path}.ssl_certificate_by", server.ssl_certificate_by, _TWO
        for loc in server.location:
            for key in ("rewrite", "access"):
                yield from _own(cfg, loc, key, _ONE)
            if loc.content is not None:
                yield f"{loc.path}.content", loc.content, _ONE
            for key in ("header_filter", "body_filter", "log"):
                yield from _own(cfg, loc, key, _THREE if key == "body_filter" else _ONE)


def _own(
    cfg: Config, loc: Any, key: str, args: tuple[object, ...]
) -> Iterator[tuple[str, str, tuple[object, ...]]]:
    specs = getattr(loc, key)
    if specs is getattr(cfg.http, key):  # inherited: the loader shares http's tuple
        return
    for spec in specs:
        yield f"{loc.path}.{key}", spec, args


def _signature_problem(fn: Callable[..., Any], args: tuple[object, ...]) -> str | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C callables without a signature
        return None
    try:
        sig.bind(*args)
    except TypeError as e:
        shape = {3: "fn(req, chunk, eof)", 2: "fn(server_name, client)"}.get(len(args), "fn(req)")
        return f"cannot be called as {shape}: {e}"
    return None


def check(path: str, warnings: list[str] | None = None) -> tuple[Config | None, list[str]]:
    """Validate the config at ``path`` and import every handler it names.

    Returns (config, errors), each error ``FILE:LINE: path: cause``. ``config`` is None when
    the file itself is invalid (then the errors are the loader's). Otherwise each handler is imported from ``main.python_path``
    (added to ``sys.path``); a spec that cannot be imported, names a missing attribute, is not
    callable, or cannot be called the way its phase calls it is an error at its config path.
    ``file:`` key sources of ``jwt`` must be readable. The TLS certificates and keys are
    loaded as the master loads them (each readable, PEM, each key its certificate's); what
    deserves a warning only (a certificate expired or not yet valid) is appended to
    ``warnings``. Runs no handler and no ``init``.
    """
    try:
        cfg = load(path)
    except ConfigError as e:
        return None, list(e.messages)
    errors: list[str] = []
    try:
        found = tls_context.build(cfg)
    except ConfigError as e:
        errors.extend(e.errors)
    else:
        if warnings is not None:
            warnings.extend(found.warnings)
    # handler modules are imported under the configuration checked, as a worker imports them
    # (a metric they define may differ from the one the running server defined)
    runtime.config = cfg
    add_python_path(cfg.main.python_path)
    cache: dict[str, Callable[..., Any] | str] = {}
    for where, spec, args in handler_specs(cfg):
        found = cache.get(spec)
        if found is None:
            try:
                found = resolve(spec)
            except HandlerError as e:
                found = str(e)
                if isinstance(e.__cause__, ModuleNotFoundError):
                    found += f" (python_path: {', '.join(cfg.main.python_path)})"
            cache[spec] = found
        if isinstance(found, str):
            errors.append(f"{where}: {found}")
        elif args is not None and (problem := _signature_problem(found, args)):
            errors.append(f'{where}: handler "{spec}" {problem}')
    from .phases import ACCESS_FEATURES, CONTENT_SOURCES, _feature, _ResolveError

    for server in cfg.server:
        for loc in server.location:
            for key, factory in ACCESS_FEATURES + CONTENT_SOURCES:
                if getattr(loc, key, None):
                    try:
                        _feature(factory, key, loc.path)
                    except _ResolveError as e:
                        errors.append(str(e))
            if loc.jwt is None:
                continue
            unreadable = False
            for key in ("secret", "public_key"):
                value = getattr(loc.jwt, key)
                if isinstance(value, str) and value.startswith("file:"):
                    file = value[5:]
                    if not os.access(file, os.R_OK):
                        why = "does not exist" if not os.path.exists(file) else "is not readable"
                        errors.append(f'{loc.path}.jwt.{key}: file "{file}" {why}')
                        unreadable = True
            if not unreadable:
                errors.extend(_jwt_key_problems(cfg, loc))
    return cfg, ConfigError(cfg.file, errors).messages


def _jwt_key_problems(cfg: Config, loc: Any) -> list[str]:
    """Build the location's JWT verifier as a worker would (keys loaded, matched to the
    algorithms; no network): an unusable key is reported now, not at worker boot."""

    class _App:  # what the jwt feature factory reads of the worker's App
        def __init__(self, cfg: Config) -> None:
            self.cfg = cfg

    try:
        from .lib.jwt import make_access
    except ImportError:
        return []
    try:
        make_access(loc, _App(cfg))
    except ConfigError as e:
        return list(e.errors)
    return []
