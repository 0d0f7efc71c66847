#!/usr/bin/env python3
"""HTTP benchmark: edgeworker against nginx + lua-nginx-module and gunicorn -k gevent, in rounds.

Every target runs with the same number of workers (2), access logs off, on a free 127.0.0.1
port, in its own temp dir; all are started first (their idle worker RSS is read then) and then
measured one at a time, never two at once. Each round measures every case of every target in
turn (every other round in the reverse order): a 1 s wrk warm-up (discarded), then the measured
run (keep-alive, 2 threads, 50 connections, 5 s). Each goal is a value taken within each round
(the two sides measured minutes apart at most), judged over the rounds by bench/common.py's Goal:

    req/s edgeworker /hello / nginx-lua /hello                             >= 0.50
    shared-dict incr route: edgeworker (/incr / /hello) - nginx-lua (/incr / /hello)  >= 0
    req/s edgeworker /incr / edgeworker /hello                            >= 0.9
    req/s edgeworker /hello / gunicorn /hello                             >= 3
    p99 edgeworker / p99 nginx-lua, /hello and /incr                       <= 3
    RSS of the largest edgeworker worker after the round's load           <= 40 MiB

and for context (no target) edgeworker /hello against the same server with ``[main] metrics =
false`` (what the status counters cost), against bench/configs/bare_loop.py (a bare gevent +
httptools loop with the same worker count: the floor under any server built on them) and the
bare loop against nginx-lua. /incr is checked to really run: the shared counter must grow by at
least the requests wrk completed. A round in which other processes used more than 20 % of the
machine during any measurement is shown marked ``*`` and left out of the verdicts.

A default run (5 rounds, every target) takes about 4 minutes. Usage: python bench/http_bench.py
[--rounds 5] [--duration 5] [--warmup 1] [--no-nginx] [--no-gunicorn] [--no-edgeworker]
[--no-metrics-off] [--no-bare] [--json FILE] [--check]. See bench/README.md.

Exit status: 0 after a complete run (whatever the verdicts), 1 with ``--check`` unless every
goal is PASS, 2 when the harness cannot run (wrk missing, a server that does not start or
answers wrongly), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DISTURBED_PCT,
    CpuMeter,
    Goal,
    ProcessRegistry,
    Server,
    Table,
    WorkersMemory,
    WrkResult,
    add_common_args,
    child_pids,
    disturbed_rounds,
    find_wrk,
    finish,
    free_port,
    http_get,
    logger,
    mib,
    per_round_ratio,
    run_wrk,
    servers_python,
    tool_version,
    wait_for_port,
    wait_for_workers,
    workers_rss,
)

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CONFIGS = BENCH_DIR / "configs"
HANDLERS = BENCH_DIR / "handlers"
VENV_BIN = REPO / ".venv" / "bin"
EXPECTED_BODY = b"hello\n"
IDLE_RSS_TARGET_MIB = 40.0


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class Round:
    """One measured run of a case."""

    wrk: WrkResult | None = None
    warmup: WrkResult | None = None
    error: str = ""
    counted: int | None = None  # /incr only: how much the shared counter grew
    foreign_cpu_pct: float | None = None  # machine CPU used by other processes during the run
    memory: WorkersMemory | None = None  # the server's workers right after the run

    @property
    def ok(self) -> bool:
        """True when the run completed without error."""
        return self.wrk is not None and not self.error

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "error": self.error,
            "wrk": self.wrk.to_json() if self.wrk else None,
            "warmup": self.warmup.to_json() if self.warmup else None,
            "counted": self.counted,
            "foreign_cpu_pct": self.foreign_cpu_pct,
            "workers_after": self.memory.to_json() if self.memory else None,
        }


@dataclass
class CaseResult:
    """A case of a target (e.g. edgeworker /incr): one :class:`Round` per round it ran in."""

    path: str
    rounds: list[Round] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "rounds": [r.to_json() for r in self.rounds]}


@dataclass
class TargetResult:
    """Everything measured for one server."""

    name: str
    status: str = "skipped"  # "ok", "failed", "skipped"
    error: str = ""
    command: list[str] = field(default_factory=list)
    idle: WorkersMemory | None = None
    cases: dict[str, CaseResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "error": self.error,
            "command": self.command,
            "idle_workers": self.idle.to_json() if self.idle else None,
            "cases": {k: v.to_json() for k, v in self.cases.items()},
        }


# ---------------------------------------------------------------------------------------------
# targets: each starts its server in tmpdir on port and returns the Server


def lua_module_paths() -> list[str]:
    """Paths of the nginx modules lua needs, NDK first: from dpkg, else the Debian default dir.

    Raises ``FileNotFoundError`` if the lua module is not installed.
    """
    found: dict[str, str] = {}
    for pkg, name in (
        ("libnginx-mod-http-ndk", "ndk_http_module.so"),
        ("libnginx-mod-http-lua", "ngx_http_lua_module.so"),
    ):
        path = ""
        try:
            listing = subprocess.run(
                ["dpkg", "-L", pkg], capture_output=True, text=True, timeout=10
            ).stdout
            path = next((p for p in listing.split() if p.endswith("/" + name)), "")
        except (OSError, subprocess.TimeoutExpired):
            pass
        if not path and os.path.exists(f"/usr/lib/nginx/modules/{name}"):
            path = f"/usr/lib/nginx/modules/{name}"
        if path:
            found[name] = path
    if "ngx_http_lua_module.so" not in found:
        raise FileNotFoundError(
            "lua-nginx-module not found (Debian: apt-get install nginx-light "
            "libnginx-mod-http-lua lua-resty-core)"
        )
    return [found[n] for n in ("ndk_http_module.so", "ngx_http_lua_module.so") if n in found]


def start_nginx(reg: ProcessRegistry, tmp: Path, port: int, args: argparse.Namespace) -> Server:
    """nginx + lua-nginx-module in the foreground, prefix, pid and temp paths inside ``tmp``."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise FileNotFoundError("nginx not found (Debian: apt-get install nginx-light)")
    modules = "\n".join(f"load_module {p};" for p in lua_module_paths())
    conf = (CONFIGS / "nginx.conf.template").read_text()
    for key, value in {
        "@LOAD_MODULES@": modules,
        "@WORKERS@": str(args.workers),
        "@PREFIX@": str(tmp),
        "@PORT@": str(port),
    }.items():
        conf = conf.replace(key, value)
    conf_path = tmp / "nginx.conf"
    conf_path.write_text(conf)
    argv = [nginx, "-p", str(tmp), "-c", str(conf_path), "-g", "daemon off;"]
    return reg.start("nginx-lua", argv, cwd=tmp, log_path=tmp / "output.log")


def start_gunicorn(reg: ProcessRegistry, tmp: Path, port: int, args: argparse.Namespace) -> Server:
    """``gunicorn -k gevent`` serving bench/configs/wsgi_hello.py; access log off (its default)."""
    gunicorn = args.gunicorn or str(VENV_BIN / "gunicorn")
    if not os.path.exists(gunicorn) and not shutil.which(gunicorn):
        raise FileNotFoundError(
            f"gunicorn not found at {gunicorn} (run `make test` to build .venv)"
        )
    argv = [
        gunicorn,
        "-k",
        "gevent",
        "-w",
        str(args.workers),
        "-b",
        f"{HOST}:{port}",
        "--pythonpath",
        str(CONFIGS),
        "--error-logfile",
        str(tmp / "error.log"),
        "--log-level",
        "warning",
        "--graceful-timeout",
        "5",
        "--no-control-socket",
        "wsgi_hello:app",
    ]
    return reg.start("gunicorn", argv, cwd=tmp, log_path=tmp / "output.log")


def start_bare_loop(reg: ProcessRegistry, tmp: Path, port: int, args: argparse.Namespace) -> Server:
    """bench/configs/bare_loop.py: a bare gevent + httptools loop, the floor under edgeworker."""
    argv = [_venv_python(), str(CONFIGS / "bare_loop.py"), HOST, str(port), str(args.workers)]
    return reg.start("bare-loop", argv, cwd=tmp, log_path=tmp / "output.log")


def edgeworker_command() -> tuple[list[str], dict[str, str]]:
    """The edgeworker console script of .venv, else ``python -m edgeworker`` from the repo."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    script = VENV_BIN / "edgeworker"
    if script.exists():
        return [str(script)], env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return [_venv_python(), "-m", "edgeworker"], env


def render_edgeworker_config(text: str, port: int, workers: int) -> str:
    """The bench config with its ``listen`` set to ``port`` and ``workers`` set to ``workers``.

    Raises ``ValueError`` if the config has no ``listen`` or no ``workers`` line to replace.
    """
    text, n_listen = re.subn(
        r"^(\s*)listen\s*=.*$", rf'\1listen = ["{HOST}:{port}"]', text, flags=re.M
    )
    text, n_workers = re.subn(r"^(\s*)workers\s*=.*$", rf"\1workers = {workers}", text, flags=re.M)
    if n_listen != 1 or n_workers != 1:
        raise ValueError(
            "the edgeworker bench config needs exactly one `listen` and one `workers` line"
        )
    return text


def start_edgeworker(
    reg: ProcessRegistry, tmp: Path, port: int, args: argparse.Namespace, metrics: bool = True
) -> Server:
    """``edgeworker run -c`` a copy of bench/configs/edgeworker.toml placed in ``tmp/configs``.

    The handlers dir is copied to ``tmp/handlers``, so ``python_path = ["../handlers"]`` and the
    relative pid file resolve inside ``tmp``.
    """
    src = Path(args.edgeworker_config)
    (tmp / "configs").mkdir()
    shutil.copytree(HANDLERS, tmp / "handlers")
    conf_path = tmp / "configs" / src.name
    text = render_edgeworker_config(src.read_text(), port, args.workers)
    conf_path.write_text(text if metrics else _metrics_off(text))
    cmd, env = edgeworker_command()
    if args.edgeworker:
        cmd = args.edgeworker.split()
    argv = [*cmd, "run", "-c", str(conf_path)]
    name = "edgeworker" if metrics else "edgeworker-metrics-off"
    return reg.start(name, argv, cwd=tmp, env=env, log_path=tmp / "output.log")


def start_edgeworker_metrics_off(
    reg: ProcessRegistry, tmp: Path, port: int, args: argparse.Namespace
) -> Server:
    """``start_edgeworker`` with ``[main] metrics = false``: the baseline of the metrics cost."""
    return start_edgeworker(reg, tmp, port, args, metrics=False)


def _metrics_off(text: str) -> str:
    """The bench config with ``metrics = false`` in ``[main]`` (ValueError if no [main])."""
    text, n = re.subn(r"^\[main\]\s*$", "[main]\nmetrics = false", text, count=1, flags=re.M)
    if n != 1:
        raise ValueError("the edgeworker bench config needs a [main] table")
    return text


@dataclass
class Target:
    """A server under test and the cases (paths) measured on it."""

    name: str
    cases: tuple[str, ...]
    start: Callable[[ProcessRegistry, Path, int, argparse.Namespace], Server]
    startup_timeout: float = 30.0


TARGETS = (
    Target("nginx-lua", ("hello", "incr"), start_nginx),
    Target("gunicorn", ("hello",), start_gunicorn),
    Target("edgeworker", ("hello", "incr"), start_edgeworker),
    Target("edgeworker-metrics-off", ("hello",), start_edgeworker_metrics_off),
    Target("bare-loop", ("hello",), start_bare_loop),
)


# ---------------------------------------------------------------------------------------------
# running


log = logger("http_bench")


def read_counter(port: int) -> int:
    """The value the server's /count reports for our address. Raises ValueError if not a number."""
    reply = http_get(HOST, port, "/count")
    if reply.status != 200:
        raise ValueError(f"GET /count answered {reply.status}: {reply.body[:200]!r}")
    return int(reply.body.strip() or b"0")


def check_reply(port: int, path: str) -> None:
    """GET ``path`` must answer 200 with ``hello\\n``; raises RuntimeError otherwise."""
    reply = http_get(HOST, port, path)
    if reply.status != 200 or reply.body != EXPECTED_BODY:
        raise RuntimeError(
            f"GET {path} answered {reply.status} {reply.body[:300]!r}, expected 200 'hello\\n'"
        )


def wait_until_serving(server: Server, port: int, timeout: float) -> None:
    """Wait for the port, then for ``GET /hello`` to answer 200 ``hello\\n`` (bounded)."""
    deadline = time.monotonic() + timeout
    wait_for_port(HOST, port, timeout, server.proc)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited with status {server.proc.returncode}")
        try:
            check_reply(port, "/hello")
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"GET /hello did not answer 'hello' within {timeout:g}s: {last}")


@dataclass
class Running:
    """A started target: its server, port and temp dir."""

    target: Target
    result: TargetResult
    server: Server
    port: int
    tmp: Path


def measure_round(port: int, case: str, server: Server, args: argparse.Namespace) -> Round:
    """One round of a case: warm up, measure (with the foreign-CPU meter), and for ``incr``
    check that the shared counter grew by at least the completed requests. Never raises except
    KeyboardInterrupt; errors land in ``Round.error``."""
    path = "/" + case
    rnd = Round()
    url = f"http://{HOST}:{port}{path}"
    before = None
    try:
        check_reply(port, path)
        if case == "incr":
            before = read_counter(port)
        if args.warmup > 0:
            log(f"  {server.name} {path}: warm-up {args.warmup:g}s")
            rnd.warmup = run_wrk(
                url, threads=args.threads, connections=args.connections, duration=args.warmup
            )
        log(
            f"  {server.name} {path}: {args.duration:g}s, "
            f"{args.threads} threads, {args.connections} connections"
        )
        pids = [server.pid, *child_pids(server.pid)]
        meter = CpuMeter()
        meter.start(pids)
        rnd.wrk = run_wrk(
            url, threads=args.threads, connections=args.connections, duration=args.duration
        )
        rnd.foreign_cpu_pct = meter.stop(pids)
        rnd.memory = workers_rss(server.pid)
        if not server.alive():
            raise RuntimeError(f"server exited with status {server.proc.returncode} during the run")
        if rnd.wrk.non_2xx_3xx:
            rnd.error = f"{rnd.wrk.non_2xx_3xx} non-2xx/3xx responses"
        elif rnd.wrk.requests == 0:
            rnd.error = "no request completed"
        if case == "incr" and before is not None:
            rnd.counted = read_counter(port) - before
            done = rnd.wrk.requests + (rnd.warmup.requests if rnd.warmup else 0)
            if rnd.counted < done:
                rnd.error = rnd.error or (
                    f"counter grew by {rnd.counted}, fewer than the {done} completed requests"
                )
    except Exception as exc:  # noqa: BLE001 - reported per case, the bench goes on
        rnd.error = f"{type(exc).__name__}: {exc}"
    return rnd


def _server_output(server: Server, tmp: Path) -> str:
    tail = server.output_tail()
    log_file = tmp / "error.log"
    if log_file.exists() and log_file.stat().st_size:
        tail += "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
    return "\n--- server output (tail) ---\n" + tail.strip() if tail.strip() else ""


def start_target(
    target: Target, reg: ProcessRegistry, args: argparse.Namespace
) -> Running | TargetResult:
    """Start the target and measure its idle workers. Returns the running target, or the failed
    result (server stopped, output tail in ``error``). Never raises except KeyboardInterrupt."""
    result = TargetResult(target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f"http_bench-{target.name}-"))
    server = None
    try:
        port = free_port()
        log(f"{target.name}: starting on {HOST}:{port} in {tmp}")
        server = target.start(reg, tmp, port, args)
        result.command = server.argv
        wait_until_serving(server, port, target.startup_timeout)
        wait_for_workers(server.pid, args.workers, target.startup_timeout)
        time.sleep(args.settle)
        result.idle = workers_rss(server.pid)
        result.status = "ok"
        return Running(target, result, server, port, tmp)
    except Exception as exc:  # noqa: BLE001 - reported in the table, other targets still run
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        if server is not None:
            result.error += _server_output(server, tmp)
        if args.verbose:
            traceback.print_exc()
        finish_target(Running(target, result, server, 0, tmp) if server else None, reg, args, tmp)
        return result


def finish_target(
    run: Running | None, reg: ProcessRegistry, args: argparse.Namespace, tmp: Path
) -> None:
    """Stop the server (if any) and remove (or, with --keep, keep) its temp dir."""
    if run is not None:
        run.server.stop()
        if run.server in reg.servers:
            reg.servers.remove(run.server)
    if args.keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(
    args: argparse.Namespace, reg: ProcessRegistry, skip: dict[str, bool]
) -> dict[str, TargetResult]:
    """Start every target that is not skipped, then measure every case ``--rounds`` times,
    interleaving the targets within each round, then stop them all. Every other round runs
    the targets and their cases in the reverse order, so a drift of the machine's speed over a
    round (a neighbour's load, the host's clock) weighs on every case alike."""
    results: dict[str, TargetResult] = {}
    running: list[Running] = []
    try:
        for target in TARGETS:
            if skip[target.name]:
                results[target.name] = TargetResult(target.name, "skipped", "skipped by flag")
                continue
            started = start_target(target, reg, args)
            if isinstance(started, Running):
                running.append(started)
                results[target.name] = started.result
            else:
                results[target.name] = started
        for n in range(args.rounds):
            log(f"round {n + 1} of {args.rounds}")
            flip = n % 2 == 1
            for run in reversed(running) if flip else running:
                for case in reversed(run.target.cases) if flip else run.target.cases:
                    if run.result.status == "ok":
                        rnd = measure_round(run.port, case, run.server, args)
                    else:
                        rnd = Round(error="the server was not running")
                    run.result.cases.setdefault(case, CaseResult("/" + case)).rounds.append(rnd)
                if run.result.status == "ok" and not run.server.alive():
                    run.result.status = "failed"
                    run.result.error = (
                        f"server exited with status {run.server.proc.returncode} during the bench"
                        + _server_output(run.server, run.tmp)
                    )
    finally:
        for run in running:
            finish_target(run, reg, args, run.tmp)
    return results


# ---------------------------------------------------------------------------------------------
# report

#: (target, case) in the order of the tables
CASES = tuple((t.name, c) for t in TARGETS for c in t.cases)


def series(
    results: dict[str, TargetResult],
    name: str,
    case: str,
    value: Callable[[Round], float | None],
    rounds: int,
) -> list[float | None]:
    """``value`` of ``name``'s ``case`` in each round, None where it was not measured or failed."""
    res = results.get(name)
    c = res.cases.get(case) if res else None
    out: list[float | None] = []
    for i in range(rounds):
        rnd = c.rounds[i] if c is not None and i < len(c.rounds) else None
        out.append(value(rnd) if rnd is not None and rnd.ok else None)
    return out


def _rps(r: Round) -> float | None:
    return r.wrk.rps if r.wrk else None


def _p50(r: Round) -> float | None:
    return r.wrk.p50_ms if r.wrk else None


def _p99(r: Round) -> float | None:
    return r.wrk.p99_ms if r.wrk else None


def _largest_worker_mib(r: Round) -> float | None:
    return r.memory.rss_max_kb / 1024 if r.memory and r.memory.rss_kb else None


def foreign_cpu(results: dict[str, TargetResult], rounds: int) -> list[list[float | None]]:
    """The other-CPU % of every measurement of each round (every target, every case)."""
    out: list[list[float | None]] = [[] for _ in range(rounds)]
    for res in results.values():
        for c in res.cases.values():
            for i, rnd in enumerate(c.rounds[:rounds]):
                out[i].append(rnd.foreign_cpu_pct)
    return out


def difference(a: list[float | None], b: list[float | None]) -> list[float | None]:
    """``a[i] - b[i]`` of every round, None where a side is missing."""
    return [None if x is None or y is None else x - y for x, y in zip(a, b, strict=True)]


def compute_goals(results: dict[str, TargetResult], rounds: int) -> list[Goal]:
    """The goals, each taken within each round, then the figures shown for context."""
    dist = disturbed_rounds(foreign_cpu(results, rounds))

    def rps(name: str, case: str) -> list[float | None]:
        return series(results, name, case, _rps, rounds)

    def p99(name: str, case: str) -> list[float | None]:
        return series(results, name, case, _p99, rounds)

    ew_incr = per_round_ratio(rps("edgeworker", "incr"), rps("edgeworker", "hello"))
    ngx_incr = per_round_ratio(rps("nginx-lua", "incr"), rps("nginx-lua", "hello"))
    ew_hello = rps("edgeworker", "hello")
    return [
        Goal(
            "req/s edgeworker /hello ÷ nginx-lua /hello",
            ">=",
            0.50,
            per_round_ratio(ew_hello, rps("nginx-lua", "hello")),
            dist,
        ),
        Goal(
            "shared-dict incr route: (edgeworker /incr ÷ /hello) − (nginx-lua /incr ÷ /hello)",
            ">=",
            0.0,
            difference(ew_incr, ngx_incr),
            dist,
            unit="",
            note="the share of its /hello rate each server keeps on /incr, edgeworker's minus "
            "nginx-lua's; >= 0: the shared-dict incr in the access phase costs edgeworker, "
            "relatively, no more than it costs nginx",
        ),
        Goal("req/s edgeworker /incr ÷ edgeworker /hello", ">=", 0.9, ew_incr, dist),
        Goal(
            "req/s edgeworker /hello ÷ gunicorn /hello",
            ">=",
            3.0,
            per_round_ratio(ew_hello, rps("gunicorn", "hello")),
            dist,
        ),
        Goal(
            "p99 edgeworker /hello ÷ nginx-lua /hello",
            "<=",
            3.0,
            per_round_ratio(p99("edgeworker", "hello"), p99("nginx-lua", "hello")),
            dist,
        ),
        Goal(
            "p99 edgeworker /incr ÷ nginx-lua /incr",
            "<=",
            3.0,
            per_round_ratio(p99("edgeworker", "incr"), p99("nginx-lua", "incr")),
            dist,
        ),
        Goal(
            "RSS of the largest edgeworker worker after the round's load",
            "<=",
            IDLE_RSS_TARGET_MIB,
            series(results, "edgeworker", "incr", _largest_worker_mib, rounds),
            dist,
            unit=" MiB",
            note="read from /proc right after the round's /incr run (MiB)",
        ),
        Goal("req/s nginx-lua /incr ÷ nginx-lua /hello", ">=", None, ngx_incr, dist),
        Goal(
            "req/s edgeworker /hello ÷ the same with metrics = false",
            ">=",
            None,
            per_round_ratio(ew_hello, rps("edgeworker-metrics-off", "hello")),
            dist,
            note="what the status counters cost; two identical servers differ by a few % here",
        ),
        Goal(
            "req/s edgeworker /hello ÷ bare-loop /hello",
            ">=",
            None,
            per_round_ratio(ew_hello, rps("bare-loop", "hello")),
            dist,
        ),
        Goal(
            "req/s bare-loop /hello ÷ nginx-lua /hello",
            ">=",
            None,
            per_round_ratio(rps("bare-loop", "hello"), rps("nginx-lua", "hello")),
            dist,
        ),
        Goal(
            "req/s gunicorn /hello ÷ nginx-lua /hello",
            ">=",
            None,
            per_round_ratio(rps("gunicorn", "hello"), rps("nginx-lua", "hello")),
            dist,
        ),
    ]


def kept_median(values: list[float | None], dist: list[bool]) -> float | None:
    """The median of the values of the rounds not flagged in ``dist`` (None if there are none):
    the same rounds a Goal keeps, for the tables' absolute figures."""
    kept = [v for i, v in enumerate(values) if v is not None and not (i < len(dist) and dist[i])]
    return statistics.median(kept) if kept else None


def cell(v: float | None, spec: str, disturbed: bool = False) -> str:
    """A table cell: ``v`` formatted, ``-`` when missing, ``*`` after a disturbed round's."""
    return ("-" if v is None else format(v, spec)) + ("*" if disturbed else "")


def other_cpu_row(foreign: list[list[float | None]], dist: list[bool]) -> list[str]:
    """The table row of the largest other-CPU % of each round (then no median)."""
    worst = [max((p for p in rnd if p is not None), default=None) for rnd in foreign]
    return ["other CPU % (largest)", *(cell(v, ".0f", dist[i]) for i, v in enumerate(worst)), "-"]


def build_tables(results: dict[str, TargetResult], args: argparse.Namespace) -> list[Table]:
    """Requests per second of each round; latency and memory; idle RSS."""
    n = args.rounds
    foreign = foreign_cpu(results, n)
    dist = disturbed_rounds(foreign)
    measured = [(name, case) for name, case in CASES if results[name].cases.get(case)]
    rows, notes = [], []
    for name, case in measured:
        rps = series(results, name, case, _rps, n)
        med = kept_median(rps, dist)
        rows.append(
            [
                f"{name} /{case}",
                *(cell(v, ",.0f", dist[i]) for i, v in enumerate(rps)),
                cell(med, ",.0f"),
            ]
        )
        for i, rnd in enumerate(results[name].cases[case].rounds):
            if rnd.error and results[name].status == "ok":
                notes.append(f"{name} /{case}, round {i + 1}: {rnd.error}")
    rows.append(other_cpu_row(foreign, dist))
    for name, res in results.items():
        if res.status == "skipped":
            notes.append(f"{name}: skipped ({res.error})")
        elif res.status == "failed":
            notes.append(f"{name}: FAILED: {res.error.splitlines()[0] if res.error else ''}")
    notes += [
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s (keep-alive) after a "
        f"{args.warmup:g} s warm-up; {args.workers} workers per server, access logs off; one "
        "server measured at a time, every other round in the reverse order",
        f"edgeworker, gunicorn and the bare loop run on {servers_python(_venv_python())}",
        "other CPU %: the share of the machine used during a run by processes other than the "
        "server and wrk (the largest of the round's runs); over "
        f"{DISTURBED_PCT:g} % the round is marked * and left out of the medians and verdicts",
        "/incr: the shared counter must grow by at least the requests wrk completed, else the "
        "run counts as failed (-)",
    ]
    per_round = Table(
        "Requests per second in each round, then the median of the kept rounds",
        ["case", *(f"round {i + 1}" for i in range(n)), "median"],
        rows,
        notes=notes,
        right=tuple(range(1, n + 2)),
    )
    lat_rows = []
    for name, case in measured:
        rounds = results[name].cases[case].rounds
        last = next((r.memory for r in reversed(rounds) if r.memory), None)
        lat_rows.append(
            [
                f"{name} /{case}",
                cell(kept_median(series(results, name, case, _p50, n), dist), ".2f"),
                cell(kept_median(series(results, name, case, _p99, n), dist), ".2f"),
                str(sum(r.wrk.errors for r in rounds if r.wrk)),
                mib(last.rss_sum_kb) if last else "-",
                " + ".join(mib(k) for k in last.rss_kb) if last else "-",
            ]
        )
    latency = Table(
        "Latency (median of the kept rounds) and worker memory after the load",
        ["case", "p50 ms", "p99 ms", "errors", "RSS MiB", "per worker MiB"],
        lat_rows,
        notes=[
            "errors: wrk's socket errors (connect, read, write, timeout) and non-2xx/3xx answers,"
            " all rounds",
            "RSS: the server's worker processes (children of its master) after its last run",
        ],
        right=(1, 2, 3, 4),
    )
    idle_rows = [
        [
            name,
            mib(res.idle.rss_sum_kb),
            " + ".join(mib(k) for k in res.idle.rss_kb),
            " + ".join(mib(k) for k in res.idle.pss_kb),
        ]
        for name, res in results.items()
        if res.idle is not None
    ]
    idle = Table(
        "Worker RSS after start-up, before any load",
        ["server", "RSS MiB", "per worker MiB", "PSS per worker MiB"],
        idle_rows,
        notes=[
            f"read {args.settle:g} s after the workers started; PSS splits the pages the "
            "forked workers share"
        ],
        right=(1,),
    )
    return [per_round, latency, idle]


def _venv_python() -> str:
    """The interpreter of .venv (the servers'), else this one."""
    python = VENV_BIN / "python"
    return str(python if python.exists() else sys.executable)


def environment() -> dict[str, str]:
    """Versions and machine facts recorded in the JSON output."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": str(os.cpu_count()),
        "python": servers_python(_venv_python()),
        "wrk": tool_version([find_wrk(), "--version"]),
        "nginx": tool_version(["nginx", "-v"]),
        "gunicorn": tool_version([str(VENV_BIN / "gunicorn"), "--version"]),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (5)")
    p.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up seconds before each run (1; 0 = none)"
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    p.add_argument("--no-nginx", action="store_true", help="skip nginx + lua")
    p.add_argument("--no-gunicorn", action="store_true", help="skip gunicorn -k gevent")
    p.add_argument(
        "--no-bare",
        action="store_true",
        help="skip the bare gevent + httptools loop (context only)",
    )
    p.add_argument("--no-edgeworker", action="store_true", help="skip edgeworker")
    p.add_argument(
        "--no-metrics-off",
        action="store_true",
        help="skip edgeworker with [main] metrics = false (the metrics-cost baseline)",
    )
    p.add_argument(
        "--edgeworker-config",
        default=str(CONFIGS / "edgeworker.toml"),
        help="edgeworker config (its listen/workers lines are replaced; python_path ../handlers)",
    )
    p.add_argument(
        "--edgeworker", default="", help="command to run edgeworker (default: .venv/bin/edgeworker)"
    )
    p.add_argument("--gunicorn", default="", help="gunicorn binary (default: .venv/bin/gunicorn)")
    p.add_argument(
        "--settle", type=float, default=1.0, help="seconds idle before measuring idle RSS (1)"
    )
    add_common_args(p)
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (configs, logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failures")
    args = p.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or min(args.threads, args.workers, args.rounds) < 1:
        p.error("--duration >= 1, --warmup >= 0, --threads, --workers and --rounds >= 1")
    if args.connections < args.threads:
        p.error("--connections must be >= --threads")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; see the module docstring for the exit status."""
    started = time.time()
    args = parse_args(argv)
    try:
        find_wrk()
    except FileNotFoundError as exc:
        print(f"http_bench: {exc}", file=sys.stderr)
        return 2
    skip = {
        "nginx-lua": args.no_nginx,
        "gunicorn": args.no_gunicorn,
        "edgeworker": args.no_edgeworker,
        "edgeworker-metrics-off": args.no_edgeworker or args.no_metrics_off,
        "bare-loop": args.no_bare,
    }
    with ProcessRegistry() as reg:
        try:
            results = run_all(args, reg, skip)
        except KeyboardInterrupt:
            log("interrupted: stopping servers")
            reg.stop_all()
            return 130
    goals = compute_goals(results, args.rounds)
    extra = {
        "settings": {
            k: getattr(args, k)
            for k in ("duration", "warmup", "threads", "connections", "workers", "settle")
        },
        "environment": environment(),
        "targets": {k: v.to_json() for k, v in results.items()},
    }
    status = finish("http_bench", args, goals, build_tables(results, args), started, extra)
    failed = [
        name
        for name, res in results.items()
        if res.status == "failed"
        or any(r.error for c in res.cases.values() for r in c.rounds if res.status == "ok")
    ]
    if failed:
        log(f"not measured as asked: {', '.join(failed)} (see the notes above)")
        for name in failed:
            if results[name].status == "failed":
                cmd = " ".join(results[name].command)
                print(f"\n{name} NOT RUNNING ({cmd}): {results[name].error}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
