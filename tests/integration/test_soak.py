"""Soak: minutes of mixed traffic against one server, checking that workers leak nothing.

Traffic (wrk, 2 threads, 32 connections, a Lua script rotating requests): a plain hello
(keep-alive), the same with ``Connection: close`` (a new connection each time), a proxied
request to a real backend, a shm-limited location (mostly 429 once the quota is spent), a
JWT-protected location with a valid token (cached) and with fresh tokens / bad tokens (401).

After a warm-up, the worker RSS and open descriptors (``/proc/<pid>/fd``) are sampled at quiet
points between load segments. Pass: the same workers all along (no crash), RSS growth < 5 %
after warm-up, no descriptor growth beyond a small allowance (pooled upstream connections),
no socket errors, and the server still answers. Figures are printed (``-s``).

Duration: ``EW_SOAK_SECONDS`` (300 by default). Marked slow:
``pytest -m slow tests/integration/test_soak.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import jwt as pyjwt
import pytest

from ..backends import Backend
from ..support import require_tool

SECRET = "soak-secret-soak-secret-soak-secret-0123456789"
SECONDS = int(os.environ.get("EW_SOAK_SECONDS", "300"))
WARMUP = 30

CONF = """
[main]
worker_connections = 4096

[shared_dict]
rl = "1m"

[http]
access_log_format = "json"

[upstream.back]
servers = ["{backend}"]
keepalive = 16

[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "/hello"
  return = {{{{ status = 200, body = "hello" }}}}
  [[server.location]]
  match = "/proxy/"
  proxy_pass = "http://back/"
  [[server.location]]
  match = "/limited"
  limit = {{{{ rate = "100r/s", store = "shm:rl", key = "$http_x_user" }}}}
  return = {{{{ status = 200, body = "limited" }}}}
  [[server.location]]
  match = "/jwt"
  jwt = {{{{ secret = "{secret}", algorithms = ["HS256"], claims_to_headers = {{{{ sub = "X-User-Id" }}}} }}}}
  content = "app:who"
"""

APP = """
def who(req):
    return "user " + req.headers.get("X-User-Id", "-") + "\\n"
"""

LUA = """
local reqs = {}
local i = 0
local good = "%(good)s"
function init(args)
  reqs = {
    wrk.format("GET", "/hello"),
    wrk.format("GET", "/hello", {["Connection"] = "close"}),
    wrk.format("GET", "/proxy/echo?x=1"),
    wrk.format("GET", "/limited", {["X-User"] = "u" .. math.random(1, 50)}),
    wrk.format("GET", "/jwt", {["Authorization"] = "Bearer " .. good}),
    wrk.format("GET", "/jwt", {["Authorization"] = "Bearer " .. good .. "x"}),
    wrk.format("GET", "/jwt"),
    wrk.format("POST", "/proxy/post", {["Content-Type"] = "text/plain"}, string.rep("b", 3000)),
  }
end
function request()
  i = i + 1
  return reqs[(i %% #reqs) + 1]
end
"""


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wrk(port: int, script: str, seconds: int) -> str:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "5s", "-s", script,
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _socket_errors(report: str) -> dict[str, int]:
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    if not m:
        return {}
    return dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 600)
def test_soak_mixed_traffic_no_leak(server, tmp_path) -> None:
    require_tool("wrk", "wrk")
    backend = Backend("soak")
    try:
        srv = server(CONF.format(backend=backend.addr, secret=SECRET), files={"app.py": APP},
                     workers=2)
        good = pyjwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, SECRET,
                            algorithm="HS256")
        script = tmp_path / "mix.lua"
        script.write_text(LUA % {"good": good})
        workers = sorted(srv.worker_pids())
        assert len(workers) == 2

        def sample() -> tuple[list[int], list[int]]:
            time.sleep(1.5)  # quiet: wrk's connections are closed
            return [_rss_kb(p) for p in workers], [_fds(p) for p in workers]

        start_rss, start_fds = sample()
        report = _wrk(srv.port, str(script), WARMUP)
        base_rss, base_fds = sample()
        print(f"\nstart: rss {start_rss} kB, fds {start_fds}")
        print(f"after {WARMUP}s warm-up: rss {base_rss} kB, fds {base_fds}")
        total_requests = int(re.search(r"(\d+) requests in", report).group(1))
        errors = _socket_errors(report)
        segments = max(1, (SECONDS - WARMUP) // 30)
        history = []
        for n in range(segments):
            report = _wrk(srv.port, str(script), 30)
            total_requests += int(re.search(r"(\d+) requests in", report).group(1))
            for k, v in _socket_errors(report).items():
                errors[k] = errors.get(k, 0) + v
            rss, fds = sample()
            history.append((rss, fds))
            print(f"after {WARMUP + 30 * (n + 1)}s: rss {rss} kB, fds {fds}")
        end_rss, end_fds = history[-1]
        growth = [(e - b) / b * 100 for e, b in zip(end_rss, base_rss, strict=True)]
        print(f"requests: {total_requests}, socket errors: {errors or 'none'}")
        print("rss growth after warm-up: " + ", ".join(f"{g:+.2f}%" for g in growth))

        assert sorted(srv.worker_pids()) == workers, "a worker died during the soak"
        assert all(g < 5.0 for g in growth), growth
        # descriptors: the upstream keep-alive pool (≤ 16 per worker) may hold a few more or
        # fewer idle connections from one quiet point to the next; anything beyond is a leak
        assert all(e <= b + 16 for e, b in zip(end_fds, base_fds, strict=True)), (base_fds,
                                                                                  end_fds)
        assert not any(errors.values()), errors
        assert srv.get("/hello")[0] == 200
        assert "unexpected error" not in srv.errors()
    finally:
        backend.stop()
