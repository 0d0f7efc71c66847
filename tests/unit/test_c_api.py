"""The C accelerators (edgeworker/_speedups.c, shm/_accel.c) call CPython's public API only:
no ``_Py`` name, which a new CPython release may change or remove. The classes whose slots
they read are checked through that API: a name that is not an object slot of the class is
refused before anything is configured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeworker import _speedups
from edgeworker.http.protocol import (
    _GOOD_HOSTS,
    _METHODS,
    _REFUSED_METHODS,
    RequestHead,
)

_ROOT = Path(__file__).resolve().parents[2]
_C_SOURCES = sorted([*(_ROOT / "edgeworker").rglob("*.c"), *(_ROOT / "shm").rglob("*.c")])


def test_the_c_sources_are_found():
    names = {p.relative_to(_ROOT).as_posix() for p in _C_SOURCES}
    assert {"edgeworker/_speedups.c", "shm/_accel.c"} <= names


@pytest.mark.parametrize("path", _C_SOURCES, ids=lambda p: p.relative_to(_ROOT).as_posix())
def test_no_private_cpython_name(path: Path):
    found = [
        f"{path.name}:{n}: {m.group()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for m in re.finditer(r"\b_Py\w*", line)
    ]
    assert not found, found


class _NoSlots:
    method = None


class _Other:
    __slots__ = ("method",)


class _Borrowed:
    """A class attribute that is another class's member descriptor: not a slot of this one."""

    __slots__ = ()
    method = _Other.method


@pytest.mark.parametrize("cls", [_NoSlots, _Borrowed, int])
def test_configure_refuses_a_class_without_the_slots(cls):
    with pytest.raises(TypeError, match="is not a slot of the head class"):
        _speedups.configure(cls, _METHODS, _REFUSED_METHODS, _GOOD_HOSTS)


def test_configure_takes_the_request_head():
    _speedups.configure(RequestHead, _METHODS, _REFUSED_METHODS, _GOOD_HOSTS)


def test_response_fields_take_no_arguments():
    with pytest.raises(TypeError, match=r"^ResponseFields\(\) takes no positional arguments$"):
        _speedups.ResponseFields(1)
    with pytest.raises(TypeError, match=r"^ResponseFields\(\) takes no keyword arguments$"):
        _speedups.ResponseFields(kept=[])
    assert _speedups.ResponseFields(**{}).kept == []
