"""``edgeworker init DIR``: a starter project copied from the examples packaged with edgeworker.

It writes ``DIR/edgeworker.toml`` (the example's config) and the handler modules that config
names into ``DIR/handlers/`` (the examples' ``python_path``), refuses to overwrite any file, and
prints what it wrote and the command that runs it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["copy_example", "example_names", "register"]

DEFAULT_EXAMPLE = "hello"
CONFIG_NAME = "edgeworker.toml"
HANDLERS = "handlers"

# a handler reference in a config: "module:function"
_HANDLER_REF = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*):[A-Za-z_][A-Za-z0-9_]*"')


def examples_dir() -> Traversable:
    """The examples: packaged as ``edgeworker/examples`` in a wheel (setup.py copies them), else
    ``config/examples`` of the source tree the package runs from (``pip install -e .``)."""
    packaged = resources.files("edgeworker").joinpath("examples")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "config" / "examples"


def example_names() -> list[str]:
    """The names ``edgeworker init --example`` accepts (the packaged ``NAME.toml`` files)."""
    folder = examples_dir()
    if not folder.is_dir():
        return []
    return sorted(e.name[: -len(".toml")] for e in folder.iterdir() if e.name.endswith(".toml"))


def example_files(name: str) -> dict[str, str]:
    """The starter project of example ``name``: relative path -> text."""
    folder = examples_dir()
    config = folder.joinpath(f"{name}.toml").read_text(encoding="utf-8")
    files = {CONFIG_NAME: config}
    for module in dict.fromkeys(_HANDLER_REF.findall(config)):
        source = folder.joinpath(HANDLERS, f"{module}.py")
        if source.is_file():
            files[f"{HANDLERS}/{module}.py"] = source.read_text(encoding="utf-8")
    return files


def copy_example(name: str, target: str) -> list[str]:
    """Write example ``name`` into the folder ``target`` (created if missing) and return the
    paths written. Raises ``FileExistsError`` naming the first file that already exists (and then
    writes nothing), ``OSError`` when a file cannot be written."""
    files = example_files(name)
    paths = {rel: os.path.join(target, *rel.split("/")) for rel in files}
    for path in paths.values():
        if os.path.lexists(path):
            raise FileExistsError(path)
    written = []
    for rel, path in paths.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:
            f.write(files[rel])
        written.append(path)
    return written


def cmd_init(args: argparse.Namespace) -> int:
    target = args.dir
    if os.path.exists(target) and not os.path.isdir(target):
        print(f"edgeworker: init: {target} exists and is not a folder", file=sys.stderr)
        return 1
    try:
        written = copy_example(args.example, target)
    except FileExistsError as exc:
        print(
            f"edgeworker: init: {exc.args[0]} already exists; nothing written "
            "(init never overwrites: pick an empty or new folder)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"edgeworker: init: cannot write into {target}: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    config = os.path.join(target, CONFIG_NAME)
    print(f"from the example {args.example!r} (its first comments say what it needs); run it with:")
    print(f"  edgeworker run -c {config}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``init`` subcommand to the CLI's subparsers."""
    names = example_names()
    p = sub.add_parser(
        "init",
        help="write a starter project (a config and its handlers) from a packaged example",
        description="Write DIR/edgeworker.toml and DIR/handlers/*.py from a packaged example; "
        "existing files are never overwritten.",
    )
    p.add_argument("dir", metavar="DIR", help="the folder to write into (created if missing)")
    p.add_argument(
        "--example",
        default=DEFAULT_EXAMPLE,
        choices=names,
        metavar="NAME",
        help=f"the example to copy (default {DEFAULT_EXAMPLE}): {', '.join(names)}",
    )
    p.set_defaults(func=cmd_init)
