#!/usr/bin/env python3
"""Edge bench: what rate limiting and JWT verification cost per request, as ratios to /hello.

One edgeworker instance (2 workers, access log off) serves the same content handler
(``"hello\\n"``) on several routes; a redis-server is started on a free port for the Redis
limiter. Each round, wrk (keep-alive, 2 threads, 50 connections, a 1 s warm-up then 5 s)
measures every route in turn, every other round in the reverse order:

    /hello          no access phase at all                      (the baseline)
    /shm            declarative limit, store = "shm:rl"         (1 atomic shm incr per request)
    /redis          declarative limit, store = "redis:default"  (1 EVALSHA round trip)
    /jwt            declarative jwt HS256, one valid token      (verified-token cache hits)
    /jwt-nocache    access handler calling PyJWT on every request (for comparison)

The limits are far above what wrk can send (every request is allowed but still counted), and
before the load each route is checked (200, RateLimit headers, 401 without a token). Each goal
is the route's req/s divided by /hello's of the same round, judged over the rounds by
bench/common.py's Goal (a round beside other load is shown marked ``*`` and left out):

    jwt / hello   >= 0.8        shm / hello  >= 0.9        redis / hello >= 0.5

and jwt-nocache / hello for context. A default run (5 rounds) takes about 3 minutes.

Usage: python bench/edge_bench.py [--rounds 5] [--duration 5] [--warmup 1] [--json FILE]
[--check]. Exit status: 0 after a complete run, 1 with --check unless every goal is PASS, 2 when
the harness cannot run (wrk or redis-server missing, a route that answers wrongly before or
during the load).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DISTURBED_PCT,
    CpuMeter,
    Goal,
    HarnessError,
    ProcessRegistry,
    Table,
    WrkResult,
    add_common_args,
    child_pids,
    disturbed_rounds,
    find_wrk,
    finish,
    free_port,
    per_round_ratio,
    run_wrk,
    servers_python,
    wait_for_port,
    wait_for_workers,
)
from http_bench import cell, kept_median, other_cpu_row  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-bench-secret-bench-secret"

HANDLERS = """
import jwt

SECRET = "@SECRET@"

def hello(req):
    return "hello\\n"

def pyjwt_every_time(req):
    token = req.headers.get("authorization", "")[7:]
    try:
        jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.InvalidTokenError:
        req.exit(401)
""".replace("@SECRET@", SECRET)

CONFIG = """
[main]
workers = {workers}
pid_file = "{dir}/edgeworker.pid"
error_log = "{dir}/error.log"
python_path = ["."]

[http]
access_log = "off"

[shared_dict]
rl = "10m"

[redis.default]
url = "redis://127.0.0.1:{redis_port}/0"
pool_size = 64

[[server]]
listen = ["127.0.0.1:{port}"]

  [[server.location]]
  match = "= /hello"
  content = "bench_edge:hello"

  [[server.location]]
  match = "= /shm"
  limit = {{ rate = "100000000r/s", store = "shm:rl" }}
  content = "bench_edge:hello"

  [[server.location]]
  match = "= /redis"
  limit = {{ rate = "100000000r/s", store = "redis:default" }}
  content = "bench_edge:hello"

  [[server.location]]
  match = "= /jwt"
  jwt = {{ secret = "env:BENCH_JWT_SECRET", algorithms = ["HS256"], claims_to_headers = {{ sub = "X-User-Id" }} }}
  content = "bench_edge:hello"

  [[server.location]]
  match = "= /jwt-nocache"
  access = "bench_edge:pyjwt_every_time"
  content = "bench_edge:hello"
"""


def make_token() -> str:
    import jwt

    return jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


#: (name, path, sends the token); /hello is the baseline of every ratio
ROUTES = (
    ("hello", "/hello", False),
    ("shm", "/shm", False),
    ("redis", "/redis", False),
    ("jwt", "/jwt", True),
    ("jwt-nocache", "/jwt-nocache", True),
)
#: (route, target of route / hello; None: a figure for context)
GOALS = (("jwt", 0.8), ("shm", 0.9), ("redis", 0.5), ("jwt-nocache", None))


def get(port: int, path: str, headers: dict[str, str] | None = None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def check_routes(port: int, auth: dict[str, str]) -> None:
    """Every route does what it claims before any load; HarnessError otherwise."""
    expected = [
        ("/hello", {}, 200, False),
        ("/shm", {}, 200, True),
        ("/redis", {}, 200, True),
        ("/jwt", {}, 401, False),
        ("/jwt", auth, 200, False),
        ("/jwt-nocache", {}, 401, False),
        ("/jwt-nocache", auth, 200, False),
    ]
    for path, headers, status, limited in expected:
        got, h, body = get(port, path, headers)
        token = "with" if headers else "without"
        if got != status or (status == 200 and body != b"hello\n"):
            raise HarnessError(
                f"GET {path} {token} a token answered {got} {body[:200]!r}, expected {status}"
            )
        if limited and "ratelimit" not in h:
            raise HarnessError(f"GET {path} answered without a RateLimit header: {h}")


def measure(
    url: str, args: argparse.Namespace, headers: dict[str, str], pids: list[int]
) -> tuple[WrkResult | None, float | None, str]:
    """Warm up, then one measured wrk run with the other-CPU meter: (result or None, other
    CPU %, error)."""
    load = {"threads": args.threads, "connections": args.connections, "headers": headers}
    try:
        if args.warmup > 0:
            run_wrk(url, duration=args.warmup, **load)
        meter = CpuMeter()
        meter.start(pids)
        res = run_wrk(url, duration=args.duration, **load)
        foreign = meter.stop(pids)
    except RuntimeError as exc:
        return None, None, str(exc)
    if res.errors:
        return None, foreign, f"{res.errors} socket errors or non-2xx answers"
    return res, foreign, ""


def build_tables(
    runs: dict[str, list[WrkResult | None]],
    foreign: list[list[float | None]],
    errors: list[str],
    args: argparse.Namespace,
    python: str,
) -> list[Table]:
    """Requests per second of each round, then the latency of the kept rounds."""
    dist = disturbed_rounds(foreign)
    rows, lat = [], []
    for name, rs in runs.items():
        rps = [r.rps if r else None for r in rs]
        rows.append(
            [
                name,
                *(cell(v, ",.0f", dist[i]) for i, v in enumerate(rps)),
                cell(kept_median(rps, dist), ",.0f"),
            ]
        )
        lat.append(
            [
                name,
                cell(kept_median([r.p50_ms if r else None for r in rs], dist), ".2f"),
                cell(kept_median([r.p99_ms if r else None for r in rs], dist), ".2f"),
            ]
        )
    rows.append(other_cpu_row(foreign, dist))
    n = len(foreign)
    per_round = Table(
        "Requests per second of each route in each round, then the median of the kept rounds",
        ["route", *(f"round {i + 1}" for i in range(n)), "median"],
        rows,
        notes=[
            *errors,
            f"one edgeworker, {args.workers} workers, access log off, on {python}; wrk "
            f"-t{args.threads} -c{args.connections} -d{args.duration:g}s (keep-alive) after a "
            f"{args.warmup:g} s warm-up; the routes one at a time, every other round in the "
            "reverse order",
            "other CPU %: the share of the machine used during a run by processes other than "
            "edgeworker, redis-server and wrk (the largest of the round's runs); over "
            f"{DISTURBED_PCT:g} % the round is marked * and left out of the medians and verdicts",
        ],
        right=tuple(range(1, n + 2)),
    )
    latency = Table(
        "Latency of each route (median of the kept rounds)",
        ["route", "p50 ms", "p99 ms"],
        lat,
        right=(1, 2),
    )
    return [per_round, latency]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (5)")
    ap.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up seconds before each run (1; 0 = none)"
    )
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    ap.add_argument("--workers", type=int, default=2, help="edgeworker workers (2)")
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or min(args.threads, args.workers, args.rounds) < 1:
        ap.error("--duration >= 1, --warmup >= 0, --threads, --workers and --rounds >= 1")
    if args.connections < args.threads:
        ap.error("--connections must be >= --threads")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    args = parse_args(argv)
    try:
        find_wrk()
    except FileNotFoundError as exc:
        print(f"edge_bench: {exc}", file=sys.stderr)
        return 2
    redis_server = shutil.which("redis-server")
    if not redis_server:
        print(
            "edge_bench: redis-server not found (Debian: apt-get install redis-server)",
            file=sys.stderr,
        )
        return 2

    auth = {"Authorization": f"Bearer {make_token()}"}
    runs: dict[str, list[WrkResult | None]] = {name: [] for name, _, _ in ROUTES}
    foreign: list[list[float | None]] = []
    errors: list[str] = []
    python = servers_python(sys.executable)
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp, ProcessRegistry() as reg:
        try:
            redis_port = free_port()
            redis_argv = [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1"]
            redis_argv += ["--save", "", "--appendonly", "no", "--dir", tmp]
            redis = reg.start("redis", redis_argv, cwd=tmp, log_path=os.path.join(tmp, "redis.log"))
            wait_for_port("127.0.0.1", redis_port, 10, redis.proc)
            port = free_port()
            Path(tmp, "bench_edge.py").write_text(HANDLERS)
            conf = Path(tmp, "edgeworker.toml")
            conf.write_text(
                CONFIG.format(workers=args.workers, dir=tmp, port=port, redis_port=redis_port)
            )
            env = dict(os.environ, BENCH_JWT_SECRET=SECRET, PYTHONPATH=str(ROOT))
            ew = reg.start(
                "edgeworker",
                [sys.executable, "-m", "edgeworker", "run", "-c", str(conf)],
                cwd=tmp,
                log_path=os.path.join(tmp, "edgeworker.log"),
                env=env,
            )
            wait_for_port("127.0.0.1", port, 20, ew.proc)
            wait_for_workers(ew.pid, args.workers, 20)
            check_routes(port, auth)
        except (OSError, RuntimeError, TimeoutError, HarnessError) as exc:
            tail = "\n".join(s.output_tail(15) for s in reg.servers)
            print(f"edge_bench: {exc}\n{tail}", file=sys.stderr)
            return 2
        for rnd in range(args.rounds):
            foreign.append([])
            # every other round in the reverse order: a drift within a round weighs on all
            for name, path, token in reversed(ROUTES) if rnd % 2 else ROUTES:
                pids = [ew.pid, *child_pids(ew.pid), redis.pid]
                res, pct, err = measure(
                    f"http://127.0.0.1:{port}{path}", args, auth if token else {}, pids
                )
                runs[name].append(res)
                foreign[-1].append(pct)
                if err:
                    errors.append(f"{name}, round {rnd + 1}: {err}")
                print(
                    f"[edge_bench] round {rnd + 1} {name:12s} "
                    + (f"{res.rps:10.0f} req/s" if res else f"failed: {err}"),
                    file=sys.stderr,
                    flush=True,
                )
    dist = disturbed_rounds(foreign)
    base = [r.rps if r else None for r in runs["hello"]]
    goals = [
        Goal(
            f"req/s {name} ÷ hello",
            ">=",
            target,
            per_round_ratio([r.rps if r else None for r in runs[name]], base),
            dist,
        )
        for name, target in GOALS
    ]
    extra = {
        "settings": {
            k: getattr(args, k) for k in ("duration", "warmup", "threads", "connections", "workers")
        },
        "servers_python": python,
        "runs": {n: [r.to_json() if r else None for r in rs] for n, rs in runs.items()},
        "foreign_cpu_pct": foreign,
    }
    status = finish(
        "edge_bench", args, goals, build_tables(runs, foreign, errors, args, python), started, extra
    )
    return 2 if errors else status


if __name__ == "__main__":
    sys.exit(main())
