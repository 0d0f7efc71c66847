#!/usr/bin/env python3
"""Proxy benchmark: edgeworker ``proxy_pass`` against nginx ``proxy_pass``, same backend, same run.

One nginx serves static files (the backend: a small ``/small.txt`` and a 1 GiB sparse
``/big.bin``). In front of it run an nginx proxy and an edgeworker proxy, 2 workers each,
access logs off, keep-alive to the upstream on both (nginx: ``keepalive 32``,
``proxy_http_version 1.1``, ``Connection ""``, default buffering but never to temp files
(``proxy_max_temp_file_size 0``); edgeworker: ``keepalive = 32``). For each proxy:

- wrk (keep-alive, 2 threads, 50 connections, ``--duration`` s after a 2 s warm-up) on
  ``/small.txt``, ``--rounds`` times (3), the two proxies taking turns (never loaded at the
  same time): the medians of req/s, p50 and p99;
- one 1 GiB download through the proxy (Python client, 1 MiB reads): MB/s, and for
  edgeworker the growth of the serving worker's RSS (sampled every 50 ms).

Ratios against the issue's targets (PASS/FAIL):

    edgeworker proxy req/s / nginx proxy req/s        >= 0.35
    edgeworker p99 / nginx p99                        <= 3
    edgeworker 1 GiB throughput / nginx's             >= 0.3
    edgeworker worker RSS growth while streaming      < 20 MiB

Usage: python bench/proxy_bench.py [--duration 10] [--rounds 3] [--stream-mib 1024] [--json FILE]
[--check]
Exit status: 0 after a run (1 with ``--check`` if a check is not PASS), 2 if the harness cannot
run (wrk or nginx missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Check,
    ProcessRegistry,
    find_wrk,
    format_table,
    free_port,
    http_get,
    mib,
    ratio,
    rss_kb,
    run_edgeworker,
    run_wrk,
    servers_python,
    wait_for_port,
    wait_for_workers,
)

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
SMALL_BODY = b"hello from the static backend\n" * 4  # 120 bytes
WORKERS = 2

NGINX_COMMON = """
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    {body}
}}
"""

BACKEND_BODY = """
    server {{
        listen {host}:{port} backlog=4096;
        keepalive_requests 1000000;
        root {root};
    }}
"""

PROXY_BODY = """
    upstream backend {{
        server {host}:{backend_port};
        keepalive 32;
    }}
    server {{
        listen {host}:{port} backlog=4096;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }}
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

[upstream.backend]
servers = ["{host}:{backend_port}"]
keepalive = 32

[[server]]
listen = ["{host}:{port}"]
  [[server.location]]
  match = "/"
  proxy_pass = "http://backend"
"""


def start_nginx(reg: ProcessRegistry, prefix: Path, body: str, port: int, name: str):
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_COMMON.format(workers=WORKERS, prefix=prefix, body=body))
    srv = reg.start(
        name,
        ["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        cwd=prefix,
        log_path=prefix / "stdout.log",
    )
    wait_for_port(HOST, port, 15, srv.proc)
    return srv


def start_backend(reg: ProcessRegistry, tmpd: Path, big_size: int = 0) -> int:
    """Start the backend nginx serving ``tmpd/www``: ``/small.txt`` (SMALL_BODY) and, when
    ``big_size`` is given, a sparse ``/big.bin`` of that many bytes. Returns its port."""
    os.chmod(tmpd, 0o755)  # nginx workers started by root run as nobody
    root = tmpd / "www"
    root.mkdir()
    (root / "small.txt").write_bytes(SMALL_BODY)
    if big_size:
        with open(root / "big.bin", "wb") as f:
            f.truncate(big_size)  # sparse: the backend reads zeros from the page cache
    backend_port = free_port()
    start_nginx(
        reg,
        tmpd / "backend",
        BACKEND_BODY.format(host=HOST, port=backend_port, root=root),
        backend_port,
        "nginx-backend",
    )
    return backend_port


def start_edgeworker(reg: ProcessRegistry, prefix: Path, port: int, backend_port: int):
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "edgeworker.toml"
    conf.write_text(
        EDGEWORKER_TOML.format(
            workers=WORKERS, prefix=prefix, host=HOST, port=port, backend_port=backend_port
        )
    )
    return run_edgeworker(reg, conf, HOST, port, WORKERS, PYTHON, REPO, prefix / "stdout.log")


def download(port: int, path: str, expect: int) -> float:
    """GET ``path`` over a fresh connection, read and drop the body; seconds taken."""
    with socket.create_connection((HOST, port), timeout=60) as s:
        t0 = time.monotonic()
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        got = 0
        head_done = False
        head = b""
        while True:
            n = s.recv_into(view)
            if not n:
                break
            if not head_done:
                head += bytes(view[:n])
                if b"\r\n\r\n" in head:
                    head_done = True
                    got += len(head.partition(b"\r\n\r\n")[2])
                continue
            got += n
        elapsed = time.monotonic() - t0
    if got < expect:
        raise RuntimeError(f"download of {path} got {got} of {expect} bytes")
    return elapsed


def stream_with_rss(port: int, pids: list[int], size: int) -> tuple[float, int]:
    """Download through edgeworker while sampling its workers' RSS: (seconds, max growth KiB)."""
    base = {pid: rss_kb(pid) or 0 for pid in pids}
    peak = dict(base)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in pids:
                r = rss_kb(pid) or 0
                if r > peak[pid]:
                    peak[pid] = r
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        elapsed = download(port, "/big.bin", size)
    finally:
        done.set()
        t.join(2)
    return elapsed, max(peak[p] - base[p] for p in pids)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--stream-mib", type=int, default=1024)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="wrk runs per proxy, interleaved; the report takes the medians (3)",
    )
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every check passes")
    args = ap.parse_args()
    try:
        find_wrk()
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not shutil.which("nginx"):
        print("nginx not found (Debian: apt-get install nginx-light)", file=sys.stderr)
        return 2

    size = args.stream_mib * 1024 * 1024
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp, ProcessRegistry() as reg:
        tmpd = Path(tmp)
        backend_port = start_backend(reg, tmpd, size)

        servers: dict[str, tuple] = {}
        for name in ("nginx", "edgeworker"):
            port = free_port()
            if name == "nginx":
                srv = start_nginx(
                    reg,
                    tmpd / "nginx-proxy",
                    PROXY_BODY.format(host=HOST, port=port, backend_port=backend_port),
                    port,
                    "nginx-proxy",
                )
            else:
                srv = start_edgeworker(reg, tmpd / "edgeworker", port, backend_port)
            reply = http_get(HOST, port, "/small.txt")
            if reply.status != 200 or reply.body != SMALL_BODY:
                raise RuntimeError(f"{name}: unexpected reply {reply.status} {reply.body[:80]!r}")
            run_wrk(
                f"http://{HOST}:{port}/small.txt", connections=args.connections, duration=2
            )  # warm-up
            servers[name] = (srv, port)
        # the rounds interleave the two proxies (the machine's noise hits both alike), every
        # other round in the reverse order (a drift within a round too); the report takes the
        # median of each figure
        runs: dict[str, list] = {name: [] for name in servers}
        for i in range(args.rounds):
            order = list(servers.items())
            for name, (_srv, port) in reversed(order) if i % 2 else order:
                wrk = run_wrk(
                    f"http://{HOST}:{port}/small.txt",
                    connections=args.connections,
                    duration=args.duration,
                )
                runs[name].append(wrk)
            if args.rounds > 1:
                print(
                    f"round {i + 1}: edgeworker / nginx req/s "
                    f"{runs['edgeworker'][-1].rps / runs['nginx'][-1].rps:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
        for name, (srv, port) in servers.items():
            if name == "edgeworker":
                pids = wait_for_workers(srv.pid, WORKERS, 5)
                secs, grown = stream_with_rss(port, pids, size)
            else:
                secs, grown = download(port, "/big.bin", size), None
            w = runs[name]
            results[name] = {
                "rps": statistics.median(r.rps for r in w),
                "p50_ms": statistics.median(r.p50_ms for r in w),
                "p99_ms": statistics.median(r.p99_ms for r in w),
                "errors": sum(r.errors for r in w),
                "rps_rounds": [r.rps for r in w],
                "stream_s": secs,
                "stream_mb_s": size / secs / 1e6,
                "rss_growth_kb": grown,
            }
            srv.stop()

    ew, ng = results["edgeworker"], results["nginx"]
    rows = [
        [
            name,
            f"{r['rps']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            str(r["errors"]),
            f"{r['stream_mb_s']:.0f}",
            mib(r["rss_growth_kb"]),
        ]
        for name, r in results.items()
    ]
    print(f"edgeworker runs on {servers_python(PYTHON)}")
    print(
        format_table(
            [
                "proxy",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                f"{args.stream_mib} MiB MB/s",
                "RSS +MiB",
            ],
            rows,
            right=range(1, 7),
        )
    )
    checks = [
        Check("proxy req/s: edgeworker / nginx", ratio(ew["rps"], ng["rps"]), ">=", 0.35),
        Check("proxy p99: edgeworker / nginx", ratio(ew["p99_ms"], ng["p99_ms"]), "<=", 3.0),
        Check(
            "stream throughput: edgeworker / nginx",
            ratio(ew["stream_mb_s"], ng["stream_mb_s"]),
            ">=",
            0.3,
        ),
        Check("stream worker RSS growth", ew["rss_growth_kb"] / 1024, "<=", 20.0, " MiB"),
    ]
    print()
    print(
        format_table(
            ["check", "value", "target", "verdict"],
            [
                [
                    c.name,
                    "-" if c.value is None else f"{c.value:.2f}{c.unit}",
                    f"{c.op} {c.target:g}",
                    c.verdict,
                ]
                for c in checks
            ],
            right=(1,),
        )
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"results": results, "checks": [c.to_json() for c in checks]}, indent=2)
        )
    if args.check and any(c.verdict != "PASS" for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
