#!/usr/bin/env python3
"""gzip benchmark: a 100 KB text response compressed at level 1, edgeworker against nginx.

Both serve the same 100 KB text file (a static ``root`` location; about 2.5x smaller once
compressed) with gzip at level 1 (nginx ``gzip on; gzip_comp_level 1; gzip_types
text/plain;``, edgeworker ``gzip = true``, ``gzip_comp_level = 1``, ``gzip_types =
["text/plain"]``), 2 workers each, access logs off, in the same run. Before the load each
server's answer is checked: ``Content-Encoding: gzip`` and a body that inflates to the file.

wrk (keep-alive, 2 threads, 50 connections, ``Accept-Encoding: gzip``) measures each server for
``--duration`` s (10; a 2 s warm-up per server before the first round), ``--rounds`` times (5),
the two taking turns (every other round in the reverse order). The report gives each round's
req/s, p50, p99 and the other processes' share of the CPU per server, and the ratio
edgeworker / nginx of req/s taken within each round, as a figure for context (bench/common.py's
Goal with no target: the compression work has no goal of its own).

The ratio mostly compares the servers' per-request overhead against zlib's work: at level 1 this
100 KB body costs about 0.8 ms of CPU (zlib, the same library in both). A default run takes about
2 minutes.

Usage: python bench/gzip_bench.py [--duration 10] [--rounds 5] [--connections 50] [--json FILE]
[--check]. Exit status: 0 after a run (``--check`` judges nothing here: no goal has a target),
2 when the harness cannot run (wrk or nginx missing, a wrong answer).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CpuMeter,
    Goal,
    ProcessRegistry,
    Table,
    WrkResult,
    add_common_args,
    child_pids,
    disturbed_rounds,
    find_wrk,
    finish,
    free_port,
    parse_wrk_output,
    per_round_ratio,
    run_edgeworker,
    servers_python,
)
from proxy_bench import missing_tool, start_nginx  # noqa: E402

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
WORKERS = 2
SIZE = 100 * 1024

# the server block in proxy_bench's nginx.conf (its NGINX_COMMON)
NGINX_BODY = """
    types {{ text/plain txt; }}
    server {{
        listen {host}:{port} backlog=4096;
        keepalive_requests 1000000;
        root {root};
        gzip on;
        gzip_comp_level 1;
        gzip_types text/plain;
    }}
"""

EDGEWORKER_TOML = """
[main]
workers = {workers}
pid_file = "{prefix}/edgeworker.pid"
error_log = "{prefix}/error.log"
log_level = "warning"

[http]
access_log = "off"
keepalive_requests = 1000000
gzip = true
gzip_comp_level = 1
gzip_types = ["text/plain"]

[[server]]
listen = ["{host}:{port}"]
  [[server.location]]
  match = "/"
  root = "{root}"
"""


def body_text() -> bytes:
    """100 KB of text that compresses like prose (about 2.5x at level 1), not like zeros: the
    same seeded sentences of made-up words every run."""
    rng = random.Random(7)
    syllables = "ka lo mi ne tu ra si po de ga vi zo he ju be fa qu wy xe co".split()
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(2000)]
    out = []
    n = 0
    while n < SIZE:
        line = " ".join(rng.choice(vocab) for _ in range(rng.randint(4, 14))) + ".\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:SIZE]


def start_edgeworker(reg: ProcessRegistry, prefix: Path, port: int, root: Path):
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "edgeworker.toml"
    conf.write_text(
        EDGEWORKER_TOML.format(workers=WORKERS, prefix=prefix, host=HOST, port=port, root=root)
    )
    return run_edgeworker(reg, conf, HOST, port, WORKERS, PYTHON, REPO, prefix / "stdout.log")


def check_answer(name: str, port: int, body: bytes) -> int:
    """The server compresses the file: returns the compressed size."""
    c = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        c.request("GET", "/body.txt", headers={"Accept-Encoding": "gzip"})
        r = c.getresponse()
        data = r.read()
        encoding = r.getheader("Content-Encoding")
    finally:
        c.close()
    if r.status != 200 or encoding != "gzip" or gzip.decompress(data) != body:
        raise RuntimeError(f"{name}: unexpected answer {r.status} {encoding} {data[:60]!r}")
    return len(data)


def wrk(url: str, connections: int, duration: float):
    argv = [
        find_wrk(), "--latency", "-t", "2", "-c", str(connections),
        "-d", f"{max(1, round(duration))}s", "--timeout", "5s",
        "-H", "Accept-Encoding: gzip", url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr}")
    return parse_wrk_output(done.stdout, url)


def measure(name: str, server, port: int, args: argparse.Namespace, errors: list[list[str]]):
    """One wrk run on ``server``: (result or None if wrk failed, other processes' CPU %)."""
    pids = [server.pid, *child_pids(server.pid)]
    meter = CpuMeter()
    meter.start(pids)
    res: WrkResult | None = None
    try:
        res = wrk(f"http://{HOST}:{port}/body.txt", args.connections, args.duration)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        errors.append([name, str(exc)])
    return res, meter.stop(pids)


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run (10)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0:
        ap.error("--rounds and --duration must be positive")
    if why := missing_tool():
        print(why, file=sys.stderr)
        return 2

    body = body_text()
    names = ("nginx", "edgeworker")
    runs: dict[str, list[WrkResult | None]] = {name: [] for name in names}
    cpu: dict[str, list[float | None]] = {name: [] for name in names}
    sizes: dict[str, int] = {}
    errors: list[list[str]] = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="gzip-bench-") as tmp, ProcessRegistry() as reg:
        tmpd = Path(tmp)
        os.chmod(tmpd, 0o755)  # nginx workers started by root run as nobody
        root = tmpd / "www"
        root.mkdir()
        (root / "body.txt").write_bytes(body)
        servers = {}
        try:
            for name in names:
                port = free_port()
                if name == "nginx":
                    srv = start_nginx(
                        reg,
                        tmpd / "nginx",
                        NGINX_BODY.format(host=HOST, port=port, root=root),
                        port,
                        "nginx",
                    )
                else:
                    srv = start_edgeworker(reg, tmpd / "edgeworker", port, root)
                sizes[name] = check_answer(name, port, body)
                wrk(f"http://{HOST}:{port}/body.txt", args.connections, 2)  # warm-up
                servers[name] = (srv, port)
        except (OSError, RuntimeError, TimeoutError, http.client.HTTPException) as exc:
            print(f"gzip bench cannot run: {exc}", file=sys.stderr)
            return 2
        for i in range(args.rounds):
            order = list(servers.items())
            for name, (srv, port) in reversed(order) if i % 2 else order:
                res, pct = measure(name, srv, port, args, errors)
                runs[name].append(res)
                cpu[name].append(pct)
                rows.append((i, name, res, pct))
            r = per_round_ratio(
                [w and w.rps for w in runs["edgeworker"][-1:]],
                [w and w.rps for w in runs["nginx"][-1:]],
            )[0]
            print(
                f"round {i + 1}: edgeworker / nginx req/s {'-' if r is None else f'{r:.3f}'}",
                file=sys.stderr,
                flush=True,
            )

    flags = disturbed_rounds([[cpu[n][i] for n in names] for i in range(args.rounds)])
    goal = Goal(
        "gzip req/s: edgeworker / nginx",
        ">=",
        None,
        per_round_ratio(
            [w and w.rps for w in runs["edgeworker"]], [w and w.rps for w in runs["nginx"]]
        ),
        flags,
        note="context: the compression work has no goal of its own",
    )
    table = Table(
        "Each round, in the order run",
        ["round", "server", "req/s", "p50 ms", "p99 ms", "errors", "other CPU %"],
        [
            [
                f"{i + 1}{'*' if flags[i] else ''}",
                name,
                "-" if w is None else f"{w.rps:,.0f}",
                "-" if w is None else f"{w.p50_ms:.2f}",
                "-" if w is None else f"{w.p99_ms:.2f}",
                "-" if w is None else str(w.errors),
                "-" if pct is None else f"{pct:.0f}",
            ]
            for i, name, w, pct in rows
        ],
        notes=[
            f"GET of a {len(body)} byte text file, gzip level 1 (nginx answers "
            f"{sizes['nginx']} bytes, edgeworker {sizes['edgeworker']})",
            f"{WORKERS} workers per server, access logs off; wrk -t2 -c{args.connections} "
            f"-d{args.duration:g}s, keep-alive, Accept-Encoding: gzip; a 2 s warm-up per server "
            "before round 1",
            "other CPU %: other processes' share of the machine during the run; a round marked "
            "* had more than 20 % on either server",
            f"edgeworker runs on {servers_python(PYTHON)}",
        ],
        right=range(2, 7),
    )
    tables = [table]
    if errors:
        tables.append(Table("Failed measurements", ["server", "error"], errors))
    return finish(
        "gzip",
        args,
        [goal],
        tables,
        started,
        extra={
            "body_bytes": len(body),
            "compressed_bytes": sizes,
            "level": 1,
            "workers": WORKERS,
            "connections": args.connections,
            "duration": args.duration,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
