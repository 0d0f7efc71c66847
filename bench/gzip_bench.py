#!/usr/bin/env python3
"""gzip benchmark: a 100 KB text response compressed at level 1, edgeworker against nginx.

Both serve the same 100 KB text file (a static ``root`` location; about 2.5x smaller once
compressed) with gzip at level 1 (nginx ``gzip on; gzip_comp_level 1; gzip_types
text/plain;``, edgeworker ``gzip = true``, ``gzip_comp_level = 1``, ``gzip_types =
["text/plain"]``), 2 workers each, access logs off, in the same run. Before the load each
server's answer is checked: ``Content-Encoding: gzip`` and a body that inflates to the file.

wrk (keep-alive, 2 threads, 50 connections, ``Accept-Encoding: gzip``) measures each server for
``--duration`` s after a 2 s warm-up, ``--rounds`` times (5), the two taking turns (every other
round in the reverse order). The report gives req/s, p50 and p99 per server (medians of the
rounds), the ratio edgeworker / nginx of req/s of every round and their median.

The ratio mostly compares the servers' per-request overhead against zlib's work: at level 1 this
100 KB body costs about 0.8 ms of CPU (zlib, the same library in both).

Usage: python bench/gzip_bench.py [--duration 10] [--rounds 5] [--connections 50] [--json]
[--output FILE]. ``--json`` prints the JSON result alone. Exit status: 0 after a run, 2 when
the harness cannot run (wrk or nginx missing, a wrong answer).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ProcessRegistry,
    find_wrk,
    format_table,
    free_port,
    parse_wrk_output,
    run_edgeworker,
    servers_python,
)
from proxy_bench import start_nginx  # noqa: E402

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


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run (10)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--json", action="store_true", help="print the JSON result alone")
    ap.add_argument("--output", help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    try:
        find_wrk()
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not shutil.which("nginx"):
        print("nginx not found (Debian: apt-get install nginx-light)", file=sys.stderr)
        return 2

    body = body_text()
    runs: dict[str, list] = {"nginx": [], "edgeworker": []}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="gzip-bench-") as tmp, ProcessRegistry() as reg:
        tmpd = Path(tmp)
        os.chmod(tmpd, 0o755)  # nginx workers started by root run as nobody
        root = tmpd / "www"
        root.mkdir()
        (root / "body.txt").write_bytes(body)
        ports: dict[str, int] = {}
        for name in runs:
            port = free_port()
            if name == "nginx":
                start_nginx(
                    reg,
                    tmpd / "nginx",
                    NGINX_BODY.format(host=HOST, port=port, root=root),
                    port,
                    "nginx",
                )
            else:
                start_edgeworker(reg, tmpd / "edgeworker", port, root)
            try:
                sizes[name] = check_answer(name, port, body)
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                print(exc, file=sys.stderr)
                return 2
            wrk(f"http://{HOST}:{port}/body.txt", args.connections, 2)  # warm-up
            ports[name] = port
        ratios = []
        for i in range(args.rounds):
            order = list(ports.items())
            for name, port in reversed(order) if i % 2 else order:
                runs[name].append(wrk(f"http://{HOST}:{port}/body.txt", args.connections,
                                      args.duration))  # fmt: skip
            ratios.append(runs["edgeworker"][-1].rps / runs["nginx"][-1].rps)
            if not args.json:
                print(f"round {i + 1}: edgeworker / nginx req/s {ratios[-1]:.3f}",
                      file=sys.stderr, flush=True)  # fmt: skip

    results = {
        name: {
            "rps": statistics.median(r.rps for r in w),
            "p50_ms": statistics.median(r.p50_ms for r in w),
            "p99_ms": statistics.median(r.p99_ms for r in w),
            "errors": sum(r.errors for r in w),
            "rps_rounds": [round(r.rps, 1) for r in w],
            "compressed_bytes": sizes[name],
        }
        for name, w in runs.items()
    }
    doc = {
        "bench": "gzip",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "python": servers_python(PYTHON),
        "body_bytes": len(body),
        "level": 1,
        "workers": WORKERS,
        "connections": args.connections,
        "duration": args.duration,
        "rounds": args.rounds,
        "results": results,
        "ratio_rounds": [round(r, 4) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 4),
    }
    text = json.dumps(doc)
    if args.output:
        Path(args.output).write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    print(f"edgeworker runs on {doc['python']}; {len(body)} bytes, gzip level 1")
    rows = [
        [
            name,
            f"{r['rps']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            str(r["errors"]),
            str(r["compressed_bytes"]),
        ]
        for name, r in results.items()
    ]
    print(
        format_table(
            ["server", "req/s", "p50 ms", "p99 ms", "errors", "gzip bytes"],
            rows,
            right=range(1, 6),
        )  # fmt: skip
    )
    print(
        "edgeworker / nginx req/s per round: "
        + ", ".join(f"{r:.3f}" for r in ratios)
        + f"; median {doc['ratio_median']:.3f}"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
