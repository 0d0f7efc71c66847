#!/usr/bin/env python3
"""Edge bench: what rate limiting and JWT verification cost per request, as ratios.

One edgeworker instance (2 workers, access log off) serves the same content handler
(``"hello\\n"``) on several routes; a redis-server is started on a free port for the Redis
limiter. wrk (keep-alive, 2 threads, 50 connections) measures each route in turn:

    /hello          no access phase at all                      (the baseline)
    /shm            declarative limit, store = "shm:rl"         (1 atomic shm incr per request)
    /redis          declarative limit, store = "redis:default"  (1 EVALSHA round trip)
    /jwt            declarative jwt HS256, one valid token      (verified-token cache hits)
    /jwt-nocache    access handler calling PyJWT on every request (for comparison)

The limits are far above what wrk can send (every request is allowed but still counted), and
before the load each route is checked (200, RateLimit headers, 401 without a token). Targets
(same run):

    jwt / hello   >= 0.8        shm / hello  >= 0.9        redis / hello >= 0.5

Usage: python bench/edge_bench.py [--duration 10] [--warmup 2] [--json FILE] [--check]
Exit status: 0 after a complete run, 1 with --check when a target is missed, 2 when the harness
cannot run (wrk or redis-server missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
    parse_wrk_output,
    ratio,
    servers_python,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-bench-secret-bench-secret"

HANDLERS = '''
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
'''.replace("@SECRET@", SECRET)

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

    return jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, SECRET,
                      algorithm="HS256")


def wrk(url: str, args: argparse.Namespace, headers: dict[str, str], duration: float):
    argv = [find_wrk(), "--latency", "-t", str(args.threads), "-c", str(args.connections),
            "-d", f"{max(1, round(duration))}s", "--timeout", "5s"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr}")
    return parse_wrk_output(done.stdout, url)


def get(port: int, path: str, headers: dict[str, str] | None = None):
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every route N times, interleaved; report the median")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    try:
        find_wrk()
    except Exception as exc:
        print(f"edge_bench: {exc}", file=sys.stderr)
        return 2
    redis_server = shutil.which("redis-server")
    if not redis_server:
        print("edge_bench: redis-server not found", file=sys.stderr)
        return 2

    token = make_token()
    auth = {"Authorization": f"Bearer {token}"}
    routes = [("hello", "/hello", {}), ("shm", "/shm", {}), ("redis", "/redis", {}),
              ("jwt", "/jwt", auth), ("jwt-nocache", "/jwt-nocache", auth)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp, ProcessRegistry() as reg:
        redis_port = free_port()
        reg.start("redis", [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", tmp],
                  cwd=tmp, log_path=os.path.join(tmp, "redis.log"))
        wait_for_port("127.0.0.1", redis_port, 10)
        port = free_port()
        Path(tmp, "bench_edge.py").write_text(HANDLERS)
        conf = Path(tmp, "edgeworker.toml")
        conf.write_text(CONFIG.format(workers=args.workers, dir=tmp, port=port,
                                      redis_port=redis_port))
        env = dict(os.environ, BENCH_JWT_SECRET=SECRET)
        ew = reg.start("edgeworker", [sys.executable, "-m", "edgeworker", "run", "-c", str(conf)],
                       cwd=tmp, log_path=os.path.join(tmp, "edgeworker.log"),
                       env=dict(env, PYTHONPATH=str(ROOT)))
        wait_for_port("127.0.0.1", port, 20, ew.proc)
        time.sleep(0.5)
        # the routes do what they claim before any load
        assert http_get("127.0.0.1", port, "/hello").body == b"hello\n"
        for path in ("/shm", "/redis"):
            status, h, body = get(port, path)
            assert status == 200 and body == b"hello\n" and "ratelimit" in h, (path, status, h)
        assert get(port, "/jwt")[0] == 401
        assert get(port, "/jwt", auth)[0] == 200
        assert get(port, "/jwt-nocache")[0] == 401
        runs: dict[str, list] = {name: [] for name, _, _ in routes}
        for rnd in range(max(1, args.rounds)):
            # every other round in the reverse order: a drift within a round weighs on all
            for name, path, headers in reversed(routes) if rnd % 2 else routes:
                url = f"http://127.0.0.1:{port}{path}"
                if args.warmup > 0:
                    wrk(url, args, headers, args.warmup)
                res = wrk(url, args, headers, args.duration)
                if res.errors:
                    raise RuntimeError(f"{name}: {res.errors} errors/non-2xx answers")
                runs[name].append(res)
                print(f"  round {rnd + 1} {name:12s} {res.rps:10.0f} req/s  "
                      f"p50 {res.p50_ms:.2f} ms  p99 {res.p99_ms:.2f} ms", flush=True)
        for name, rs in runs.items():
            results[name] = sorted(rs, key=lambda r: r.rps)[len(rs) // 2]
    base = results["hello"].rps
    checks = [
        Check("jwt (cached) / hello", ratio(results["jwt"].rps, base), ">=", 0.8),
        Check("shm limit / hello", ratio(results["shm"].rps, base), ">=", 0.9),
        Check("redis limit / hello", ratio(results["redis"].rps, base), ">=", 0.5),
        Check("jwt without cache / hello", ratio(results["jwt-nocache"].rps, base), ">=", 0.0,
              note="informational"),
    ]
    print()
    print(f"edgeworker runs on {servers_python(sys.executable)}")
    print(format_table(
        ["route", "req/s", "p50 ms", "p99 ms"],
        [[n, f"{r.rps:.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}"] for n, r in results.items()],
        right=(1, 2, 3)))
    print()
    print(format_table(
        ["check", "value", "target", "verdict"],
        [[c.name, "-" if c.value is None else f"{c.value:.2f}", f"{c.op} {c.target}",
          c.verdict] for c in checks], right=(1,)))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"results": {n: r.to_json() for n, r in results.items()},
             "checks": [c.to_json() for c in checks]}, indent=2))
    if args.check and any(c.verdict == "FAIL" for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
