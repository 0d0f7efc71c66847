#!/usr/bin/env python3
"""HTTP benchmark: edgeworker against nginx + lua-nginx-module and gunicorn -k gevent.

Every target runs with the same number of workers (2), access logs off, on a free 127.0.0.1
port, in its own temp dir; the targets run one after the other (never at the same time). For each
case wrk runs a warm-up (2 s, discarded) and then the measured run (keep-alive, 2 threads, 50
connections, 10 s by default). The bench prints req/s, p50/p99 latency, worker RSS, and the
ratios of its targets with PASS/FAIL:

    edgeworker hello / nginx-lua hello req/s     >= 0.40
    edgeworker hello / gunicorn hello req/s      >= 3
    edgeworker incr / edgeworker hello req/s     >= 0.9
    edgeworker hello / same, metrics off, req/s  >= 0.95 (status counters cost <= 5%)
    p99 edgeworker / p99 nginx-lua (hello, incr) <= 3
    idle edgeworker worker RSS                   <= 40 MiB

For context (no target) it also runs bench/configs/bare_loop.py, a bare gevent + httptools loop
with the same worker count: the floor under any server built on them.

Usage: python bench/http_bench.py [--duration 10] [--no-nginx] [--no-gunicorn]
[--no-edgeworker] [--no-metrics-off] [--no-bare] [--json FILE] [--check]. The metrics on/off ratio is
small against the noise of one run: use --rounds 3 or more for it. See bench/README.md.

Exit status: 0 after a complete run (whatever the verdicts), 1 with ``--check`` when any check is
not PASS, 2 when the harness itself cannot run (wrk missing, bad arguments).
"""

from __future__ import annotations

import argparse
import datetime
import json
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
    Check,
    CpuMeter,
    ProcessRegistry,
    Server,
    WorkersMemory,
    WrkResult,
    child_pids,
    find_wrk,
    format_table,
    free_port,
    http_get,
    mib,
    ratio,
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
FOREIGN_CPU_WARN_PCT = 5.0


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

    def to_json(self) -> dict[str, object]:
        return {
            "ok": not self.error,
            "error": self.error,
            "wrk": self.wrk.to_json() if self.wrk else None,
            "warmup": self.warmup.to_json() if self.warmup else None,
            "counted": self.counted,
            "foreign_cpu_pct": self.foreign_cpu_pct,
        }


@dataclass
class CaseResult:
    """A case of a target (e.g. edgeworker /incr) over every round.

    The reported figures are those of the median round by req/s (with one round, that round).
    Any round with an error makes the whole case an error.
    """

    path: str
    rounds: list[Round] = field(default_factory=list)
    memory: WorkersMemory | None = None  # after the last round

    @property
    def error(self) -> str:
        return next((r.error for r in self.rounds if r.error), "" if self.rounds else "not run")

    @property
    def median(self) -> Round | None:
        done = sorted((r for r in self.rounds if r.wrk is not None), key=lambda r: r.wrk.rps)
        return done[(len(done) - 1) // 2] if done else None

    @property
    def wrk(self) -> WrkResult | None:
        m = self.median
        return m.wrk if m else None

    @property
    def foreign_cpu_pct(self) -> float | None:
        """The largest foreign CPU share seen in any round."""
        seen = [r.foreign_cpu_pct for r in self.rounds if r.foreign_cpu_pct is not None]
        return max(seen) if seen else None

    def to_json(self) -> dict[str, object]:
        m = self.median
        return {
            "path": self.path,
            "ok": not self.error,
            "error": self.error,
            "wrk": m.wrk.to_json() if m and m.wrk else None,
            "workers_after": self.memory.to_json() if self.memory else None,
            "foreign_cpu_pct": self.foreign_cpu_pct,
            "rounds": [r.to_json() for r in self.rounds],
        }


@dataclass
class TargetResult:
    """Everything measured for one server."""

    name: str
    status: str = "skipped"  # "ok", "failed", "skipped"
    error: str = ""
    command: list[str] = field(default_factory=list)
    idle: WorkersMemory | None = None
    cases: dict[str, CaseResult] = field(default_factory=dict)

    def case(self, name: str) -> CaseResult | None:
        """The case if it was measured without error, else None."""
        c = self.cases.get(name)
        return c if c is not None and c.wrk is not None and not c.error else None

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


def start_bare_loop(reg: ProcessRegistry, tmp: Path, port: int, args: argparse.Namespace
                    ) -> Server:
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


def log(msg: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[http_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
            if args.rounds > 1:
                log(f"round {n + 1} of {args.rounds}")
            flip = n % 2 == 1
            for run in reversed(running) if flip else running:
                if run.result.status != "ok":
                    continue
                for case in reversed(run.target.cases) if flip else run.target.cases:
                    rnd = measure_round(run.port, case, run.server, args)
                    run.result.cases.setdefault(case, CaseResult("/" + case)).rounds.append(rnd)
                if not run.server.alive():
                    run.result.status = "failed"
                    run.result.error = (
                        f"server exited with status {run.server.proc.returncode} during the bench"
                        + _server_output(run.server, run.tmp)
                    )
        for run in running:
            if run.result.status == "ok":
                for case in run.result.cases.values():
                    case.memory = workers_rss(run.server.pid)
    finally:
        for run in running:
            finish_target(run, reg, args, run.tmp)
    return results


# ---------------------------------------------------------------------------------------------
# report


def _rps(t: dict[str, TargetResult], name: str, case: str) -> float | None:
    c = t[name].case(case) if name in t else None
    return c.wrk.rps if c else None


def _p99(t: dict[str, TargetResult], name: str, case: str) -> float | None:
    c = t[name].case(case) if name in t else None
    return c.wrk.p99_ms if c else None


def compute_checks(t: dict[str, TargetResult]) -> tuple[list[Check], list[Check]]:
    """The issue's target checks, and informational ratios (no target) for context."""
    ew_idle = t["edgeworker"].idle if "edgeworker" in t else None
    checks = [
        Check(
            "req/s edgeworker hello / nginx-lua hello",
            ratio(_rps(t, "edgeworker", "hello"), _rps(t, "nginx-lua", "hello")),
            ">=",
            0.40,
        ),
        Check(
            "req/s edgeworker hello / gunicorn hello",
            ratio(_rps(t, "edgeworker", "hello"), _rps(t, "gunicorn", "hello")),
            ">=",
            3.0,
        ),
        Check(
            "req/s edgeworker incr / edgeworker hello",
            ratio(_rps(t, "edgeworker", "incr"), _rps(t, "edgeworker", "hello")),
            ">=",
            0.9,
        ),
        Check(
            "p99 edgeworker hello / nginx-lua hello",
            ratio(_p99(t, "edgeworker", "hello"), _p99(t, "nginx-lua", "hello")),
            "<=",
            3.0,
        ),
        Check(
            "p99 edgeworker incr / nginx-lua incr",
            ratio(_p99(t, "edgeworker", "incr"), _p99(t, "nginx-lua", "incr")),
            "<=",
            3.0,
        ),
        Check(
            "req/s edgeworker hello / edgeworker hello with metrics off",
            ratio(_rps(t, "edgeworker", "hello"), _rps(t, "edgeworker-metrics-off", "hello")),
            ">=",
            0.95,
        ),
        Check(
            "idle edgeworker worker RSS (largest worker)",
            ew_idle.rss_max_kb / 1024 if ew_idle and ew_idle.rss_kb else None,
            "<=",
            IDLE_RSS_TARGET_MIB,
            unit=" MiB",
        ),
    ]
    info = [
        Check(
            "req/s nginx-lua incr / nginx-lua hello",
            ratio(_rps(t, "nginx-lua", "incr"), _rps(t, "nginx-lua", "hello")),
            ">=",
            0.0,
        ),
        Check(
            "req/s gunicorn hello / nginx-lua hello",
            ratio(_rps(t, "gunicorn", "hello"), _rps(t, "nginx-lua", "hello")),
            ">=",
            0.0,
        ),
        Check(
            "req/s bare-loop hello / nginx-lua hello",
            ratio(_rps(t, "bare-loop", "hello"), _rps(t, "nginx-lua", "hello")),
            ">=",
            0.0,
        ),
        Check(
            "req/s edgeworker hello / bare-loop hello",
            ratio(_rps(t, "edgeworker", "hello"), _rps(t, "bare-loop", "hello")),
            ">=",
            0.0,
        ),
    ]
    return checks, info


#: the req/s ratios also shown per round: (label, numerator, denominator), each (target, case)
PER_ROUND = (
    ("edgeworker hello / nginx-lua hello", ("edgeworker", "hello"), ("nginx-lua", "hello")),
    ("edgeworker incr / edgeworker hello", ("edgeworker", "incr"), ("edgeworker", "hello")),
    ("nginx-lua incr / nginx-lua hello", ("nginx-lua", "incr"), ("nginx-lua", "hello")),
)


def per_round_ratios(t: dict[str, TargetResult]) -> dict[str, list[float]]:
    """Each PER_ROUND ratio taken within each round (the rounds run the targets in turn), for
    the rounds where both sides ran; ratios whose sides were not run are left out."""
    out: dict[str, list[float]] = {}
    for label, (an, ac), (bn, bc) in PER_ROUND:
        a = t[an].case(ac) if an in t else None
        b = t[bn].case(bc) if bn in t else None
        if a is None or b is None:
            continue
        out[label] = [
            ra.wrk.rps / rb.wrk.rps
            for ra, rb in zip(a.rounds, b.rounds, strict=False)
            if ra.wrk is not None and rb.wrk is not None and rb.wrk.rps
        ]
    return out


def _fmt_value(c: Check) -> str:
    if c.value is None:
        return "n/a"
    return f"{c.value:.2f}x" if c.unit == "x" else f"{c.value:.1f}{c.unit}"


def render_report(
    results: dict[str, TargetResult],
    checks: list[Check],
    info: list[Check],
    args: argparse.Namespace,
) -> str:
    """The human-readable report printed on stdout."""
    out = [
        f"HTTP bench: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
        f"(warm-up {args.warmup:g}s, keep-alive), {args.workers} workers per server, access logs off"
        + (f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""),
        f"edgeworker, gunicorn and the bare loop run on {servers_python(_venv_python())}",
        "",
    ]
    rows = []
    for name, res in results.items():
        if res.status != "ok":
            reason = res.error.splitlines()[0] if res.error else ""
            rows.append([name, res.status.upper(), "-", "-", "-", "-", "-", "-", reason])
            continue
        for c in res.cases.values():
            label = f"{name} {c.path}"
            if c.wrk is None:
                rows.append([label, "ERROR", "-", "-", "-", "-", "-", "-", c.error])
                continue
            mem = c.memory
            rows.append(
                [
                    label,
                    f"{c.wrk.rps:,.0f}",
                    f"{c.wrk.p50_ms:.2f}",
                    f"{c.wrk.p99_ms:.2f}",
                    str(c.wrk.errors),
                    mib(mem.rss_sum_kb) if mem else "-",
                    " + ".join(mib(k) for k in mem.rss_kb) if mem else "-",
                    "-" if c.foreign_cpu_pct is None else f"{c.foreign_cpu_pct:.0f}",
                    c.error,
                ]
            )
    out.append(
        format_table(
            [
                "case",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "RSS MiB",
                "per worker MiB",
                "other CPU %",
                "note",
            ],
            rows,
            right=(1, 2, 3, 4, 5, 7),
        )
    )
    busy = [
        f"{n} {c.path} {c.foreign_cpu_pct:.0f}%"
        for n, r in results.items()
        for c in r.cases.values()
        if c.foreign_cpu_pct is not None and c.foreign_cpu_pct > FOREIGN_CPU_WARN_PCT
    ]
    if busy:
        out.append(
            "WARNING: other processes used the CPU during "
            + ", ".join(busy)
            + ": req/s and latency of those cases are understated and the ratios unreliable."
        )
    out += ["", "worker RSS (after start-up, before load):"]
    if not any(r.idle for r in results.values()):
        out.append("  (none measured)")
    for name, res in results.items():
        if res.idle is not None:
            per = " + ".join(mib(k) for k in res.idle.rss_kb)
            width = max(len(n) for n in results)
            out.append(f"  {name:<{width}}  {mib(res.idle.rss_sum_kb):>6} MiB = {per} MiB")
    out += ["", "targets:"]
    out.append(
        format_table(
            ["check", "value", "target", "verdict"],
            [[c.name, _fmt_value(c), f"{c.op} {c.target:g}{c.unit}", c.verdict] for c in checks],
            right=(1,),
        )
    )
    out += ["", "for context:"]
    for c in info:
        out.append(f"  {c.name:<44} {_fmt_value(c)}")
    rounds = per_round_ratios(results)
    if rounds:
        out += ["", "req/s ratios within each round (then their median):"]
        for label, values in rounds.items():
            each = " ".join(f"{v:.3f}" for v in values)
            med = f"{statistics.median(values):.3f}" if values else "n/a"
            out.append(f"  {label:<38} {each}  median {med}")
    failures = [(n, r.error) for n, r in results.items() if r.status == "failed"]
    for name, err in failures:
        cmd = " ".join(results[name].command)
        out += ["", f"{name} NOT RUNNING ({cmd}): {err}"]
    return "\n".join(out)


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
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured case (10)")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds before each case (2; 0 = none)"
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every case N times, targets interleaved; report the median (1)",
    )
    p.add_argument("--no-nginx", action="store_true", help="skip nginx + lua")
    p.add_argument("--no-gunicorn", action="store_true", help="skip gunicorn -k gevent")
    p.add_argument("--no-bare", action="store_true",
                   help="skip the bare gevent + httptools loop (context only)")
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
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON to FILE")
    p.add_argument("--check", action="store_true", help="exit 1 unless every target check PASSes")
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
    checks, info = compute_checks(results)
    print(render_report(results, checks, info, args), flush=True)
    if args.json:
        doc = {
            "settings": {
                k: getattr(args, k)
                for k in ("duration", "warmup", "threads", "connections", "workers", "rounds")
            },
            "environment": environment(),
            "targets": {k: v.to_json() for k, v in results.items()},
            "checks": [c.to_json() for c in checks],
            "context": [c.to_json() for c in info],
            "per_round": per_round_ratios(results),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        log(f"results written to {args.json}")
    if args.check and any(c.verdict != "PASS" for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
