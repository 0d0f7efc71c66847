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




# The C parts are required: a missing one says how to build it, unless its switch turns it off
_BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name in ("edgeworker._speedups", "shm._accel"):
            raise ImportError("no module named " + name)
sys.meta_path.insert(0, Block())
import {module}
print("imported")
"""


@pytest.mark.parametrize(
    ("module", "part", "switch"),
    [("edgeworker.http.fields", "edgeworker/_speedups.c", "EDGEWORKER_NO_ACCEL"),
     ("shm.segment", "shm/_accel.c", "SHM_NO_ACCEL")],
)
def test_a_missing_c_part_is_an_error_unless_turned_off(module: str, part: str, switch: str):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.endswith("_NO_ACCEL")}
    code = _BLOCK.format(module=module)
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"ImportError: {part.split('/')[0]}'s C part ({part}) is not built" in done.stderr
    assert "gcc python3-dev" in done.stderr and switch in done.stderr
    done = subprocess.run([sys.executable, "-c", code], env={**env, switch: "1"}, cwd=_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "imported\n", done.stderr
