"""Turns off single C entry points in the process it runs in (bench/instructions.py ``--disable``).

``BENCH_ACCEL_OFF`` names the entry points, comma-separated (see ``ENTRY_POINTS``). Each is
turned off where its module binds it, right after that module runs: the module's name for it is
set to what it holds when the C module is not built, so the pure-Python twin runs instead.
Nothing happens without ``BENCH_ACCEL_OFF``.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Callable
from types import ModuleType


def _set(m: ModuleType, name: str, value: object) -> None:
    """Set ``m.name``, which must exist (a renamed binding stops the server, not the measure)."""
    if not hasattr(m, name):
        raise SystemExit(f"BENCH_ACCEL_OFF: {m.__name__} has no {name}")
    setattr(m, name, value)


def _no_parse_request(m: ModuleType) -> None:
    _set(m, "_parse_request", None)


def _no_response_head(m: ModuleType) -> None:
    _set(m, "_fast_response_head", None)


def _no_parse_response_head(m: ModuleType) -> None:
    _set(m, "_parse_head", None)


def _no_count_request(m: ModuleType) -> None:
    _set(m, "_count_request", None)


def _no_zone(m: ModuleType) -> None:
    _set(m, "_AccelZone", None)


def _no_semaphore(m: ModuleType) -> None:
    import posix_ipc

    _set(m, "Semaphore", posix_ipc.Semaphore)


#: entry point -> (module that binds it, how to turn it off there, entry points it needs)
ENTRY_POINTS: dict[str, tuple[str, Callable[[ModuleType], None], tuple[str, ...]]] = {
    "parse_request": ("edgeworker.http.protocol", _no_parse_request, ()),
    "fast_response_head": ("edgeworker.server", _no_response_head, ()),
    "parse_response_head": ("edgeworker.proxy.client", _no_parse_response_head, ()),
    "count_request": ("edgeworker.status.metrics", _no_count_request, ()),
    "Zone": ("shm.dict", _no_zone, ()),
    "Semaphore": ("shm.segment", _no_semaphore, ()),
}


def closure(names: list[str]) -> list[str]:
    """``names`` and every entry point that needs one of them (off with it), in table order."""
    off = set(names)
    changed = True
    while changed:
        changed = False
        for name, (_, _, needs) in ENTRY_POINTS.items():
            if name not in off and off.intersection(needs):
                off.add(name)
                changed = True
    return [n for n in ENTRY_POINTS if n in off]


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs the patches of a module right after the module's own code."""

    def __init__(self, patches: dict[str, list[Callable[[ModuleType], None]]]) -> None:
        self.patches = patches

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname not in self.patches:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = loader.exec_module
        fixes = self.patches[fullname]

        def run(module: ModuleType) -> None:
            exec_module(module)
            for fix in fixes:
                fix(module)

        loader.exec_module = run  # type: ignore[method-assign]
        return spec


def install(value: str) -> None:
    """Turn off the entry points named in ``value`` (comma-separated)."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENTRY_POINTS]
    if unknown:
        raise SystemExit(
            f"BENCH_ACCEL_OFF: unknown {unknown}; choose from {','.join(ENTRY_POINTS)}"
        )
    patches: dict[str, list[Callable[[ModuleType], None]]] = {}
    for name in closure(names):
        module, fix, _ = ENTRY_POINTS[name]
        patches.setdefault(module, []).append(fix)
    sys.meta_path.insert(0, _AfterImport(patches))


if os.environ.get("BENCH_ACCEL_OFF"):
    install(os.environ["BENCH_ACCEL_OFF"])
