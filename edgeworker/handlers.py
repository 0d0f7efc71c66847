"""Importing handlers named ``"module:function"`` from the configured ``python_path``.

- ``add_python_path(paths)`` puts the import roots first on ``sys.path`` (and remembers them);
- ``resolve(spec)`` imports the module and returns the callable;
- ``purge_user_modules(paths)`` forgets every module loaded from under those roots, so the next
  import reads the files again (used on reload, and per request with ``code_cache = false``);
- ``resolve_fresh(spec)`` = purge the user's modules, then resolve (``code_cache = false``).

Errors name the spec: ``cannot import "app:auth": No module named 'app'``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Callable
from typing import Any

from .confschema import parse_handler
from .errors import HandlerError

__all__ = [
    "HandlerError",
    "add_python_path",
    "python_paths",
    "purge_user_modules",
    "resolve",
    "resolve_fresh",
]

_paths: list[str] = []


def add_python_path(paths: list[str] | tuple[str, ...]) -> None:
    """Put ``paths`` (absolute folders) at the front of ``sys.path``, in the given order,
    and remember them as the user's code roots. Paths already present are moved to the front."""
    for path in reversed([os.path.abspath(p) for p in paths]):
        while path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
        if path not in _paths:
            _paths.append(path)
    importlib.invalidate_caches()


def python_paths() -> list[str]:
    """The import roots registered by ``add_python_path`` so far."""
    return list(_paths)


def resolve(spec: str) -> Callable[..., Any]:
    """Import ``"module:function"`` and return the callable it names.

    The function part may be a dotted attribute path (``"app:Auth.check"``). Raises
    ``HandlerError`` (an ``ImportError``) for a malformed spec, a module that cannot be
    imported (including one that raises while executing: the message carries the exception),
    a missing attribute, or an object that is not callable.
    """
    try:
        module_name, attr_path = parse_handler(spec)
    except ValueError as e:
        raise HandlerError(spec, str(e)) from None
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise HandlerError(spec, str(e)) from e
    except Exception as e:  # the module's own code raised while being executed
        raise HandlerError(spec, _describe(e)) from e
    owner = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerError(spec, f'"{owner}" has no attribute "{part}"') from None
        owner = f"{owner}.{part}"
    if not callable(obj):
        raise HandlerError(spec, f"{type(obj).__name__} object is not callable")
    return obj


def _describe(exc: BaseException) -> str:
    """``"ZeroDivisionError: division by zero (app.py, line 3)"`` for an import-time error."""
    where = ""
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}, line {exc.lineno})"
        return f"SyntaxError: {exc.msg}{where}"
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


def _protected_roots() -> list[str]:
    """Folders whose modules are never purged even when a python_path contains them:
    the standard library, site-packages, and edgeworker's own packages."""
    roots = {os.path.dirname(os.path.abspath(__file__))}
    shm = sys.modules.get("shm")
    if shm is not None and getattr(shm, "__file__", None):
        roots.add(os.path.dirname(os.path.abspath(shm.__file__)))
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            roots.add(paths[key])
    return [os.path.realpath(r) for r in roots]


def _owner(real: str, roots: list[tuple[str, bool]]) -> bool:
    """True when the deepest root containing ``real`` is a user root."""
    best, user = -1, False
    for root, is_user in roots:
        if (real == root or real.startswith(root + os.sep)) and len(root) > best:
            best, user = len(root), is_user
    return user


def purge_user_modules(
    paths: list[str] | tuple[str, ...] | None = None, *, drop_bytecode: bool = True
) -> list[str]:
    """Remove from ``sys.modules`` every module whose file (or package folder) lies under
    ``paths`` (default: the roots given to ``add_python_path``). Returns their names, sorted.

    Modules of the standard library, site-packages and edgeworker itself are kept even when
    a path contains them (``python_path = ["."]`` at the root of a project holding its
    virtualenv). The next ``import`` (or ``resolve``) executes their code again.

    With ``drop_bytecode`` their cached ``.pyc`` files are deleted too (errors ignored):
    Python validates a ``.pyc`` by the source's mtime in whole seconds and its size, so an
    edit within the same second that keeps the size would otherwise run the old code.
    """
    user_roots = [os.path.realpath(p) for p in (_paths if paths is None else paths)]
    if not user_roots:
        return []
    roots = [(r, True) for r in user_roots] + [(r, False) for r in _protected_roots()]
    gone: list[str] = []
    for name, module in list(sys.modules.items()):
        if module is None:
            continue
        file = getattr(module, "__file__", None)
        if file:
            hit = _owner(os.path.realpath(file), roots)
        else:  # namespace package: look at its search locations
            locations = getattr(module, "__path__", None) or []
            hit = any(_owner(os.path.realpath(loc), roots) for loc in list(locations))
        if hit:
            del sys.modules[name]
            gone.append(name)
            if drop_bytecode and file and file.endswith(".py"):
                try:
                    os.remove(importlib.util.cache_from_source(file))
                except (OSError, ValueError, NotImplementedError):
                    pass
    importlib.invalidate_caches()
    return sorted(gone)


def resolve_fresh(spec: str) -> Callable[..., Any]:
    """Purge the user's modules (those under the registered python_path), then ``resolve``:
    the handler runs the code currently on disk (``code_cache = false``)."""
    purge_user_modules()
    return resolve(spec)
