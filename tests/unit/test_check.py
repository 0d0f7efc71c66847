"""`edgeworker check` and handler importing, against real module files on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from edgeworker import handlers
from edgeworker.check import check
from edgeworker.handlers import HandlerError, add_python_path, purge_user_modules, resolve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path):
    """A config folder with a handlers/ import root; module names are unique per test.

    Teardown forgets the modules and the sys.path entry, so tests do not see each other's code.
    """
    (tmp_path / "handlers").mkdir()
    suffix = uuid.uuid4().hex[:8]
    yield tmp_path, suffix
    purge_user_modules([str(tmp_path)])
    root = str(tmp_path / "handlers")
    while root in sys.path:
        sys.path.remove(root)
    if root in handlers._paths:
        handlers._paths.remove(root)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_check_passes_and_runs_no_handler(project):
    tmp, sfx = project
    write(tmp / "handlers" / f"app_{sfx}.py", f"""
        import os
        IMPORTED = True
        def init():
            open(os.path.join({str(tmp)!r}, "init-ran"), "w").close()
        def init_worker(): pass
        def auth(req): pass
        def body(req, chunk, eof): return chunk
        def hello(req, *rest): return "hi"
        class Api:
            @staticmethod
            def serve(req): return "ok"
    """)
    write(tmp / "ew.toml", f"""
        [main]
        init = "app_{sfx}:init"
        init_worker = "app_{sfx}:init_worker"
        [http]
        access = "app_{sfx}:auth"
        body_filter = "app_{sfx}:body"
        [[server]]
          [[server.location]]
          match = "/"
          content = "app_{sfx}:hello"
          [[server.location]]
          match = "/api/"
          content = "app_{sfx}:Api.serve"
          body_filter = []
    """)
    cfg, errors = check(str(tmp / "ew.toml"))
    assert errors == []
    assert cfg is not None and cfg.server[0].location[0].access == (f"app_{sfx}:auth",)
    assert not (tmp / "init-ran").exists()
    assert sys.modules[f"app_{sfx}"].IMPORTED is True


def test_invalid_config_returns_the_loader_errors(project):
    tmp, _ = project
    write(tmp / "ew.toml", """
        [[server]]
          [[server.location]]
          match = "/"
          acces = "x:y"
    """)
    assert check(str(tmp / "ew.toml")) == (
        None,
        [f'{tmp / "ew.toml"}:5: server[0].location[0]: unknown key "acces" (did you mean "access"?)'],
    )


def test_every_import_problem_names_its_config_path(project):
    tmp, sfx = project
    root = tmp / "handlers"
    write(root / f"good_{sfx}.py", """
        def ok(req): pass
        NOT_CALLABLE = 42
        def no_args(): pass
        def one_arg(req): pass
    """)
    write(root / f"broken_{sfx}.py", "def f(req):\n    return (\n")
    write(root / f"raises_{sfx}.py", "x = 1\nraise RuntimeError('no database')\n")
    write(tmp / "ew.toml", f"""
        [main]
        init = "missing_{sfx}:init"
        [http]
        log = "good_{sfx}:nope"
        [[server]]
          [[server.location]]
          match = "/a"
          access = ["good_{sfx}:ok", "app_{sfx}:auth"]
          content = "good_{sfx}:NOT_CALLABLE"
          [[server.location]]
          match = "/b"
          content = "broken_{sfx}:f"
          rewrite = "raises_{sfx}:f"
          [[server.location]]
          match = "/c"
          content = "good_{sfx}:no_args"
          body_filter = "good_{sfx}:one_arg"
    """)
    cfg, errors = check(str(tmp / "ew.toml"))
    assert cfg is not None
    # each error at the line of its key: FILE:LINE: path: cause
    conf = tmp / "ew.toml"
    assert [e.split(": ")[0] for e in errors] == [
        f"{conf}:{line}" for line in (3, 5, 9, 10, 14, 13, 17, 18)
    ]
    errors = [e.split(": ", 1)[1] for e in errors]
    pp = str(root)
    broken = str(root / f"broken_{sfx}.py")
    raises = str(root / f"raises_{sfx}.py")
    assert errors[0] == (f'main.init: cannot import "missing_{sfx}:init": '
                         f"No module named 'missing_{sfx}' (python_path: {pp})")
    assert errors[1] == (f'http.log: cannot import "good_{sfx}:nope": "good_{sfx}" has no '
                         'attribute "nope"')
    assert errors[2] == (f'server[0].location[0].access: cannot import "app_{sfx}:auth": '
                         f"No module named 'app_{sfx}' (python_path: {pp})")
    assert errors[3] == (f'server[0].location[0].content: cannot import '
                         f'"good_{sfx}:NOT_CALLABLE": int object is not callable')
    assert errors[4] == (f'server[0].location[1].rewrite: cannot import "raises_{sfx}:f": '
                         f"RuntimeError: no database ({raises}, line 2)")
    assert errors[5].startswith(f'server[0].location[1].content: cannot import "broken_{sfx}:f": '
                                "SyntaxError: ")
    assert errors[5].endswith(f"({broken}, line 2)")
    assert errors[6] == (f'server[0].location[2].content: handler "good_{sfx}:no_args" cannot '
                         "be called as fn(req): too many positional arguments")
    assert errors[7] == (f'server[0].location[2].body_filter: handler "good_{sfx}:one_arg" '
                         "cannot be called as fn(req, chunk, eof): too many positional arguments")
    assert len(errors) == 8
    # the http-level log handler is inherited by all three locations but reported once
    assert sum("nope" in e for e in errors) == 1


def test_jwt_key_files_must_be_readable(project):
    tmp, sfx = project
    write(tmp / "handlers" / f"app_{sfx}.py", "def h(req): pass\n")
    write(tmp / "keys" / "pub.pem", "-----BEGIN PUBLIC KEY-----\n")
    write(tmp / "ew.toml", f"""
        [[server]]
          [[server.location]]
          match = "/a"
          content = "app_{sfx}:h"
          jwt = {{ public_key = "file:keys/pub.pem", algorithms = ["RS256"] }}
          [[server.location]]
          match = "/b"
          content = "app_{sfx}:h"
          jwt = {{ secret = "file:keys/missing", algorithms = ["HS256"] }}
    """)
    cfg, errors = check(str(tmp / "ew.toml"))
    assert len(errors) == 2, errors
    conf = tmp / "ew.toml"
    # a PEM file that holds no key is readable but unusable: the verifier says so
    assert errors[0].startswith(
        f"{conf}:6: server[0].location[0].jwt: public_key is not a PEM public key")
    assert errors[1] == (
        f'{conf}:10: server[0].location[1].jwt.secret: file "{tmp / "keys" / "missing"}" '
        "does not exist")


def test_reference_config_passes_check(monkeypatch):
    monkeypatch.setenv("JWT_SECRET", "a-secret-long-enough-for-hs256-in-the-reference")
    cfg, errors = check(str(ROOT / "config" / "edgeworker.toml"))
    assert errors == []
    assert cfg is not None and cfg.server


def test_check_in_a_fresh_process_reports_like_the_cli_will(project):
    tmp, sfx = project
    write(tmp / "ew.toml", f"""
        [[server]]
          [[server.location]]
          match = "/"
          content = "nothere_{sfx}:h"
    """)
    code = ("import sys; from edgeworker.check import check; "
            "cfg, errs = check(sys.argv[1]); print('\\n'.join(errs)); sys.exit(1 if errs else 0)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp / "ew.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith(
        f'{tmp / "ew.toml"}:5: server[0].location[0].content: cannot import "nothere_{sfx}:h": '
        "No module named")


# --- handlers module ------------------------------------------------------------------------------


def test_resolve_imports_from_python_path(project):
    tmp, sfx = project
    write(tmp / "handlers" / f"pkg_{sfx}" / "__init__.py", "")
    write(tmp / "handlers" / f"pkg_{sfx}" / "mod.py", "def f(req):\n    return 'pkg'\n")
    add_python_path([str(tmp / "handlers")])
    assert sys.path[0] == str(tmp / "handlers")
    assert resolve(f"pkg_{sfx}.mod:f")(None) == "pkg"


def test_resolve_rejects_bad_specs(project):
    with pytest.raises(HandlerError, match=r'cannot import "nocolon": invalid handler'):
        resolve("nocolon")
    with pytest.raises(ImportError):
        resolve("surely_not_a_module_xyz:f")
    with pytest.raises(HandlerError, match='"os" has no attribute "nope"'):
        resolve("os:nope")
    with pytest.raises(HandlerError, match='"os.path" has no attribute "nope"'):
        resolve("os:path.nope")
    assert resolve("os.path:join") is os.path.join


def test_purge_and_resolve_fresh_run_the_new_code(project, monkeypatch):
    tmp, sfx = project
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as in production (.pyc written)
    root = tmp / "handlers"
    write(root / f"live_{sfx}.py",
          f"from helper_{sfx} import VALUE\ndef f(req):\n    return VALUE\n")
    write(root / f"helper_{sfx}.py", "VALUE = 'one'\n")
    add_python_path([str(root)])
    assert resolve(f"live_{sfx}:f")(None) == "one"
    assert (root / "__pycache__").is_dir()
    # same size, same second: only dropping the bytecode makes the edit visible
    write(root / f"helper_{sfx}.py", "VALUE = 'two'\n")
    assert resolve(f"live_{sfx}:f")(None) == "one"  # cached, as with code_cache = true
    assert handlers.resolve_fresh(f"live_{sfx}:f")(None) == "two"
    write(root / f"helper_{sfx}.py", "VALUE = 'six'\n")
    gone = purge_user_modules([str(root)])
    assert gone == sorted([f"helper_{sfx}", f"live_{sfx}"])
    assert f"live_{sfx}" not in sys.modules and "os" in sys.modules
    assert resolve(f"live_{sfx}:f")(None) == "six"


def test_purge_leaves_other_modules_alone(project):
    tmp, sfx = project
    import json  # noqa: F401 - a stdlib module that must survive

    write(tmp / "handlers" / f"m_{sfx}.py", "X = 1\n")
    add_python_path([str(tmp / "handlers")])
    resolve("json:dumps")
    __import__(f"m_{sfx}")
    assert purge_user_modules([str(tmp / "handlers")]) == [f"m_{sfx}"]
    assert "json" in sys.modules
    assert purge_user_modules([]) == []


def test_purge_never_touches_protected_folders_inside_a_python_path(project, monkeypatch):
    tmp, sfx = project
    write(tmp / "app" / f"mine_{sfx}.py", "X = 1\n")
    write(tmp / "app" / ".venv" / "site" / f"dep_{sfx}.py", "Y = 2\n")
    monkeypatch.setattr(handlers, "_protected_roots",
                        lambda: [str((tmp / "app" / ".venv" / "site").resolve())])
    monkeypatch.syspath_prepend(str(tmp / "app" / ".venv" / "site"))
    monkeypatch.syspath_prepend(str(tmp / "app"))
    __import__(f"mine_{sfx}")
    __import__(f"dep_{sfx}")
    assert purge_user_modules([str(tmp / "app")]) == [f"mine_{sfx}"]
    assert f"dep_{sfx}" in sys.modules
    del sys.modules[f"dep_{sfx}"]


def test_edgeworker_and_site_packages_are_protected():
    import msgspec

    import edgeworker.config

    protected = handlers._protected_roots()
    assert os.path.dirname(os.path.realpath(edgeworker.config.__file__)) in protected
    msgspec_file = os.path.realpath(msgspec.__file__)
    assert any(msgspec_file.startswith(root + os.sep) for root in protected)


def test_unusable_jwt_keys_are_reported_by_check(project):
    tmp, sfx = project
    write(tmp / "handlers" / f"app_{sfx}.py", "def h(req): pass\n")
    write(tmp / "keys" / "junk.pem", "not a key at all\n")
    write(tmp / "ew.toml", f"""
        [[server]]
          [[server.location]]
          match = "/a"
          content = "app_{sfx}:h"
          jwt = {{ secret = "env:EDGEWORKER_TEST_UNSET_{sfx}", algorithms = ["HS256"] }}
          [[server.location]]
          match = "/b"
          content = "app_{sfx}:h"
          jwt = {{ public_key = "file:keys/junk.pem", algorithms = ["RS256"] }}
          [[server.location]]
          match = "/c"
          content = "app_{sfx}:h"
          jwt = {{ secret = "a-good-long-secret-for-hs256-tokens", algorithms = ["HS256"] }}
    """)
    cfg, errors = check(str(tmp / "ew.toml"))
    assert len(errors) == 2, errors
    conf = tmp / "ew.toml"
    assert errors[0].startswith(f"{conf}:6: server[0].location[0].jwt: ")
    assert f"EDGEWORKER_TEST_UNSET_{sfx}" in errors[0]
    assert errors[1].startswith(f"{conf}:10: server[0].location[1].jwt: ")
