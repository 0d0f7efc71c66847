#!/usr/bin/env python3
"""HTTP/2 benchmark: edgeworker's HTTP/2 against nginx's, same certificate, same run.

The servers of ``bench/tls_bench.py`` (its configs, with ``http2`` after ``ssl`` on the listen
line): ``/hello`` (``hello\\n``) with 2 workers each, access logs off, TLS 1.3 on a free
127.0.0.1 port, the certificate made at start-up with ``openssl`` (ECDSA P-256). ALPN offers
``h2``; the load is ``h2load -c CLIENTS -m STREAMS`` (10 and 10: 10 connections with up to 10
streams each in flight) for ``--duration`` seconds (10) after a warm-up (1), each server in
turn, ``--rounds`` times (5), every other round in the reverse order. Every request must
succeed (a run with a failed, errored or timed-out request, a non-2xx status or another
protocol than h2 is failed: its round has no ratio).

The goal (bench/common.py's Goal): edgeworker ÷ nginx requests/s, taken within each round,
>= 0.30 in every kept round (a round where other processes used more than 20 % of the machine
during either run is marked and left out). Then the memory of idle HTTP/2 connections:
``--idle`` (1000) TLS connections that negotiated h2 and sent the preface and SETTINGS, held
open; the RSS of the workers before and with them (a table, no goal). One default run takes
about 2 minutes.

Usage: python bench/h2_bench.py [--duration 10] [--rounds 5] [--clients 10] [--streams 10]
[--idle 1000] [--no-edgeworker] [--json FILE] [--check]. See bench/README.md.

Exit status: 0 after a run (1 with ``--check`` unless the goal is PASS), 2 when the harness
cannot run (h2load, openssl or nginx missing, a server that does not start or answers
wrongly), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DISTURBED_PCT,
    CpuMeter,
    Goal,
    HarnessError,
    ProcessRegistry,
    Server,
    Table,
    add_common_args,
    child_pids,
    disturbed_rounds,
    finish,
    free_port,
    logger,
    mib,
    per_round_ratio,
    run_harness,
    tool_version,
    wait_for_workers,
    workers_rss,
)
from tls_bench import (  # noqa: E402
    EDGEWORKER_TOML,
    NGINX_CONF,
    client_context,
    make_certificate,
    start_edgeworker,
    start_nginx,
    wait_until_serving,
)

HOST = "127.0.0.1"
GOAL = 0.30
TARGETS = ("nginx", "edgeworker")
NGINX_H2 = NGINX_CONF.replace("ssl backlog=4096;", "ssl http2 backlog=4096;")
EDGEWORKER_H2 = EDGEWORKER_TOML.replace(':{port} ssl"]', ':{port} ssl http2"]')
assert NGINX_H2 != NGINX_CONF and EDGEWORKER_H2 != EDGEWORKER_TOML
_FINISHED = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_CODES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
# the client preface and an empty SETTINGS frame
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


log = logger("h2_bench")


def h2load(server: Server, port: int, args: argparse.Namespace) -> dict[str, object]:
    """One h2load run against ``server``; its figures and the other processes' CPU share
    meanwhile (``other_cpu_pct``), ``error`` set unless every request succeeded over h2."""
    exe = shutil.which("h2load")
    if exe is None:
        raise HarnessError("h2load not found (Debian: apt-get install nghttp2-client)")
    argv = [
        exe,
        "-c",
        str(args.clients),
        "-m",
        str(args.streams),
        "-D",
        f"{args.duration:g}",
        "--warm-up-time",
        f"{args.warmup:g}",
        f"https://{HOST}:{port}/hello",
    ]
    got: dict[str, object] = {"argv": argv, "error": "", "rps": None, "other_cpu_pct": None}
    pids = [server.pid, *child_pids(server.pid)]
    meter = CpuMeter()
    meter.start(pids)
    limit = args.warmup + args.duration + 60
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=limit).stdout
    except subprocess.TimeoutExpired:
        got["error"] = f"h2load did not finish within {limit:g}s"
        return got
    got["other_cpu_pct"] = meter.stop(pids)
    finished, requests, codes = _FINISHED.search(out), _REQUESTS.search(out), _CODES.search(out)
    if not (finished and requests and codes):
        got["error"] = "h2load output not understood: " + out[-300:]
        return got
    total, _, done, ok, failed, errored, timeout = map(int, requests.groups())
    got.update(requests=done, succeeded=ok)
    if "Application protocol: h2" not in out:
        got["error"] = "h2 was not negotiated"
    elif failed or errored or timeout or ok != done or int(codes.group(1)) != ok or not ok:
        got["error"] = f"{failed} failed, {errored} errored, {timeout} timeout, {ok} of {done} ok"
    else:
        got["rps"] = float(finished.group(1))
    return got


def idle_connections(port: int, count: int, cert: Path) -> list[socket.socket]:
    """``count`` TLS connections that negotiated h2 and sent the preface and SETTINGS."""
    ctx = client_context(cert)
    ctx.set_alpn_protocols(["h2"])
    out = []
    for _ in range(count):
        tls = ctx.wrap_socket(
            socket.create_connection((HOST, port), 5), server_hostname="localhost"
        )
        if tls.selected_alpn_protocol() != "h2":
            raise HarnessError(f"ALPN chose {tls.selected_alpn_protocol()!r}, not h2")
        tls.sendall(_PREFACE)
        out.append(tls)
    return out


def memory(server: Server, port: int, args: argparse.Namespace, cert: Path) -> dict[str, object]:
    """The workers' RSS before and with ``--idle`` idle h2 connections."""
    before = workers_rss(server.pid)
    conns = idle_connections(port, args.idle, cert)
    try:
        time.sleep(1.0)  # every connection served its preface
        during = workers_rss(server.pid)
    finally:
        for c in conns:
            c.close()
    grown = during.rss_sum_kb - before.rss_sum_kb
    return {
        "idle": args.idle,
        "rss_before_kb": before.rss_sum_kb,
        "rss_idle_kb": during.rss_sum_kb,
        "per_connection_kb": round(grown / args.idle, 2),
    }


def run(args: argparse.Namespace, reg: ProcessRegistry, top: Path) -> dict[str, dict]:
    """Start the servers (HarnessError if one does not serve), run h2load ``--rounds`` times on
    each in turn, every other round reversed, then measure the idle connections' memory."""
    cert, key = make_certificate(top, "ecdsa")
    ctx = client_context(cert)
    servers: dict[str, tuple[Server, int]] = {}
    results: dict[str, dict] = {name: {"rounds": [], "skipped": ""} for name in TARGETS}
    for name, start, template in (
        ("nginx", start_nginx, NGINX_H2),
        ("edgeworker", start_edgeworker, EDGEWORKER_H2),
    ):
        if name == "edgeworker" and args.no_edgeworker:
            results[name]["skipped"] = "skipped by --no-edgeworker"
            continue
        tmp = top / name
        tmp.mkdir()
        port = free_port()
        log(f"{name}: starting on https://{HOST}:{port}")
        server = start(reg, tmp, port, args, cert, key, template)
        try:
            wait_until_serving(server, ctx, port, 30.0)
            wait_for_workers(server.pid, args.workers, 30.0)
        except Exception as exc:  # noqa: BLE001 - a server that does not serve stops the bench
            raise HarnessError(f"{name} did not serve: {exc}\n{server.output_tail()}") from exc
        servers[name] = (server, port)
    for n in range(args.rounds):
        order = [t for t in (TARGETS if n % 2 == 0 else TARGETS[::-1]) if t in servers]
        log(f"round {n + 1} of {args.rounds}: {', '.join(order)}")
        for name in order:
            server, port = servers[name]
            results[name]["rounds"].append(h2load(server, port, args))
            if not server.alive():
                raise HarnessError(f"{name} exited during the bench")
    for name, (server, port) in servers.items():
        log(f"{name}: {args.idle} idle h2 connections")
        results[name]["memory"] = memory(server, port, args, cert)
    return results


def goal(results: dict[str, dict]) -> Goal:
    """edgeworker ÷ nginx requests/s within each round."""
    ew, ng = results["edgeworker"]["rounds"], results["nginx"]["rounds"]
    cpu = [[r["other_cpu_pct"] for r in side] for side in (ew, ng)]
    n = max(len(ew), len(ng))
    return Goal(
        "h2load requests/s, edgeworker ÷ nginx",
        ">=",
        GOAL,
        per_round_ratio([r["rps"] for r in ew], [r["rps"] for r in ng]),
        disturbed_rounds([[c[i] for c in cpu if i < len(c)] for i in range(n)]),
    )


def _disturbed(rnd: dict[str, object]) -> bool:
    return disturbed_rounds([[rnd["other_cpu_pct"]]])[0]  # type: ignore[list-item]


def tables(results: dict[str, dict], args: argparse.Namespace) -> list[Table]:
    rows = []
    errors = []
    for name in TARGETS:
        res = results[name]
        if res["skipped"]:
            rows.append([name, "-", res["skipped"], "-"])
            continue
        kept = [r["rps"] for r in res["rounds"] if r["rps"] is not None and not _disturbed(r)]
        rows.append(
            [
                name,
                f"{statistics.median(kept):,.0f}" if kept else "-",
                " ".join(
                    "-" if r["rps"] is None else f"{r['rps']:,.0f}" + ("*" if _disturbed(r) else "")
                    for r in res["rounds"]
                ),
                " ".join(
                    "-" if r["other_cpu_pct"] is None else f"{r['other_cpu_pct']:.0f}"
                    for r in res["rounds"]
                ),
            ]
        )
        errors += [
            f"{name} round {i + 1}: {r['error']}" for i, r in enumerate(res["rounds"]) if r["error"]
        ]
    load = Table(
        f"HTTP/2 /hello, h2load -c{args.clients} -m{args.streams}, {args.duration:g} s per run "
        f"after a {args.warmup:g} s warm-up, {args.workers} workers per server, TLS 1.3",
        ["server", "median req/s", "each round", "other CPU %"],
        rows,
        notes=[
            f"{args.rounds} rounds, the servers in the reverse order every other round; every "
            "request must succeed over h2 (a failed run shows -)",
            "median: of the rounds not disturbed; other CPU %: other processes' share of the "
            f"machine during each run; a figure marked * ran beside other load "
            f"(> {DISTURBED_PCT:g} %) and is left out of the median",
            *errors,
        ],
        right=(1,),
    )
    mem_rows = []
    for name in TARGETS:
        m = results[name].get("memory")
        if m is None:
            continue
        mem_rows.append(
            [
                name,
                mib(m["rss_before_kb"]),
                mib(m["rss_idle_kb"]),
                f"{m['per_connection_kb']:.1f}",
            ]
        )
    memory_table = Table(
        f"Worker RSS (MiB, all {args.workers} workers) with {args.idle} idle HTTP/2 connections",
        ["server", "before", "with idle", "KiB per connection"],
        mem_rows,
        notes=["idle: TLS 1.3, ALPN h2, the client preface and SETTINGS sent, then nothing"],
        right=(1, 2, 3),
    )
    return [load, memory_table]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per h2load run (10)")
    p.add_argument("--warmup", type=float, default=1.0, help="h2load --warm-up-time (1)")
    add_common_args(p)
    p.add_argument("--clients", type=int, default=10, help="h2load -c (10)")
    p.add_argument("--streams", type=int, default=10, help="h2load -m (10)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    p.add_argument("--idle", type=int, default=1000, help="idle h2 connections (1000)")
    p.add_argument("--no-edgeworker", action="store_true", help="run the nginx side alone")
    p.add_argument("--edgeworker", default="", help="command to run edgeworker")
    args = p.parse_args(argv)
    if not (1 <= args.duration <= 600 and 1 <= args.rounds <= 20 and 1 <= args.idle <= 5000):
        p.error("bounded load: 1 <= --duration <= 600, 1 <= --rounds <= 20, --idle <= 5000")
    if not (0 <= args.warmup <= 60):
        p.error("--warmup: 0..60 seconds")
    if not (1 <= args.clients <= 1000 and 1 <= args.streams <= 100 and args.workers >= 1):
        p.error("--clients 1..1000, --streams 1..100, --workers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 1000), hard))
    results, status = run_harness(
        "h2_bench", lambda reg, top: run(args, reg, top), errors=(FileNotFoundError, OSError)
    )
    if results is None:
        return status
    return finish(
        "h2",
        args,
        [goal(results)],
        tables(results, args),
        started,
        extra={
            "results": results,
            "h2load": tool_version(["h2load", "--version"]),
            "nginx": tool_version(["nginx", "-v"]),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
