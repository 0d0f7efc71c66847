"""No import cycles between edgeworker's modules.

Every import counts: at module level, inside functions, and under ``if TYPE_CHECKING:`` (which
import-linter's layer contract may not see). A package's own ``__init__`` is not counted as a
dependency of its submodules (Python imports it first, whatever they import).
"""

from __future__ import annotations

import ast
from pathlib import Path

import edgeworker

PACKAGE = Path(edgeworker.__file__).parent
ROOT = "edgeworker"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package), for every .py file of edgeworker."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out[".".join(parts)] = (path, is_package)
    return out


def _extensions() -> set[str]:
    """Compiled submodules (``edgeworker._speedups``): leaves, no Python imports."""
    names = set()
    for path in PACKAGE.rglob("*"):
        if path.suffix in (".c", ".so", ".pyd"):
            parts = list(path.relative_to(PACKAGE.parent).parts)
            parts[-1] = parts[-1].split(".")[0]
            names.add(".".join(parts))
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the edgeworker modules it imports (anywhere in its code)."""
    modules = _modules()
    extensions = _extensions()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            if name in extensions:
                return None
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in modules.items():
        package = module if is_package else module.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(owner(a.name) for a in node.names if a.name.split(".")[0] == ROOT)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != ROOT:
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in modules or full in extensions:
                        targets.add(owner(full))  # a submodule (None: compiled)
                    else:
                        targets.add(owner(source))  # a name defined in the module
        targets.discard(None)
        targets.discard(module)
        graph[module] = {t for t in targets if t is not None}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, …, a]``) for each strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.add(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for group in groups:
        start = min(group)
        # the shortest way back to start, within the group (breadth first)
        paths = {start: [start]}
        queue = [start]
        cycle = None
        while queue and cycle is None:
            node = queue.pop(0)
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    cycle = paths[node] + [start]
                    break
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    queue.append(nxt)
        cycles.append(cycle)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cycles_are_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_type_checking_and_function_imports_count(tmp_path, monkeypatch):
    pkg = tmp_path / ROOT
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "one.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import two\n"
    )
    (pkg / "sub" / "two.py").write_text("def f():\n    from ..one import x\n")
    (pkg / "_fast.c").write_text("")
    (pkg / "three.py").write_text("from . import _fast\nfrom edgeworker.sub.two import f\n")
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    graph = import_graph()
    assert graph["edgeworker.one"] == {"edgeworker.sub.two"}
    assert graph["edgeworker.sub.two"] == {"edgeworker.one"}
    assert graph["edgeworker.three"] == {"edgeworker.sub.two"}
    assert find_cycles(graph) == [["edgeworker.one", "edgeworker.sub.two", "edgeworker.one"]]
