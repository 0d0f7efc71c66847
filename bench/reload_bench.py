"""Lifecycle figures: reload under load, reload latency, respawn latency.

Runs, in one go on this machine:

1. **Reload under load**: wrk with keep-alive and wrk with ``Connection: close`` run for
   ``--duration`` seconds against edgeworker while the master gets SIGHUP every ``--every``
   seconds; every socket error, timeout or non-2xx answer counts as a failed request. The same
   against nginx (``nginx -s reload`` by SIGHUP to its master) for comparison.
2. **Reload latency**: a handler file is edited, ``edgeworker reload`` runs, and the time from
   that command returning to the first answer of the new code is measured (``--reloads`` times).
3. **Respawn latency**: a worker is SIGKILLed; the time until a replacement worker answers.

Usage: ``.venv/bin/python bench/reload_bench.py [--duration 10] [--every 0.5] [--json FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ProcessRegistry,
    find_wrk,
    free_port,
    http_get,
    parse_wrk_output,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

APP = 'def version(req):\n    return "{v}"\n'
EDGE_CONF = """
[main]
workers = 2
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


def log(msg: str) -> None:
    print(f"[reload_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wrk(url: str, duration: float, close: bool) -> subprocess.Popen:
    argv = [find_wrk(), "--latency", "-t", "1", "-c", "20", "-d", f"{max(1, round(duration))}s",
            "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    return subprocess.Popen(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def under_load(url: str, master_pid: int, duration: float, every: float) -> dict:
    """Both wrk runs at once while the master gets SIGHUP every ``every`` seconds."""
    runs = {"keepalive": wrk(url, duration, False), "close": wrk(url, duration, True)}
    hups = 0
    end = time.monotonic() + duration - 1.0
    time.sleep(0.5)
    while time.monotonic() < end:
        os.kill(master_pid, signal.SIGHUP)
        hups += 1
        time.sleep(every)
    out = {"reloads": hups}
    for name, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=duration + 30)
        res = parse_wrk_output(stdout, url)
        out[name] = {"requests": res.requests, "failed": res.errors, "rps": res.rps}
    out["requests"] = sum(out[n]["requests"] for n in runs)
    out["failed"] = sum(out[n]["failed"] for n in runs)
    return out


def start_edgeworker(reg: ProcessRegistry, tmp: Path) -> tuple[int, object]:
    port = free_port()
    (tmp / "app.py").write_text(APP.format(v="v1"))
    (tmp / "edgeworker.toml").write_text(EDGE_CONF.format(port=port))
    srv = reg.start("edgeworker", [PY, "-m", "edgeworker", "run", "-c", "edgeworker.toml"],
                    cwd=tmp, log_path=tmp / "out.log", stop_signal=signal.SIGTERM)
    wait_for_port("127.0.0.1", port, 30, srv.proc)
    time.sleep(1.0)
    return port, srv


def seconds_until(pred, limit: float = 30.0) -> float:
    """Seconds until ``pred()`` is true (connection errors count as false), at most ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            if pred():
                break
        except OSError:
            pass
        time.sleep(0.005)
    return time.monotonic() - t0


def reload_latency(tmp: Path, port: int, n: int) -> list[float]:
    times = []
    for i in range(n):
        version = f"v{i + 2}"
        (tmp / "app.py").write_text(APP.format(v=version))
        done = subprocess.run([PY, "-m", "edgeworker", "reload", "-c", str(tmp / "edgeworker.toml")],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"edgeworker reload failed: {done.stderr}")
        times.append(seconds_until(
            lambda v=version: http_get("127.0.0.1", port, "/v", timeout=2).body.decode() == v))
        time.sleep(0.5)
    return times


def respawn_latency(master_pid: int, port: int, n: int) -> list[float]:
    from common import child_pids

    times = []
    for _ in range(n):
        victim = child_pids(master_pid)[0]
        os.kill(victim, signal.SIGKILL)
        def replaced(victim: int = victim) -> bool:
            pids = child_pids(master_pid)
            return (len(pids) >= 2 and victim not in pids
                    and http_get("127.0.0.1", port, "/v", timeout=2).status == 200)

        times.append(seconds_until(replaced))
        time.sleep(0.5)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=0.5, help="seconds between two SIGHUPs")
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "duration": args.duration,
                     "every": args.every}
    with ProcessRegistry() as reg, tempfile.TemporaryDirectory(prefix="reload_bench-") as d:
        tmp = Path(d)
        edge = tmp / "edge"
        edge.mkdir()
        port, srv = start_edgeworker(reg, edge)
        url = f"http://127.0.0.1:{port}/v"
        log(f"edgeworker: {args.duration:g}s of load, SIGHUP every {args.every:g}s")
        results["edgeworker_under_load"] = under_load(url, srv.pid, args.duration, args.every)
        time.sleep(2)
        log(f"edgeworker: reload latency x{args.reloads}")
        results["reload_latency_s"] = reload_latency(edge, port, args.reloads)
        log("edgeworker: respawn latency x5")
        results["respawn_latency_s"] = respawn_latency(srv.pid, port, 5)
        srv.stop()
        if not args.no_nginx:
            ngx = tmp / "nginx"
            (ngx / "tmp").mkdir(parents=True)
            nport = free_port()
            (ngx / "nginx.conf").write_text(NGINX_CONF.format(dir=ngx, port=nport))
            nsrv = reg.start("nginx", ["nginx", "-p", str(ngx), "-c", str(ngx / "nginx.conf"),
                                       "-g", "daemon off;"], cwd=ngx, log_path=ngx / "out.log",
                             stop_signal=signal.SIGQUIT)
            wait_for_port("127.0.0.1", nport, 30, nsrv.proc)
            log(f"nginx: {args.duration:g}s of load, SIGHUP every {args.every:g}s")
            results["nginx_under_load"] = under_load(f"http://127.0.0.1:{nport}/v", nsrv.pid,
                                                     args.duration, args.every)
            nsrv.stop()
    e = results["edgeworker_under_load"]
    print(f"reload under load ({args.duration:g}s, SIGHUP every {args.every:g}s, "
          "wrk keep-alive + wrk Connection: close, 20 connections each)")
    rows = [("edgeworker", e)]
    if "nginx_under_load" in results:
        rows.append(("nginx", results["nginx_under_load"]))
    for name, r in rows:
        share = 100.0 * r["failed"] / max(1, r["requests"])
        print(f"  {name:<11} reloads {r['reloads']:>3}  requests {r['requests']:>8}  "
              f"failed {r['failed']:>5} ({share:.3f}%)  keep-alive failed "
              f"{r['keepalive']['failed']}, close failed {r['close']['failed']}")
    rl = results["reload_latency_s"]
    rs = results["respawn_latency_s"]
    print(f"reload latency (edgeworker reload returned -> new code answers): median "
          f"{statistics.median(rl):.3f}s, max {max(rl):.3f}s  (target <= 2 s)")
    print(f"respawn latency (SIGKILL -> replacement answers): median {statistics.median(rs):.3f}s, "
          f"max {max(rs):.3f}s  (target <= 1 s)")
    verdict = e["failed"] == 0 and max(rl) <= 2.0 and max(rs) <= 1.0
    print("targets:", "PASS" if verdict else "FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
