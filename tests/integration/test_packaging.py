"""Packaging: what the wheel holds (examples, py.typed, the plugin, the licence), that an
installed wheel alone can write a starter project with ``edgeworker init``, and which extras
``make run`` and ``make test`` install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from edgeworker.testing import Server

from ..support import EDGEWORKER, ROOT, require_tool

EXAMPLES = ROOT / "config" / "examples"
# what a source tree holds that the wheel is not built from
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".*cache*", ".hypothesis"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps`` of a copy of the source tree (the worktree stays untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (tmp / "dist").glob("edgeworker-*.whl")
    return built


def test_wheel_contents(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        dist_info = info.rsplit("/", 1)[0]
        metadata = zf.read(info).decode()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        licence = zf.read(f"{dist_info}/licenses/LICENSE").decode()
    examples = {f"edgeworker/examples/{p.name}" for p in EXAMPLES.glob("*.toml")}
    examples |= {f"edgeworker/examples/handlers/{p.name}" for p in EXAMPLES.glob("handlers/*.py")}
    assert "edgeworker/examples/hello.toml" in examples
    assert examples <= names, sorted(examples - names)
    for name in (
        "edgeworker/py.typed",
        "shm/py.typed",
        "edgeworker/testing/__init__.py",
        "edgeworker/testing/pytest_plugin.py",
        "edgeworker/starter.py",
        "edgeworker/default/edgeworker.toml",
    ):
        assert name in names, name
    assert any(n.startswith("edgeworker/_speedups.") and n.endswith(".so") for n in names)
    assert any(n.startswith("shm/_accel.") and n.endswith(".so") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    assert "[pytest11]\nedgeworker = edgeworker.testing.pytest_plugin" in entry_points
    assert "License: MIT" in metadata
    assert "Provides-Extra: mysql" in metadata
    assert 'Requires-Dist: PyMySQL>=1.1; extra == "mysql"' in metadata
    assert licence == (ROOT / "LICENSE").read_text()


def test_installed_wheel_writes_a_starter_project(wheel, tmp_path):
    """The wheel's own files (not the source tree's config/examples) feed ``edgeworker init``."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    code = (
        "import edgeworker, edgeworker.starter as s, sys; "
        "print(edgeworker.__file__); print(s.examples_dir()); "
        "sys.exit(edgeworker.cli.main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import edgeworker.cli; " + code, "init", str(tmp_path / "proj")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    package_file, examples, *rest = done.stdout.splitlines()
    assert package_file.startswith(str(site)) and examples.startswith(str(site))
    assert (tmp_path / "proj" / "handlers" / "hello.py").read_text() == (
        EXAMPLES / "handlers" / "hello.py"
    ).read_text()


def test_init_writes_a_project_that_runs_and_never_overwrites(tmp_path):
    proj = tmp_path / "myedge"
    done = subprocess.run(
        [*EDGEWORKER, "init", str(proj)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    config, handler = proj / "edgeworker.toml", proj / "handlers" / "hello.py"
    assert done.stdout.splitlines() == [
        f"wrote {config}",
        f"wrote {handler}",
        "from the example 'hello' (its first comments say what it needs); run it with:",
        f"  edgeworker run -c {config}",
    ]
    assert config.read_text() == (EXAMPLES / "hello.toml").read_text()
    with Server(config) as srv, urllib.request.urlopen(srv.url + "/hello?name=you") as r:
        assert r.read() == b"hello, you\n"

    # a second init changes nothing, even where only one of the files exists
    handler.unlink()
    config.write_text("# mine\n")
    again = subprocess.run(
        [*EDGEWORKER, "init", str(proj)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1
    assert f"{config} already exists; nothing written" in again.stderr
    assert config.read_text() == "# mine\n" and not handler.exists()

    (tmp_path / "file").write_text("")
    not_dir = subprocess.run(
        [*EDGEWORKER, "init", str(tmp_path / "file")], capture_output=True, text=True, timeout=60
    )
    assert not_dir.returncode == 1 and "is not a folder" in not_dir.stderr


def test_init_copies_the_handlers_an_example_names(tmp_path):
    done = subprocess.run(
        [*EDGEWORKER, "init", str(tmp_path), "--example", "lru_user_cache"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*"))
    assert written == ["edgeworker.toml", "handlers/lru_user_cache.py"]
    unknown = subprocess.run(
        [*EDGEWORKER, "init", str(tmp_path / "x"), "--example", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "invalid choice: 'nope'" in unknown.stderr


def dry_run(target: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_installs_what_serving_needs_and_make_test_the_test_extras():
    require_tool("make", "make")
    run = [ln for ln in dry_run("run").splitlines() if "pip install" in ln]
    assert any(ln.endswith("pip install -q -e .") for ln in run), run
    assert not any("[test]" in ln for ln in run), run
    test = dry_run("test")
    assert "pip install -q -e '.[test]'" in test
