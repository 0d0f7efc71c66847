"""Lifecycle figures: reload under load, reload latency, respawn latency.

Runs, in one go on this machine:

1. **Reload under load**: wrk with keep-alive and wrk with ``Connection: close`` (1 thread,
   20 connections each) run together for ``--duration`` s (8) against a server with 2 workers
   while its master gets SIGHUP every ``--every`` s (0.5); every socket error, timeout or non-2xx
   answer counts as a failed request. edgeworker and nginx (``nginx -s reload`` is a SIGHUP to
   its master; ``--no-nginx`` leaves it out) take turns for ``--rounds`` rounds (5), every other
   round in the reverse order, 1 s apart.
2. **Reload latency** (``--rounds`` samples): the handler file is edited, ``edgeworker reload``
   runs, and the time from that command's start to the first answer of the new code (the
   command waits for the reload's outcome, so the time after its return is shown apart: it is
   close to 0).
3. **Respawn latency** (``--rounds`` samples): a server with **one** worker, whose handler
   answers its ``os.getpid()``; the worker is SIGKILLed, and the time until an answer comes from
   a new pid (with one worker nothing else can answer, so a surviving worker cannot be timed
   instead of the replacement).

Goals (bench/common.py's Goal, one value per round or sample): no failed request in any
edgeworker round of reloads under load (``<= 0``), reload latency ``<= 2`` s and respawn latency
``<= 1`` s in every sample; nginx's failed requests are shown for context. The other processes'
share of the CPU is measured during every run and sample; a latency sample beside more than
20 % is marked and left out, a failed request never is (it is a failure under any load).

A default run takes about 2 minutes.

Usage: ``.venv/bin/python bench/reload_bench.py [--duration 8] [--every 0.5] [--rounds 5]
[--no-nginx] [--json FILE] [--check]``. Exit status: 0 after a run (1 with ``--check`` unless
every goal is PASS), 2 when the harness cannot run (wrk missing, a server that does not start
or answers wrongly).
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CpuMeter,
    Goal,
    ProcessRegistry,
    Server,
    Table,
    add_common_args,
    child_pids,
    disturbed_rounds,
    find_wrk,
    finish,
    free_port,
    http_get,
    logger,
    parse_wrk_output,
    wait_for_port,
    wait_for_workers,
)
from proxy_bench import missing_tool  # noqa: E402

HOST = "127.0.0.1"
PY = sys.executable

APP = """import os


def version(req):
    return "{v}"


def pid(req):
    return str(os.getpid())
"""
EDGE_CONF = """
[main]
workers = {workers}
pid_file = "edgeworker.pid"
error_log = "error.log"
log_level = "warn"
python_path = ["."]
graceful_timeout = "10s"

[http]
access_log = "off"

[[server]]
listen = ["127.0.0.1:{port}"]

  [[server.location]]
  match = "= /v"
  content = "app:version"

  [[server.location]]
  match = "= /pid"
  content = "app:pid"
"""
NGINX_CONF = """
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location = /v {{ return 200 "v1"; }}
    }}
}}
"""


log = logger("reload_bench")


def reaped_jiffies(pid: int) -> int:
    """cutime + cstime of ``pid``: the CPU of the children it has reaped (fields 16 and 17 of
    stat(5)); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[13]) + int(fields[14])


class LifecycleCpu:
    """Other processes' share of the machine while a server's workers come and go.

    :class:`CpuMeter` counts the processes it is given at the start and at the end; a worker
    that exits in between (an old generation after a reload, a killed one) is counted here
    through its master's reaped-children time. This bench's own process (its polling client)
    counts as ours too.
    """

    def __init__(self, master: int) -> None:
        self.master = master
        self.meter = CpuMeter()
        self._reaped0 = 0
        self._t0 = 0.0

    def _pids(self) -> list[int]:
        return [self.master, *child_pids(self.master), os.getpid()]

    def start(self) -> None:
        self._reaped0 = reaped_jiffies(self.master)
        self._t0 = time.monotonic()
        self.meter.start(self._pids())

    def stop(self) -> float | None:
        pct = self.meter.stop(self._pids())
        elapsed = time.monotonic() - self._t0
        if pct is None or elapsed <= 0:
            return None
        capacity = elapsed * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
        return max(0.0, pct - (reaped_jiffies(self.master) - self._reaped0) / capacity * 100)


def wrk(url: str, duration: float, close: bool) -> subprocess.Popen:
    argv = [find_wrk(), "--latency", "-t", "1", "-c", "20", "-d", f"{max(1, round(duration))}s",
            "--timeout", "5s"]  # fmt: skip
    if close:
        argv += ["-H", "Connection: close"]
    return subprocess.Popen(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass
class LoadRun:
    """One run of reloads under load (None where it could not be measured)."""

    reloads: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # "keepalive", "close"
    failed: dict[str, int] = field(default_factory=dict)
    other_cpu: float | None = None
    error: str = ""

    @property
    def total_failed(self) -> int | None:
        return None if self.error else sum(self.failed.values())


def under_load(url: str, master_pid: int, duration: float, every: float) -> LoadRun:
    """Both wrk runs at once while the master gets SIGHUP every ``every`` seconds."""
    run = LoadRun()
    cpu = LifecycleCpu(master_pid)
    cpu.start()
    procs = {"keepalive": wrk(url, duration, False), "close": wrk(url, duration, True)}
    end = time.monotonic() + duration - 1.0
    time.sleep(0.5)
    while time.monotonic() < end:
        os.kill(master_pid, signal.SIGHUP)
        run.reloads += 1
        time.sleep(every)
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            run.error = f"wrk ({name}) did not finish within {duration + 30:g}s"
            continue
        try:
            res = parse_wrk_output(stdout, url)
        except ValueError as exc:
            run.error = f"wrk ({name}) exited {proc.returncode}: {stderr.strip() or exc}"
            continue
        run.requests[name] = res.requests
        run.failed[name] = res.errors
    run.other_cpu = cpu.stop()
    return run


def start_edgeworker(reg: ProcessRegistry, tmp: Path, workers: int) -> tuple[int, Server]:
    tmp.mkdir()
    port = free_port()
    (tmp / "app.py").write_text(APP.format(v="v1"))
    (tmp / "edgeworker.toml").write_text(EDGE_CONF.format(port=port, workers=workers))
    srv = reg.start("edgeworker", [PY, "-m", "edgeworker", "run", "-c", "edgeworker.toml"],
                    cwd=tmp, log_path=tmp / "out.log", stop_signal=signal.SIGTERM)  # fmt: skip
    wait_for_port(HOST, port, 30, srv.proc)
    wait_for_workers(srv.pid, workers, 30)
    expect_answer(port, "/v", b"v1")
    return port, srv


def start_nginx(reg: ProcessRegistry, ngx: Path) -> tuple[int, Server]:
    (ngx / "tmp").mkdir(parents=True)
    os.chmod(ngx.parent, 0o755)  # nginx workers started by root run as nobody
    port = free_port()
    (ngx / "nginx.conf").write_text(NGINX_CONF.format(dir=ngx, port=port))
    srv = reg.start("nginx", ["nginx", "-p", str(ngx), "-c", str(ngx / "nginx.conf"),
                              "-g", "daemon off;"], cwd=ngx, log_path=ngx / "out.log",
                    stop_signal=signal.SIGQUIT)  # fmt: skip
    wait_for_port(HOST, port, 30, srv.proc)
    wait_for_workers(srv.pid, 2, 30)
    expect_answer(port, "/v", b"v1")
    return port, srv


def expect_answer(port: int, path: str, body: bytes) -> None:
    """Raises ``RuntimeError`` unless GET ``path`` answers 200 with ``body``."""
    try:
        reply = http_get(HOST, port, path)
    except (OSError, http.client.HTTPException) as exc:
        raise RuntimeError(f"GET {path} on port {port} failed: {exc}") from exc
    if reply.status != 200 or reply.body != body:
        raise RuntimeError(f"GET {path} on port {port}: {reply.status} {reply.body[:80]!r}")


def seconds_until(pred: Callable[[], bool], limit: float = 30.0) -> float | None:
    """Seconds until ``pred()`` is true (connection errors count as false); None after
    ``limit`` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            if pred():
                return time.monotonic() - t0
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.005)
    return None


@dataclass
class Sample:
    seconds: float | None = None
    after_return: float | None = None  # reload: the part after ``edgeworker reload`` returned
    other_cpu: float | None = None
    error: str = ""


def reload_latency(tmp: Path, port: int, master: int, i: int) -> Sample:
    """Edit the handler, run ``edgeworker reload``, time until the new code answers: from the
    command's start (``seconds``) and from its return (``after_return``)."""
    version = f"v{i + 2}"
    (tmp / "app.py").write_text(APP.format(v=version))
    cpu = LifecycleCpu(master)
    cpu.start()
    t0 = time.monotonic()
    done = subprocess.run([PY, "-m", "edgeworker", "reload", "-c", "edgeworker.toml"],
                          cwd=tmp, capture_output=True, text=True, timeout=60)  # fmt: skip
    command = time.monotonic() - t0
    sample = Sample()
    if done.returncode != 0:
        sample.error = f"edgeworker reload exited {done.returncode}: {done.stderr.strip()}"
    else:
        sample.after_return = seconds_until(
            lambda: http_get(HOST, port, "/v", timeout=2).body.decode() == version
        )
        if sample.after_return is None:
            sample.error = f"{version} did not answer within 30 s of the reload"
        else:
            sample.seconds = command + sample.after_return
    sample.other_cpu = cpu.stop()
    return sample


def respawn_latency(port: int, master: int) -> Sample:
    """SIGKILL the one worker, time until an answer comes from a new pid."""
    sample = Sample()
    victims = child_pids(master)
    if len(victims) != 1:
        sample.error = f"expected one worker, found {len(victims)}"
        return sample
    victim = victims[0]
    try:
        answered = int(http_get(HOST, port, "/pid", timeout=2).body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        sample.error = f"GET /pid before the kill failed: {exc}"
        return sample
    if answered != victim:
        sample.error = f"/pid answered {answered}, the worker is {victim}"
        return sample
    cpu = LifecycleCpu(master)
    cpu.start()
    os.kill(victim, signal.SIGKILL)
    sample.seconds = seconds_until(
        lambda: int(http_get(HOST, port, "/pid", timeout=2).body) != victim
    )
    sample.other_cpu = cpu.stop()
    if sample.seconds is None:
        sample.error = "no answer from a new worker within 30 s"
    return sample


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of each loaded run (8)")
    ap.add_argument("--every", type=float, default=0.5, help="seconds between two SIGHUPs (0.5)")
    ap.add_argument("--no-nginx", action="store_true", help="leave nginx's runs out")
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.duration < 2 or args.every <= 0:
        ap.error("--rounds and --every must be positive, --duration at least 2")
    if why := missing_tool(nginx=not args.no_nginx):
        print(why, file=sys.stderr)
        return 2

    names = ("edgeworker",) if args.no_nginx else ("edgeworker", "nginx")
    load: dict[str, list[LoadRun]] = {"edgeworker": [], "nginx": []}
    load_rows: list[list[str]] = []
    reloads: list[Sample] = []
    respawns: list[Sample] = []
    with ProcessRegistry() as reg, tempfile.TemporaryDirectory(prefix="reload_bench-") as d:
        tmp = Path(d)
        try:
            servers = {"edgeworker": start_edgeworker(reg, tmp / "edge", 2)}
            if not args.no_nginx:
                servers["nginx"] = start_nginx(reg, tmp / "nginx")
        except (OSError, RuntimeError, TimeoutError) as exc:
            print(f"reload bench cannot run: {exc}", file=sys.stderr)
            return 2
        for i in range(args.rounds):
            for name in reversed(names) if i % 2 else names:
                port, srv = servers[name]
                log(f"round {i + 1}, {name}: {args.duration:g}s of load, SIGHUP every "
                    f"{args.every:g}s")  # fmt: skip
                run = under_load(f"http://{HOST}:{port}/v", srv.pid, args.duration, args.every)
                load[name].append(run)
                load_rows.append([str(i + 1), name, run])
                time.sleep(1.0)
        port, srv = servers["edgeworker"]
        for i in range(args.rounds):
            log(f"edgeworker: reload latency {i + 1}/{args.rounds}")
            reloads.append(reload_latency(tmp / "edge", port, srv.pid, i))
            time.sleep(0.5)
        for server in [s for _, s in servers.values()]:
            server.stop()
        try:
            port, srv = start_edgeworker(reg, tmp / "edge1", 1)
            expect_answer(port, "/pid", str(child_pids(srv.pid)[0]).encode())
        except (OSError, RuntimeError, TimeoutError) as exc:
            print(f"reload bench cannot run: one-worker server: {exc}", file=sys.stderr)
            return 2
        for i in range(args.rounds):
            log(f"edgeworker (1 worker): respawn latency {i + 1}/{args.rounds}")
            respawns.append(respawn_latency(port, srv.pid))
            wait_for_workers(srv.pid, 1, 30)
            time.sleep(0.5)

    load_flags = disturbed_rounds(
        [[r.other_cpu for r in (load[n][i] for n in names)] for i in range(args.rounds)]
    )
    reload_flags = disturbed_rounds([[s.other_cpu] for s in reloads])
    respawn_flags = disturbed_rounds([[s.other_cpu] for s in respawns])
    never_left_out = "a failed request is a failure under any load: no round is left out"
    goals = [
        Goal(
            "edgeworker failed requests during reloads",
            "<=",
            0,
            [r.total_failed for r in load["edgeworker"]],
            unit="",
            note=never_left_out,
        ),
        Goal(
            "nginx failed requests during reloads",
            "<=",
            None,
            [r.total_failed for r in load["nginx"]],
            unit="",
            note="context: the same load and reloads against nginx",
        ),
        Goal(
            "reload latency (edgeworker reload started -> new code answers)",
            "<=",
            2.0,
            [s.seconds for s in reloads],
            reload_flags,
            unit=" s",
        ),
        Goal(
            "respawn latency (SIGKILL of the only worker -> a new pid answers)",
            "<=",
            1.0,
            [s.seconds for s in respawns],
            respawn_flags,
            unit=" s",
        ),
    ]
    rows = []
    for rnd, name, run in load_rows:
        i = int(rnd) - 1
        rows.append(
            [
                rnd + ("*" if load_flags[i] else ""),
                name,
                str(run.reloads),
                "-" if run.error else str(sum(run.requests.values())),
                _f(run.total_failed, "d"),
                str(run.failed.get("keepalive", "-")),
                str(run.failed.get("close", "-")),
                _f(run.other_cpu, ".0f"),
            ]
        )
    tables = [
        Table(
            "Reload under load, each round in the order run",
            [
                "round",
                "server",
                "SIGHUPs",
                "requests",
                "failed",
                "keep-alive failed",
                "close failed",
                "other CPU %",
            ],  # fmt: skip
            rows,
            notes=[
                f"2 workers per server; wrk -t1 -c20 keep-alive and wrk -t1 -c20 with "
                f"Connection: close, together, {args.duration:g}s; a SIGHUP to the master "
                f"every {args.every:g}s from 0.5 s on until 1 s before the end",
                "failed: socket errors, timeouts (5 s) and non-2xx answers of both wrk runs",
                "other CPU %: other processes' share of the machine during the run (workers "
                "that exited meanwhile counted through their master); * more than 20 %",
            ],
            right=range(2, 8),
        ),
        Table(
            "Reload and respawn latency, each sample",
            ["sample", "reload s", "after return s", "other CPU %", "respawn s", "other CPU %"],
            [
                [
                    str(i + 1),
                    _f(a.seconds, ".3f") + ("*" if reload_flags[i] else ""),
                    _f(a.after_return, ".3f"),
                    _f(a.other_cpu, ".0f"),
                    _f(b.seconds, ".3f") + ("*" if respawn_flags[i] else ""),
                    _f(b.other_cpu, ".0f"),
                ]
                for i, (a, b) in enumerate(zip(reloads, respawns, strict=True))
            ],
            notes=[
                "reload: the handler file edited, `edgeworker reload` run (it returns once the "
                "master reports the reload's outcome), then GET /v every 5 ms until the new "
                "version answers (2 workers); reload s counts from the command's start, after "
                "return s from its return",
                "respawn: a server with one worker; its only worker SIGKILLed, then GET /pid "
                "every 5 ms until a pid other than the killed one answers",
                "* other processes used more than 20 % of the machine during the sample",
            ],
            right=range(1, 6),
        ),
    ]
    errors = [[n, f"round {i + 1}: {r.error}"] for n in names for i, r in enumerate(load[n])
              if r.error]  # fmt: skip
    errors += [["reload", f"sample {i + 1}: {s.error}"] for i, s in enumerate(reloads) if s.error]
    errors += [["respawn", f"sample {i + 1}: {s.error}"] for i, s in enumerate(respawns) if s.error]
    if errors:
        tables.append(Table("Failed measurements", ["part", "error"], errors))
    return finish(
        "reload",
        args,
        goals,
        tables,
        started,
        extra={"duration": args.duration, "every": args.every},
    )


if __name__ == "__main__":
    sys.exit(main())
