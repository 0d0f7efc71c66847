#!/usr/bin/env python3
"""HTTP/2 benchmark: edgeworker's HTTP/2 against nginx's, same certificate, same run.

The servers of ``bench/tls_bench.py`` (its configs, with ``http2`` after ``ssl`` on the listen
line): ``/hello`` (``hello\\n``) with 2 workers each, access logs off, TLS 1.3 on a free
127.0.0.1 port, the certificate made at start-up with ``openssl`` (ECDSA P-256). ALPN offers
``h2``; the load is ``h2load -c CLIENTS -m STREAMS`` (10 and 10: 10 connections with up to 10
streams each in flight) for ``--duration`` seconds after a warm-up, each server in turn, every
other round in the reverse order. Every request must succeed (a round with a failed, errored
or timed-out request, a non-2xx status or another protocol than h2 counts as failed).

The ratio edgeworker / nginx of requests/s is taken within each round, then the median, against
the goal (>= 0.30). Then the memory of idle HTTP/2 connections: ``--idle`` (1000) TLS
connections that negotiated h2 and sent the preface and SETTINGS, held open; the RSS of the
workers before and with them (edgeworker and nginx).

Usage: python bench/h2_bench.py [--duration 10] [--rounds 5] [--clients 10] [--streams 10]
[--idle 1000] [--json FILE] [--check]

Exit status: 0 after a run (1 with ``--check`` when the goal is not met in every round), 2 when
the harness cannot run (h2load, openssl or nginx missing, a server that does not start or
answers wrongly), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ProcessRegistry,
    format_table,
    free_port,
    mib,
    ratio,
    tool_version,
    wait_for_workers,
    workers_rss,
)
from tls_bench import (  # noqa: E402
    EDGEWORKER_TOML,
    NGINX_CONF,
    HarnessError,
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


def log(msg: str) -> None:
    print(f"[h2_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def h2load(port: int, args: argparse.Namespace, duration: float) -> dict[str, object]:
    """One h2load run; its figures, ``error`` set unless every request succeeded over h2."""
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
        f"{duration:g}",
        "--warm-up-time",
        f"{args.warmup:g}",
        f"https://{HOST}:{port}/hello",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120).stdout
    got: dict[str, object] = {"argv": argv, "error": ""}
    finished, requests, codes = _FINISHED.search(out), _REQUESTS.search(out), _CODES.search(out)
    if not (finished and requests and codes):
        got["error"] = "h2load output not understood: " + out[-300:]
        return got
    total, _, done, ok, failed, errored, timeout = map(int, requests.groups())
    got.update(rps=float(finished.group(1)), requests=done, succeeded=ok)
    if "Application protocol: h2" not in out:
        got["error"] = "h2 was not negotiated"
    elif failed or errored or timeout or ok != done or int(codes.group(1)) != ok or not ok:
        got["error"] = f"{failed} failed, {errored} errored, {timeout} timeout, {ok} of {done} ok"
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


def memory(server, port: int, args: argparse.Namespace, cert: Path) -> dict[str, object]:
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
    cert, key = make_certificate(top, "ecdsa")
    ctx = client_context(cert)
    servers = {}
    for name, start, template in (
        ("nginx", start_nginx, NGINX_H2),
        ("edgeworker", start_edgeworker, EDGEWORKER_H2),
    ):
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
    results: dict[str, dict] = {name: {"rounds": []} for name in TARGETS}
    for n in range(args.rounds):
        order = TARGETS if n % 2 == 0 else TARGETS[::-1]
        log(f"round {n + 1} of {args.rounds}: {', '.join(order)}")
        for name in order:
            server, port = servers[name]
            results[name]["rounds"].append(h2load(port, args, args.duration))
            if not server.alive():
                raise HarnessError(f"{name} exited during the bench")
    for name in TARGETS:
        server, port = servers[name]
        log(f"{name}: {args.idle} idle h2 connections")
        results[name]["memory"] = memory(server, port, args, cert)
    return results


def report(results: dict[str, dict], args: argparse.Namespace) -> tuple[str, list]:
    rows = []
    ratios = []
    for i in range(args.rounds):
        a, b = results["edgeworker"]["rounds"][i], results["nginx"]["rounds"][i]
        r = None if a["error"] or b["error"] else ratio(a.get("rps"), b.get("rps"))
        ratios.append(r)
        rows.append(
            [
                str(i + 1),
                f"{b.get('rps', 0):.0f}" + (" !" if b["error"] else ""),
                f"{a.get('rps', 0):.0f}" + (" !" if a["error"] else ""),
                "-" if r is None else f"{r:.3f}",
            ]
        )
    done = [r for r in ratios if r is not None]
    median = statistics.median(done) if done else None
    lines = [
        f"h2load -c{args.clients} -m{args.streams}, {args.duration:g}s per run, "
        f"{args.workers} workers each, TLS 1.3, /hello",
        format_table(["round", "nginx req/s", "edgeworker req/s", "ratio"], rows),
        f"median ratio: {'-' if median is None else f'{median:.3f}'} (goal >= {GOAL})"
        + ("" if len(done) == len(ratios) else f"; {len(ratios) - len(done)} failed round(s)"),
    ]
    for name in TARGETS:
        for i, rnd in enumerate(results[name]["rounds"]):
            if rnd["error"]:
                lines.append(f"  {name} round {i + 1}: {rnd['error']}")
    mem_rows = []
    for name in TARGETS:
        m = results[name]["memory"]
        mem_rows.append(
            [
                name,
                mib(m["rss_before_kb"]),
                mib(m["rss_idle_kb"]),
                f"{m['per_connection_kb']:.1f} KiB",
            ]
        )
    lines.append(f"worker RSS (all workers) with {args.idle} idle h2 connections:")
    lines.append(format_table(["server", "before", "with idle", "per connection"], mem_rows))
    return "\n".join(lines), ratios


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per h2load run (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="h2load --warm-up-time (2)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    p.add_argument("--clients", type=int, default=10, help="h2load -c (10)")
    p.add_argument("--streams", type=int, default=10, help="h2load -m (10)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    p.add_argument("--idle", type=int, default=1000, help="idle h2 connections (1000)")
    p.add_argument("--edgeworker", default="", help="command to run edgeworker")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    p.add_argument("--check", action="store_true", help="exit 1 unless every round meets it")
    args = p.parse_args(argv)
    if not (1 <= args.duration <= 600 and 1 <= args.rounds <= 20 and 1 <= args.idle <= 5000):
        p.error("bounded load: 1 <= --duration <= 600, 1 <= --rounds <= 20, --idle <= 5000")
    if not (1 <= args.clients <= 1000 and 1 <= args.streams <= 100 and args.workers >= 1):
        p.error("--clients 1..1000, --streams 1..100, --workers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 1000), hard))
    top = Path(tempfile.mkdtemp(prefix="h2_bench-"))
    try:
        with ProcessRegistry() as reg:
            try:
                results = run(args, reg, top)
            except KeyboardInterrupt:
                reg.stop_all()
                return 130
            except (HarnessError, FileNotFoundError, OSError) as exc:
                print(f"h2_bench: {exc}", file=sys.stderr, flush=True)
                reg.stop_all()
                return 2
    finally:
        shutil.rmtree(top, ignore_errors=True)
    text, ratios = report(results, args)
    print(text, flush=True)
    if args.json:
        doc = {
            "bench": "h2",
            "settings": vars(args),
            "results": results,
            "ratios": ratios,
            "h2load": tool_version(["h2load", "--version"]),
            "nginx": tool_version(["nginx", "-v"]),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    if args.check and not all(r is not None and r >= GOAL for r in ratios):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
