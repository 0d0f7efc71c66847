"""The C accelerators (edgeworker/_speedups.c, shm/_accel.c) call CPython's public API only:
no ``_Py`` name, which a new CPython release may change or remove, and no reading of Python
objects' slots through their member descriptors (the C takes plain values). The hand-written
C stays within its budget: 1,500 lines in all, 800 in edgeworker/_speedups.c."""

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


#: what no C source may name: CPython's private API, and what reads a Python object's slots
#: through its member descriptors
_FORBIDDEN = {
    "private CPython API": r"\b_Py\w*",
    "slot read by offset": r"\b(PyMemberDescr\w*|PyDescr_\w+|d_member|tp_dictoffset)\b",
}


@pytest.mark.parametrize("what", _FORBIDDEN)
@pytest.mark.parametrize("path", _C_SOURCES, ids=lambda p: p.relative_to(_ROOT).as_posix())
def test_nothing_forbidden_in_the_c(path: Path, what: str):
    found = [
        f"{path.name}:{n}: {m.group()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for m in re.finditer(_FORBIDDEN[what], line)
    ]
    assert not found, found


def test_hand_written_c_within_its_budget():
    lines = {p.relative_to(_ROOT).as_posix(): len(p.read_text().splitlines()) for p in _C_SOURCES}
    assert lines["edgeworker/_speedups.c"] <= 800, lines
    assert sum(lines.values()) <= 1500, lines


def test_configure_takes_the_protocol_tables():
    with pytest.raises(TypeError):
        _speedups.configure(RequestHead, _METHODS, _REFUSED_METHODS, _GOOD_HOSTS)
    with pytest.raises(TypeError):
        _speedups.configure(_METHODS, set(_REFUSED_METHODS), _GOOD_HOSTS)
    _speedups.configure(_METHODS, _REFUSED_METHODS, _GOOD_HOSTS)


