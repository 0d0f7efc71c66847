"""What a user of the package sees: the Request type for annotations, the licence, typing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import edgeworker

ROOT = Path(__file__).resolve().parents[2]


def test_request_is_exported_for_annotations_and_loaded_on_first_use():
    code = """
import sys, typing
import edgeworker
assert "edgeworker.request" not in sys.modules, "imported eagerly"
from edgeworker import Request
from edgeworker.request import Request as Defined
assert Request is Defined

def greet(req: Request) -> str:
    return "hi"

assert typing.get_type_hints(greet)["req"] is Defined
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "ok\n", done.stderr
    assert "Request" in edgeworker.__all__


def test_typed_packages_and_licence():
    assert (ROOT / "edgeworker" / "py.typed").is_file()
    assert (ROOT / "shm" / "py.typed").is_file()
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    assert "Copyright (c) 2026 the edgeworker authors" in licence
    assert "license = MIT" in (ROOT / "setup.cfg").read_text()
    assert (ROOT / "CHANGELOG.md").is_file()
