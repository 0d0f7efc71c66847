#!/usr/bin/env python3
"""Runs every benchmark and writes bench/RESULTS.md from what they measured.

Each bench script runs with its defaults (at least 5 alternating rounds) and ``--json FILE``;
``bench/instructions.py`` runs the instruction counts (callgrind) of the hot routes, then once
per C entry point turned off (what each saves); ``bench/parsers.py`` compares the HTTP/1.x head
parsers. The file is then written from the JSON alone: per bench, the command line, the commit
and the time it ran, its tables and its goals, judged by the one rule of ``bench/common.py``
(``Goal``). Nothing in bench/RESULTS.md is typed by hand: rerun this to update it.

The throughput benches need a quiet machine (a round that ran beside other load is flagged and
left out, and a goal with fewer than 5 kept rounds is not judged PASS); the instruction counts
do not. A whole run takes about 45 minutes.

Usage::

    .venv/bin/python bench/report.py                      # run everything, write bench/RESULTS.md
    .venv/bin/python bench/report.py --only http,proxy    # run these, reuse the others' JSON
    .venv/bin/python bench/report.py --from-dir DIR       # write RESULTS.md from earlier JSON

``--dir DIR`` (default ``bench/.results``) keeps each bench's JSON; ``--output`` names the
Markdown file (bench/RESULTS.md). Exit status: 0 when every bench ran (whatever the verdicts),
1 when one failed to run (its section says so), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import Goal, Table, git_commit, goals_table, logger, tool_version  # noqa: E402
from instructions import routes_table  # noqa: E402

#: (name, script, extra arguments): the throughput and latency benches, in the order they run
BENCHES: list[tuple[str, str, list[str]]] = [
    ("http", "http_bench.py", []),
    ("proxy", "proxy_bench.py", []),
    ("tls", "tls_bench.py", []),
    ("h2", "h2_bench.py", []),
    ("edge", "edge_bench.py", []),
    ("gzip", "gzip_bench.py", []),
    ("shm", "shm_bench.py", []),
    ("reload", "reload_bench.py", []),
    ("parsers", "parsers.py", ["--instructions"]),
]

#: the instruction counts: every route, 3 rounds
INSTRUCTIONS_ARGS = ["--rounds", "3", "--requests", "3000"]
#: then each C entry point off (bench/accel_off), one round, on the routes it serves
ENTRY_POINT_ARGS = ["--rounds", "1", "--requests", "2000", "--routes", "hello,incr,proxy,limit"]
#: and the whole of each C module off, as a user without the compiled parts would run
MODULES_OFF = ["speedups", "shm"]

TITLES = {
    "http": "HTTP: a Python content handler and the shared-dict route against nginx + lua",
    "proxy": "Reverse proxy against nginx proxy_pass",
    "tls": "TLS termination against nginx",
    "h2": "HTTP/2 against nginx",
    "edge": "Edge library: rate limits and JWT per request",
    "gzip": "gzip compression against nginx",
    "shm": "Shared dict against nginx's ngx.shared.DICT, Redis and multiprocessing",
    "reload": "Reload and respawn",
    "parsers": "HTTP/1.x head parsers: httptools (llhttp), edgeworker's C, gunicorn_h1c",
}


log = logger("report")


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def run_bench(name: str, script: str, extra: list[str], out: Path) -> dict[str, object]:
    """Run one bench with ``--json``; its JSON, or a stand-in that records the failure."""
    argv = [python(), str(HERE / script), *extra, "--json", str(out)]
    log(f"{name}: {shlex.join(argv[1:])}")
    started = time.time()
    out.unlink(missing_ok=True)
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=3600)
    sys.stdout.write(done.stdout)
    if done.returncode not in (0, 1) or not out.exists():
        return {
            "bench": name,
            "failed": f"exit status {done.returncode} after {time.time() - started:.0f} s",
            "command": shlex.join([".venv/bin/python", f"bench/{script}", *extra]),
            "commit": git_commit(),
        }
    return json.loads(out.read_text())


def run_instructions(out: Path) -> dict[str, object]:
    """The instruction counts: all routes, then every C entry point and module off."""
    # bench/accel_off/sitecustomize.py by its path: the interpreter has imported its own
    # ``sitecustomize`` already
    spec = importlib.util.spec_from_file_location(
        "accel_off", HERE / "accel_off" / "sitecustomize.py"
    )
    assert spec is not None and spec.loader is not None
    accel_off = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accel_off)
    entry_points = accel_off.ENTRY_POINTS

    runs: dict[str, object] = {}
    plan = [("all on", INSTRUCTIONS_ARGS), ("all on, 1 round", ENTRY_POINT_ARGS)]
    plan += [(f"{m} off", [*ENTRY_POINT_ARGS, "--disable", m]) for m in MODULES_OFF]
    plan += [(f"{ep} off", [*ENTRY_POINT_ARGS, "--disable", ep]) for ep in entry_points]
    for label, args in plan:
        argv = [python(), str(HERE / "instructions.py"), *args, "--json"]
        log(f"instructions ({label}): {shlex.join(argv[1:])}")
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            runs[label] = {"failed": done.stderr[-1500:], "args": args}
            continue
        doc = json.loads(done.stdout.strip().splitlines()[-1])
        doc["args"] = args
        runs[label] = doc
    doc = {"bench": "instructions", "commit": git_commit(), "runs": runs}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


# ---------------------------------------------------------------------------------------------
# Markdown


def _goal(d: dict[str, object]) -> Goal:
    g = Goal(
        str(d["name"]),
        str(d["op"]),
        d["target"],  # type: ignore[arg-type]
        list(d["per_round"]),  # type: ignore[arg-type]
        list(d.get("disturbed") or []),  # type: ignore[arg-type]
        str(d.get("unit", "x")),
        str(d.get("note") or ""),
    )
    if g.verdict != d.get("verdict"):
        raise SystemExit(f"goal {g.name!r}: the JSON says {d.get('verdict')}, the rule {g.verdict}")
    return g


def _table(d: dict[str, object]) -> Table:
    return Table(
        str(d["title"]),
        list(d["headers"]),  # type: ignore[arg-type]
        [list(r) for r in d["rows"]],  # type: ignore[union-attr]
        list(d.get("notes") or []),  # type: ignore[arg-type]
        tuple(d.get("right") or ()),  # type: ignore[arg-type]
    )


def _docstring_lead(script: str) -> str:
    """The first paragraph of a bench script's docstring (what it measures)."""
    import ast

    doc = ast.get_docstring(ast.parse((HERE / script).read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def bench_section(name: str, script: str, doc: dict[str, object]) -> tuple[str, list[list[str]]]:
    """The Markdown of one bench, and its rows for the summary table."""
    out = [f"## {TITLES.get(name, name)}", "", _docstring_lead(script) + f" (`bench/{script}`)", ""]
    out += ["```sh", f"{doc.get('command')}   # {doc.get('commit')}, {_when(doc)}", "```", ""]
    if doc.get("failed"):
        out += [f"**Did not run to the end**: {doc['failed']}. No figure is reported.", ""]
        return "\n".join(out), [[name, "(the bench failed)", "-", "-", "-", "FAIL (not run)"]]
    for t in doc.get("tables") or []:
        out += [_table(t).markdown(), ""]
    goals = [_goal(g) for g in doc.get("goals") or []]
    summary = []
    if goals:
        out += [goals_table(goals).markdown(), ""]
        for g in goals:
            target = "-" if g.target is None else f"{g.op} {g.target:g}"
            summary.append([name, g.name, g.rounds_text(), g.fmt(g.median), target, g.verdict])
    return "\n".join(out), summary


def _when(doc: dict[str, object]) -> str:
    a, b = doc.get("started"), doc.get("finished")
    return f"{a} to {str(b)[11:]}" if a and b else str(a or "")


def instructions_section(doc: dict[str, object]) -> str:
    runs: dict[str, dict] = doc.get("runs") or {}  # type: ignore[assignment]
    out = ["## Instructions per request (callgrind)", ""]
    out += [_docstring_lead("instructions.py") + " (`bench/instructions.py`)", ""]
    base = runs.get("all on") or {}
    if "routes" not in base:
        return "\n".join([*out, "**The instruction count did not run.**", ""])
    cmds = [
        f".venv/bin/python bench/instructions.py {shlex.join(r['args'])}"
        for r in runs.values()
        if "args" in r
    ]
    out += ["```sh", *cmds, "```", "", f"Commit `{doc.get('commit')}`, {base.get('date', '')}."]
    out += ["", routes_table(base).markdown(), ""]
    one = runs.get("all on, 1 round") or {}
    off = {k: v for k, v in runs.items() if k.endswith(" off")}
    if "routes" in one and off:
        routes = list(one["routes"])
        rows = []
        for label, r in off.items():
            if "routes" not in r:
                rows.append([label.removesuffix(" off"), *(["failed"] * len(routes))])
                continue
            cells = []
            for route in routes:
                a, b = one["routes"][route]["per_request"], r["routes"][route]["per_request"]
                cells.append(f"{b:,.0f} ({(b - a) / a * 100:+.1f} %)")
            rows.append([label.removesuffix(" off"), *cells])
        out += [
            Table(
                "What the C parts save: instructions per request with one C entry point (or a "
                "whole module) off, its pure-Python twin running, against all on ("
                + ", ".join(f"{k} {one['routes'][k]['per_request']:,.0f}" for k in routes)
                + "), one round each",
                ["off", *routes],
                rows,
                notes=[
                    "speedups = all of edgeworker/_speedups.c (EDGEWORKER_NO_ACCEL=1), shm = all "
                    "of shm/_accel.c (SHM_NO_ACCEL=1); a C part is kept where it saves at "
                    "least 5 % on a route it serves"
                ],
                right=tuple(range(1, len(routes) + 1)),
            ).markdown(),
            "",
        ]
    return "\n".join(out)


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nginx = tool_version(["nginx", "-v"]) or "nginx not found"
    version = tool_version([python(), "--version"])
    return f"{cpus} CPUs ({model}), Linux {platform.release()}, {version} (`.venv`), {nginx}"


PRODUCT = [
    "edgeworker",
    "shm",
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "bench/configs",
    "bench/handlers",
]


def same_product(commits: list[str]) -> str:
    """Whether the product code (and the benches' configs) is the same at every commit listed
    (``+dirty``: tracked files other than Markdown differed from that commit when it ran)."""
    revs = sorted({c.removesuffix("+dirty") for c in commits})
    dirty = any(c.endswith("+dirty") for c in commits)
    if dirty:
        note = "; `+dirty`: tracked files differed from that commit when a bench ran"
        if subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", *PRODUCT], timeout=30
        ).returncode:
            return f" ({note[2:]}, the product code among them)"
    if len(revs) < 2 or "unknown" in revs:
        return f" ({note[2:]})" if dirty else ""
    try:
        for rev in revs[1:]:
            subprocess.run(
                ["git", "-C", str(ROOT), "diff", "--quiet", revs[0], rev, "--", *PRODUCT],
                check=True,
                timeout=30,
            )
    except (OSError, subprocess.SubprocessError):
        return " (the product code differs between them)"
    return " (the same product code: they differ in bench scripts and docs only" + (
        note + ")" if dirty else ")"
    )


def write_markdown(dirpath: Path, output: Path) -> None:
    docs = {}
    for name, _, _ in BENCHES:
        f = dirpath / f"{name}.json"
        if f.exists():
            docs[name] = json.loads(f.read_text())
    commits = sorted({str(d.get("commit")) for d in docs.values()})
    sections, summary = [], []
    for name, script, _ in BENCHES:
        if name in docs:
            text, rows = bench_section(name, script, docs[name])
            sections.append(text)
            summary += rows
    instr = dirpath / "instructions.json"
    if instr.exists():
        idoc = json.loads(instr.read_text())
        sections.append(instructions_section(idoc))
        commits = sorted({*commits, str(idoc.get("commit"))})
    head = [
        "# Benchmark results",
        "",
        "Written by `bench/report.py` from what the bench scripts in `bench/` measured; nothing "
        "here is typed by hand. Rerun `.venv/bin/python bench/report.py` (or `make bench`) to "
        "update it.",
        "",
        f"Commit measured: {', '.join(f'`{c}`' for c in commits)}{same_product(commits)}. "
        f"Machine: {machine()}. "
        f"Written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "How to read it: every bench runs the baseline and edgeworker in the same run, the two "
        "taking turns, at least 5 rounds, every other round in the reverse order. A goal's value "
        "is taken within each round (a ratio of two sides measured in that round), then the "
        "median of the rounds. PASS means every round met the target, FAIL none, "
        "inconclusive that the rounds straddle it. A round that ran beside other load (other "
        "processes took more than 20 % of the machine) is shown with `*` and left out; with "
        'fewer than 5 rounds left a goal reads "too few rounds". A side that failed or was not '
        "measured fails the goal. Absolute figures move by ±30 % from run to run on this shared "
        "2-vCPU machine: read the ratios. Instruction counts (callgrind) are the steady measure. "
        "The nginx baselines do the work edgeworker does by default: they return a fresh "
        "`X-Request-Id` (`add_header X-Request-Id $request_id`; nginx + lua's hello serves about "
        "a fifth fewer requests with it), and the nginx proxy sends the backend the same "
        "forwarding fields and request id.",
        "",
        "## Every goal",
        "",
        Table(
            "Goals of every bench",
            ["bench", "goal", "each round", "median", "target", "verdict"],
            summary,
            right=(3,),
        ).markdown(),
        "",
    ]
    tail = [
        "## Earlier results",
        "",
        "Figures of earlier commits, some measured by rules these scripts no longer use, are in "
        "this file's history: `git log -p -- bench/RESULTS.md`. CHANGELOG.md says what changed "
        "between them.",
        "",
    ]
    output.write_text("\n".join([*head, *sections, *tail]).rstrip() + "\n")
    log(f"wrote {output}")
    if output.resolve() == (HERE / "RESULTS.md").resolve():
        update_docs(summary, commits)


DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench/report.py: begin -->", "<!-- bench/report.py: end -->"


def update_docs(summary: list[list[str]], commits: list[str]) -> None:
    """The goals table of docs/benchmarks.md, between its markers, from the same figures."""
    page = DOCS_PAGE.read_text()
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{DOCS_PAGE}: the markers {BEGIN} / {END} are missing")
    table = Table(
        f"Every goal, as `bench/report.py` last measured them (commit "
        f"{', '.join(f'`{c}`' for c in commits)}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d})",
        ["bench", "goal", "each round", "median", "target", "verdict"],
        summary,
        right=(3,),
    ).markdown()
    before, rest = page.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    DOCS_PAGE.write_text(f"{before}{BEGIN}\n{table}\n{END}{after}")
    log(f"updated {DOCS_PAGE}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [b[0] for b in BENCHES] + ["instructions"]
    p.add_argument("--only", help=f"run only these, comma-separated ({','.join(names)})")
    p.add_argument("--from-dir", metavar="DIR", help="run nothing: write from DIR's JSON")
    p.add_argument("--dir", default=str(HERE / ".results"), help="where each bench's JSON goes")
    p.add_argument("--output", default=str(HERE / "RESULTS.md"), help="the Markdown to write")
    args = p.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(names)
    if only - set(names):
        p.error(f"unknown bench: {', '.join(sorted(only - set(names)))}")
    dirpath = Path(args.from_dir or args.dir)
    dirpath.mkdir(parents=True, exist_ok=True)
    failed = 0
    if not args.from_dir:
        try:
            for name, script, extra in BENCHES:
                if name in only:
                    doc = run_bench(name, script, extra, dirpath / f"{name}.json")
                    if doc.get("failed"):
                        failed += 1
                        (dirpath / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
            if "instructions" in only:
                run_instructions(dirpath / "instructions.json")
        except KeyboardInterrupt:
            return 130
    write_markdown(dirpath, Path(args.output))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
