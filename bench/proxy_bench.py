#!/usr/bin/env python3
"""Proxy benchmark: edgeworker ``proxy_pass`` against nginx ``proxy_pass``, same backend, same run.

One nginx serves static files (the backend: a small ``/small.txt`` and a ``--stream-mib`` MiB
sparse ``/big.bin``). In front of it run an nginx proxy and an edgeworker proxy, 2 workers each,
access logs off, keep-alive to the upstream on both (nginx: ``keepalive 32``,
``proxy_http_version 1.1``, ``Connection ""``; edgeworker: ``keepalive = 32``). Both do the
same work on the headers: they send the backend the forwarding fields a reverse proxy sends and a
fresh request id, and return that id to the client: edgeworker by default, nginx with the usual
lines (``proxy_set_header X-Real-IP $remote_addr``, ``X-Forwarded-For
$proxy_add_x_forwarded_for``, ``X-Forwarded-Proto $scheme``, ``X-Request-Id $request_id``, and
``add_header X-Request-Id $request_id``). nginx's ``/``
location keeps its default proxy buffers (never to temp files: ``proxy_max_temp_file_size 0``);
its ``= /big.bin`` location has ``proxy_buffering off``, so that nginx relays the big body as it
arrives, as edgeworker does (it never buffers a response), and the stream comparison is fair.

Each of ``--rounds`` (5) rounds measures both proxies, one after the other (every other round in
the reverse order, never loaded at the same time):

- wrk (keep-alive, 2 threads, ``--connections`` 50, ``--duration`` 10 s) on ``/small.txt``:
  req/s, p50, p99; each measured run right after ``--warmup`` (2) s of wrk on the same proxy,
  so that what ran before it (the other proxy, a download) does not weigh on its first seconds;
- one download of ``/big.bin`` (``--stream-mib`` 512 MiB; a Python client, 1 MiB reads): MB/s,
  and for edgeworker the growth of the serving worker's RSS: its largest RSS during that
  download (sampled every 50 ms) over its RSS before the first download of the run (the
  warm-up), so that neither a buffer kept from one download to the next nor a growth with
  each one goes unseen (the largest growth of the two workers). Before the first round each
  proxy gets a 2 s wrk warm-up and one download.

The goals, each taken within every round (bench/common.py's Goal):

    proxied req/s: edgeworker / nginx              >= 0.40
    proxied p99: edgeworker / nginx                <= 3
    stream throughput: edgeworker / nginx          >= 0.3
    stream: edgeworker worker RSS growth           <= 20 MiB

A default run takes about 2 minutes.

Usage: python bench/proxy_bench.py [--duration 10] [--connections 50] [--stream-mib 512]
[--rounds 5] [--json FILE] [--check]
Exit status: 0 after a run (1 with ``--check`` unless every goal is PASS), 2 if the harness
cannot run (wrk or nginx missing, a proxy answering wrongly).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CpuMeter,
    Goal,
    ProcessRegistry,
    Server,
    Table,
    WrkResult,
    add_common_args,
    child_pids,
    disturbed_rounds,
    find_wrk,
    finish,
    free_port,
    http_get,
    per_round_ratio,
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
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-Id $request_id;
        add_header X-Request-Id $request_id;
        location / {{
            proxy_pass http://backend;
            proxy_max_temp_file_size 0;
        }}
        location = /big.bin {{
            proxy_pass http://backend;
            proxy_buffering off;
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


def missing_tool(nginx: bool = True) -> str | None:
    """Why the harness cannot run: wrk (or, with ``nginx``, nginx) missing; None when both are
    there."""
    try:
        find_wrk()
    except FileNotFoundError as exc:
        return str(exc)
    if nginx and not shutil.which("nginx"):
        return "nginx not found (Debian: apt-get install nginx-light)"
    return None


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


def download(port: int, path: str, expect: int, limit: float = 120.0) -> float:
    """GET ``path`` over a fresh connection, read and drop the body; seconds taken.

    Raises ``RuntimeError`` if the body is short or takes more than ``limit`` seconds."""
    with socket.create_connection((HOST, port), timeout=30) as s:
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
            if time.monotonic() - t0 > limit:
                raise RuntimeError(f"download of {path} took more than {limit:g}s")
        elapsed = time.monotonic() - t0
    if got < expect:
        raise RuntimeError(f"download of {path} got {got} of {expect} bytes")
    return elapsed


def stream_with_rss(
    port: int, pids: list[int], size: int, since: dict[int, int] | None = None
) -> tuple[float, int]:
    """Download through edgeworker while sampling its workers' RSS: (seconds, the largest
    growth of a worker in KiB over its RSS in ``since``, else over its RSS just before)."""
    now = {pid: rss_kb(pid) or 0 for pid in pids}
    base = {pid: (since or {}).get(pid, now[pid]) for pid in pids}
    peak = dict(now)
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


SIDES = ("nginx", "edgeworker")


@dataclass
class Side:
    """One proxy under test and what each round measured of it (None: the run failed)."""

    name: str
    server: Server
    port: int
    wrk: list[WrkResult | None] = field(default_factory=list)
    wrk_cpu: list[float | None] = field(default_factory=list)  # other processes' share, %
    stream_mb_s: list[float | None] = field(default_factory=list)
    stream_cpu: list[float | None] = field(default_factory=list)
    rss_growth_kib: list[int | None] = field(default_factory=list)  # edgeworker only
    rss_before: dict[int, int] = field(default_factory=dict)  # worker pid -> KiB, before streams
    errors: list[str] = field(default_factory=list)


def measure_wrk(side: Side, backend: Server, args: argparse.Namespace) -> None:
    pids = [side.server.pid, *child_pids(side.server.pid), backend.pid, *child_pids(backend.pid)]
    url = f"http://{HOST}:{side.port}/small.txt"
    meter = CpuMeter()
    try:
        if args.warmup:
            run_wrk(url, connections=args.connections, duration=args.warmup)
        meter.start(pids)
        res = run_wrk(url, connections=args.connections, duration=args.duration)
    except RuntimeError as exc:
        side.errors.append(f"wrk: {exc}")
        res = None
    side.wrk_cpu.append(meter.stop(pids))
    side.wrk.append(res)


def measure_stream(side: Side, backend: Server, size: int) -> None:
    """One download of /big.bin; the client runs in this process, so its pid counts as ours."""
    workers = child_pids(side.server.pid)
    pids = [side.server.pid, *workers, backend.pid, *child_pids(backend.pid), os.getpid()]
    meter = CpuMeter()
    meter.start(pids)
    grown: int | None = None
    mb_s: float | None = None
    try:
        if side.name == "edgeworker":
            secs, grown = stream_with_rss(side.port, workers, size, side.rss_before)
        else:
            secs = download(side.port, "/big.bin", size)
        mb_s = size / secs / 1e6
    except (OSError, RuntimeError) as exc:
        side.errors.append(f"stream: {exc}")
    side.stream_cpu.append(meter.stop(pids))
    side.stream_mb_s.append(mb_s)
    side.rss_growth_kib.append(grown)


def start_proxy(
    reg: ProcessRegistry, name: str, tmpd: Path, backend_port: int, args: argparse.Namespace
) -> Side:
    """Start the proxy ``name``, check its answer, warm it up. Raises ``RuntimeError`` (or
    ``TimeoutError``) when it does not start or answers wrongly."""
    port = free_port()
    if name == "nginx":
        srv = start_nginx(
            reg,
            tmpd / "nginx-proxy",
            PROXY_BODY.format(host=HOST, port=port, backend_port=backend_port),
            port,
            "nginx-proxy",
        )
        wait_for_workers(srv.pid, WORKERS, 15)
    else:
        srv = start_edgeworker(reg, tmpd / "edgeworker", port, backend_port)
    try:
        reply = http_get(HOST, port, "/small.txt")
    except (OSError, http.client.HTTPException) as exc:
        raise RuntimeError(f"{name}: GET /small.txt failed: {exc}") from exc
    if reply.status != 200 or reply.body != SMALL_BODY:
        raise RuntimeError(f"{name}: unexpected reply {reply.status} {reply.body[:80]!r}")
    run_wrk(f"http://{HOST}:{port}/small.txt", connections=args.connections, duration=2)
    side = Side(name, srv, port)
    side.rss_before = {pid: rss_kb(pid) or 0 for pid in child_pids(srv.pid)}
    download(port, "/big.bin", args.stream_mib * 1024 * 1024)  # warm-up
    return side


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _wrk(side: Side, attr: str) -> list[float | None]:
    return [None if w is None else getattr(w, attr) for w in side.wrk]


def tables(sides: dict[str, Side], args: argparse.Namespace, flags: list[bool]) -> list[Table]:
    rows = []
    for i in range(args.rounds):
        order = list(sides.values())
        for s in reversed(order) if i % 2 else order:
            w = s.wrk[i]
            grown = s.rss_growth_kib[i]
            rows.append(
                [
                    f"{i + 1}{'*' if flags[i] else ''}",
                    s.name,
                    "-" if w is None else f"{w.rps:,.0f}",
                    "-" if w is None else f"{w.p50_ms:.2f}",
                    "-" if w is None else f"{w.p99_ms:.2f}",
                    "-" if w is None else str(w.errors),
                    _f(s.wrk_cpu[i], ".0f"),
                    _f(s.stream_mb_s[i], ",.0f"),
                    "-" if grown is None else f"{grown / 1024:.1f}",
                    _f(s.stream_cpu[i], ".0f"),
                ]
            )
    notes = [
        f"{WORKERS} workers per proxy, access logs off, keep-alive to the same backend nginx",
        "both send the backend X-Real-IP, X-Forwarded-For, X-Forwarded-Proto and a fresh "
        "X-Request-Id, and return the id to the client (edgeworker by default, nginx with "
        "proxy_set_header and add_header)",
        f"wrk -t2 -c{args.connections} -d{args.duration:g}s, keep-alive, on the proxied "
        f"/small.txt ({len(SMALL_BODY)} bytes), each run right after {args.warmup:g} s of wrk "
        "on the same proxy; before round 1, a 2 s warm-up and one download per proxy",
        f"stream: one {args.stream_mib} MiB download of /big.bin per proxy and round (Python "
        "client, 1 MiB reads); nginx relays it with proxy_buffering off",
        "RSS +MiB: edgeworker's serving worker, its largest RSS during the round's download "
        "over its RSS before the first download (the warm-up): a buffer kept from one "
        "download to the next or growing with each counts",
        "other CPU %: other processes' share of the machine during the wrk run, then the "
        "download; a round marked * had more than 20 % in one of them",
        f"edgeworker runs on {servers_python(PYTHON)}",
    ]
    headers = [
        "round", "proxy", "req/s", "p50 ms", "p99 ms", "errors", "other CPU %",
        "stream MB/s", "RSS +MiB", "other CPU %",
    ]  # fmt: skip
    out = [Table("Each round, in the order run", headers, rows, notes, right=range(2, 10))]
    errors = [[s.name, e] for s in sides.values() for e in s.errors]
    if errors:
        out.append(Table("Failed measurements", ["proxy", "error"], errors))
    return out


def goals(sides: dict[str, Side], wrk_flags: list[bool], stream_flags: list[bool]) -> list[Goal]:
    ew, ng = sides["edgeworker"], sides["nginx"]
    return [
        Goal(
            "proxied req/s: edgeworker / nginx",
            ">=",
            0.40,
            per_round_ratio(_wrk(ew, "rps"), _wrk(ng, "rps")),
            wrk_flags,
        ),
        Goal(
            "proxied p99: edgeworker / nginx",
            "<=",
            3.0,
            per_round_ratio(_wrk(ew, "p99_ms"), _wrk(ng, "p99_ms")),
            wrk_flags,
        ),
        Goal(
            "stream throughput: edgeworker / nginx",
            ">=",
            0.3,
            per_round_ratio(ew.stream_mb_s, ng.stream_mb_s),
            stream_flags,
        ),
        Goal(
            "stream: edgeworker worker RSS growth",
            "<=",
            20.0,
            [None if v is None else v / 1024 for v in ew.rss_growth_kib],
            unit=" MiB",
            note="memory does not depend on the machine's load: no round is left out",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run (10)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    ap.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of wrk on the same proxy right before each measured run (2; 0 = none)",
    )
    ap.add_argument(
        "--stream-mib", type=int, default=512, help="size of the streamed download, MiB (512)"
    )
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.stream_mib < 1 or args.duration <= 0 or args.warmup < 0:
        ap.error("--rounds, --stream-mib and --duration must be positive, --warmup >= 0")
    if why := missing_tool():
        print(why, file=sys.stderr)
        return 2

    size = args.stream_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp, ProcessRegistry() as reg:
        tmpd = Path(tmp)
        try:
            backend_port = start_backend(reg, tmpd, size)
            backend = reg.servers[-1]
            sides = {name: start_proxy(reg, name, tmpd, backend_port, args) for name in SIDES}
        except (OSError, RuntimeError, TimeoutError) as exc:
            print(f"proxy bench cannot run: {exc}", file=sys.stderr)
            return 2
        ew, ng = sides["edgeworker"], sides["nginx"]
        # the rounds interleave the two proxies (the machine's noise hits both alike), every
        # other round in the reverse order (a drift within a round too)
        for i in range(args.rounds):
            order = list(sides.values())
            if i % 2:
                order.reverse()
            for s in order:
                measure_wrk(s, backend, args)
            for s in order:
                measure_stream(s, backend, size)
            rps = per_round_ratio(_wrk(ew, "rps")[-1:], _wrk(ng, "rps")[-1:])[0]
            mbs = per_round_ratio(ew.stream_mb_s[-1:], ng.stream_mb_s[-1:])[0]
            print(
                f"round {i + 1}: edgeworker / nginx req/s {_f(rps, '.2f')}, "
                f"stream {_f(mbs, '.2f')}",
                file=sys.stderr,
                flush=True,
            )
    n = args.rounds
    wrk_flags = disturbed_rounds([[s.wrk_cpu[i] for s in sides.values()] for i in range(n)])
    stream_flags = disturbed_rounds([[s.stream_cpu[i] for s in sides.values()] for i in range(n)])
    flags = [a or b for a, b in zip(wrk_flags, stream_flags, strict=True)]
    return finish(
        "proxy",
        args,
        goals(sides, wrk_flags, stream_flags),
        tables(sides, args, flags),
        started,
        extra={"workers": WORKERS, "stream_mib": args.stream_mib, "duration": args.duration},
    )


if __name__ == "__main__":
    sys.exit(main())
