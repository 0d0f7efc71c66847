#!/usr/bin/env python3
"""Instructions per request of the hot path, counted by valgrind's callgrind.

edgeworker runs with one worker on ``bench/configs/edgeworker.toml`` (the ``/hello`` content
handler and the ``/incr`` shared-dict access route of ``bench/handlers/bench_app.py``) with two
more locations: ``= /small.txt``, proxied to a local nginx serving a 120-byte file (the backend of
``bench/proxy_bench.py``), and ``= /limit``, the ``/hello`` handler behind a declarative
shared-dict limit keyed by ``$binary_remote_addr`` whose rate the run never reaches (every
request is allowed and gets the RateLimit headers); and a second server, a TLS listener (a
self-signed ECDSA P-256 certificate made with ``openssl`` at start-up) with the hello handler:
the ``tls`` route, keep-alive requests over TLS 1.3. The server runs under ``valgrind
--tool=callgrind --trace-children=yes --instr-atstart=no``: nothing is instrumented until the
worker answers; then ``callgrind_control -i on`` turns instrumentation on in the worker only.
The client runs outside valgrind and checks every reply.

Each round of a route, on a fresh keep-alive connection: ``--warmup`` requests; the counted
window (``callgrind_control -z``, ``--requests`` requests one after the other,
``callgrind_control -d``); then a paced window (``--paced`` requests, the client waiting 10 ms
after each). A window's instructions are every instruction the worker ran in it: parsing,
phases, handler, response, the upstream round trip, the hub, the status counters, and also work
paid by the second rather than by the request: the status flush timer (every 0.5 s), the
deadline watchdog (every 0.1 s), the loop's timers. Under callgrind a request takes about 1 ms
instead of 20-50 µs, so that work adds about 1 % to total/N, more when the machine is busy
(2 % in a round that ran at half speed). The two windows of a round separate the two:
each window's Ir is requests × (Ir per request) + seconds × (Ir per second), solved for both.
The reported figure is that Ir per request, the median of ``--rounds`` (3) rounds, the routes
taking turns; it agrees within about 0.5 % from round to round and run to run whatever the
machine's load. Total/N of the counted window is reported beside it. The server runs with
``PYTHONHASHSEED=0``.

Usage: python bench/instructions.py [--requests 5000] [--routes hello,incr,proxy,limit,tls]
[--rounds 3] [--warmup 1000] [--paced 200] [--json] [--output FILE] [--compare FILE_OR_JSON]
[--tolerance 3] [--disable NAME[,NAME...]]

``--disable`` turns C entry points off in the measured server, so their pure-Python twins run:
``speedups`` (all of edgeworker/_speedups.c, ``EDGEWORKER_NO_ACCEL=1``), ``shm`` (all of
shm/_accel.c, ``SHM_NO_ACCEL=1``), or single entry points by name (``bench/accel_off/``, a
``sitecustomize`` put on the server's ``PYTHONPATH``, turns each off where its module binds it;
an entry point that needs another one goes off with it).

Output: a table, then one JSON line (``--json``: the JSON line alone). ``--compare`` takes an
earlier JSON line (a file whose last JSON line is used, or the JSON text itself), prints the
change of each route in % and exits 1 if a route grew by more than ``--tolerance`` % (3).
Exit status: 0 after a run (and a comparison within the tolerance), 1 when a comparison exceeds
it, 2 when the harness cannot run (valgrind or nginx missing, a route answering wrongly).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HarnessError,
    ProcessRegistry,
    Server,
    Table,
    format_table,
    free_port,
    git_commit,
    http_get,
    logger,
    servers_python,
    tool_version,
    wait_for_port,
    wait_for_workers,
)
from http_bench import (  # noqa: E402
    CONFIGS,
    EXPECTED_BODY,
    HANDLERS,
    HOST,
    REPO,
    _venv_python,
    render_edgeworker_config,
)
from proxy_bench import SMALL_BODY, start_backend  # noqa: E402
from tls_bench import make_certificate  # noqa: E402

ACCEL_OFF = Path(__file__).resolve().parent / "accel_off"
_spec = importlib.util.spec_from_file_location("accel_off", ACCEL_OFF / "sitecustomize.py")
accel_off = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accel_off)
ENTRY_POINTS, closure = accel_off.ENTRY_POINTS, accel_off.closure
# --disable names that turn a whole C module off, and the variable that does it
WHOLE_MODULES = {"speedups": "EDGEWORKER_NO_ACCEL", "shm": "SHM_NO_ACCEL"}

DEFAULT_TOLERANCE = 3.0
CONTROL_TIMEOUT = 60.0  # seconds for one callgrind_control command
PACE = 0.01  # seconds the client waits after each request of a paced window
REPLY_TIMEOUT = 30.0  # seconds for one reply (a request under callgrind takes a few ms)


@dataclass(frozen=True)
class Route:
    """A measured route: its name in the report, its path and the body it must answer."""

    name: str
    path: str
    body: bytes
    tls: bool = False  # over TLS (the TLS listener of the same server)


ROUTES = {
    r.name: r
    for r in (
        Route("hello", "/hello", EXPECTED_BODY),
        Route("incr", "/incr", EXPECTED_BODY),
        Route("proxy", "/small.txt", SMALL_BODY),
        Route("limit", "/limit", EXPECTED_BODY),
        Route("tls", "/hello", EXPECTED_BODY, tls=True),
    )
}

# added to bench/configs/edgeworker.toml (see render_config)
UPSTREAM = """
[upstream.backend]
servers = ["{host}:{port}"]
keepalive = 32

"""
PROXY_LOCATION = """
  [[server.location]]
  match = "= /small.txt"
  proxy_pass = "http://backend"
"""
# a shared dict of its own for the limit's counters, and a rate no run comes near
LIMIT_DICT = 'limits = "1m"\n'
LIMIT_LOCATION = """
  [[server.location]]
  match = "= /limit"
  content = "bench_app:hello"
  limit = { key = "$binary_remote_addr", rate = "1000000000r/h", store = "shm:limits" }
"""
# a second server: the hello handler over TLS (a certificate made at start-up)
TLS_SERVER = """
[[server]]
listen = ["{host}:{port} ssl"]
ssl_certificate = "{cert}"
ssl_certificate_key = "{key}"

  [[server.location]]
  match = "= /hello"
  content = "bench_app:hello"
"""


log = logger("instructions")


def render_config(backend_port: int, port: int, tls: tuple[int, Path, Path]) -> str:
    """The HTTP bench's edgeworker config with one worker on ``port``, the proxied
    ``/small.txt`` location, the ``/limit`` location and its shared dict, a TLS server (``tls``:
    its port, certificate and key) with the hello location, and no request limit on a
    keep-alive connection (the default closes it after 1,000 requests, which would put a new
    connection inside a window)."""
    text = render_edgeworker_config((CONFIGS / "edgeworker.toml").read_text(), port, 1)
    text, n_http = re.subn(
        r"^\[http\]$", "[http]\nkeepalive_requests = 100000000", text, flags=re.M
    )
    text, n_shared = re.subn(
        r"^\[shared_dict\]\n", "[shared_dict]\n" + LIMIT_DICT, text, flags=re.M
    )
    first_server = text.find("[[server]]")
    if n_http != 1 or n_shared != 1 or first_server < 0:
        raise ValueError(
            "bench/configs/edgeworker.toml needs one [http], one [shared_dict] and a [[server]] "
            "table"
        )
    upstream = UPSTREAM.format(host=HOST, port=backend_port)
    tls_server = TLS_SERVER.format(host=HOST, port=tls[0], cert=tls[1], key=tls[2])
    return (
        text[:first_server]
        + upstream
        + text[first_server:]
        + PROXY_LOCATION
        + LIMIT_LOCATION
        + tls_server
    )


class Client:
    """One keep-alive HTTP/1.1 connection that sends wrk's request and checks every reply;
    over TLS when given the certificate to trust (``cafile``)."""

    def __init__(self, port: int, cafile: Path | None = None) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=REPLY_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if cafile is not None:
            ctx = ssl.create_default_context(cafile=str(cafile))
            self.sock = ctx.wrap_socket(self.sock, server_hostname=HOST)
        self.host = f"{HOST}:{port}"
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def run(self, route: Route, count: int) -> None:
        """Send ``count`` requests for ``route``, one after the other; raise RuntimeError on a
        reply that is not ``200`` with the route's body."""
        request = f"GET {route.path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
        for _ in range(count):
            self.sock.sendall(request)
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                self._fill()
            head = self.buf[:end].decode("latin-1")
            self.buf = self.buf[end + 4 :]
            status = head.split(" ", 2)[1] if " " in head else ""
            found = re.search(r"^content-length:\s*(\d+)\s*$", head, re.I | re.M)
            if status != "200" or found is None:
                raise RuntimeError(f"GET {route.path}: unexpected reply head {head[:300]!r}")
            length = int(found.group(1))
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
            if body != route.body:
                raise RuntimeError(f"GET {route.path}: unexpected body {body[:200]!r}")


class Callgrind:
    """``callgrind_control`` on one process, and the dumps it writes into ``out_dir``."""

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir
        self.control = shutil.which("callgrind_control") or "callgrind_control"

    def command(self, *args: str) -> None:
        """Run ``callgrind_control ARGS PID``; raise RuntimeError if it fails."""
        done = subprocess.run(
            [self.control, *args, str(self.pid)],
            capture_output=True,
            text=True,
            timeout=CONTROL_TIMEOUT,
        )
        if done.returncode != 0 or "Error" in done.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(args)}: {done.stdout}{done.stderr}")

    def _dumps(self) -> set[Path]:
        return set(self.out_dir.glob(f"callgrind.out.{self.pid}.*"))

    def dump(self) -> int:
        """Dump the counts since the last zero and return their total ``Ir``."""
        before = self._dumps()
        self.command("-d")
        deadline = time.monotonic() + CONTROL_TIMEOUT
        while not (new := self._dumps() - before):
            if time.monotonic() > deadline:
                raise TimeoutError("callgrind wrote no dump")
            time.sleep(0.05)
        path = new.pop()
        while True:  # the file is complete once its summary line is written
            found = re.search(r"^summary:\s*(\d+)", path.read_text(errors="replace"), re.M)
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if found is None:
            raise RuntimeError(f"no summary in {path}")
        path.unlink()
        return int(found.group(1))


def read_counter(port: int) -> int:
    """The value ``/count`` reports for our address."""
    reply = http_get(HOST, port, "/count", timeout=REPLY_TIMEOUT)
    if reply.status != 200:
        raise RuntimeError(f"GET /count answered {reply.status}")
    return int(reply.body.strip() or b"0")


@dataclass
class Window:
    """The worker's instructions over ``requests`` requests and the seconds from zero to dump."""

    requests: int
    ir: int
    seconds: float


@dataclass
class Round:
    """One round of a route: the counted window and the paced window right after it."""

    burst: Window
    paced: Window

    @property
    def raw(self) -> float:
        """Total Ir of the counted window ÷ its requests."""
        return self.burst.ir / self.burst.requests

    def solve(self) -> tuple[float, float]:
        """(Ir per request, Ir per second): the two figures that make each window's Ir equal to
        its requests × the first + its seconds × the second."""
        b, p = self.burst, self.paced
        det = b.requests * p.seconds - p.requests * b.seconds
        if det <= 0:
            raise RuntimeError("the paced window took less time per request than the counted one")
        per_request = (b.ir * p.seconds - p.ir * b.seconds) / det
        per_second = (b.requests * p.ir - p.requests * b.ir) / det
        return per_request, per_second


def measure_window(
    cg: Callgrind, client: Client, route: Route, requests: int, pause: float = 0.0
) -> Window:
    """Zero, ``requests`` requests (``pause`` seconds after each), dump."""
    start = time.monotonic()
    cg.command("-z")
    if pause:
        for _ in range(requests):
            client.run(route, 1)
            time.sleep(pause)
    else:
        client.run(route, requests)
    ir = cg.dump()
    return Window(requests, ir, time.monotonic() - start)


def measure_round(port: Any, cg: Callgrind, route: Route, args: argparse.Namespace) -> Round:
    """On a fresh connection (``port(route)``: its port and certificate): the warm-up, the
    counted window, then the paced window."""
    client = Client(*port(route))
    try:
        client.run(route, args.warmup)
        burst = measure_window(cg, client, route, args.requests)
        paced = measure_window(cg, client, route, args.paced, PACE)
    finally:
        client.close()
    return Round(burst, paced)


def disable_env(names: list[str]) -> dict[str, str]:
    """The server's environment variables that turn the ``--disable`` entry points off."""
    env = {WHOLE_MODULES[n]: "1" for n in names if n in WHOLE_MODULES}
    single = [n for n in names if n not in WHOLE_MODULES]
    if single:
        env["BENCH_ACCEL_OFF"] = ",".join(single)
    return env


def start_edgeworker(
    reg: ProcessRegistry,
    tmp: Path,
    port: int,
    backend_port: int,
    disable: list[str],
    tls: tuple[int, Path, Path],
) -> Server:
    """edgeworker under callgrind (instrumentation off until turned on), in ``tmp``, with the
    ``disable`` entry points off and a TLS listener (``tls``: port, certificate, key)."""
    (tmp / "configs").mkdir()
    shutil.copytree(HANDLERS, tmp / "handlers")
    conf = tmp / "configs" / "edgeworker.toml"
    conf.write_text(render_config(backend_port, port, tls))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONHASHSEED="0")
    env.update(disable_env(disable))
    hook = [str(ACCEL_OFF)] if "BENCH_ACCEL_OFF" in env else []
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*hook, str(REPO), env.get("PYTHONPATH", "")]))
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        "--instr-atstart=no",
        f"--callgrind-out-file={tmp}/callgrind.out.%p",
        _venv_python(),
        "-m",
        "edgeworker",
        "run",
        "-c",
        str(conf),
    ]
    return reg.start("edgeworker", argv, cwd=tmp, env=env, log_path=tmp / "output.log")


def run(args: argparse.Namespace, routes: list[Route]) -> dict[str, list[Round]]:
    """Start the backend and edgeworker, measure every route; the Ir of each window by route."""
    totals: dict[str, list[Round]] = {r.name: [] for r in routes}
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp_s, ProcessRegistry() as reg:
        tmp = Path(tmp_s)
        backend_port = start_backend(reg, tmp)
        port = free_port()
        cert, key = make_certificate(tmp, "ecdsa")
        tls = (free_port(), cert, key)

        def port_of(route: Route) -> tuple[int, Path | None]:
            return (tls[0], cert) if route.tls else (port, None)

        log("starting edgeworker (1 worker) under callgrind")
        server = start_edgeworker(reg, tmp, port, backend_port, args.disable_list, tls)
        try:
            wait_for_port(HOST, port, 120, server.proc)
            (worker,) = wait_for_workers(server.pid, 1, 60)[:1]
            for route in routes:  # every route answers before anything is counted
                client = Client(*port_of(route))
                client.run(route, 1)
                client.close()
            cg = Callgrind(worker, tmp)
            cg.command("-i", "on")
            counted = read_counter(port) if "incr" in totals else 0
            for i in range(args.rounds):
                for route in routes:
                    one = measure_round(port_of, cg, route, args)
                    totals[route.name].append(one)
                    per_request, per_second = one.solve()
                    log(
                        f"round {i + 1}/{args.rounds} {route.name}: {per_request:,.1f} Ir per "
                        f"request + {per_second / 1000:,.0f}k Ir/s (total/N {one.raw:,.1f} in "
                        f"{one.burst.seconds:.1f} s)"
                    )
            if "incr" in totals:
                grew = read_counter(port) - counted
                need = args.rounds * (args.warmup + args.requests + args.paced)
                if grew < need:
                    raise RuntimeError(f"/incr counted {grew} of {need} requests")
        except BaseException:
            tail = "\n".join(server.output_tail(30).splitlines())
            log(f"edgeworker output:\n{tail}")
            raise
    return totals


def route_result(route: Route, rounds: list[Round]) -> dict[str, object]:
    """The JSON of one route: the median figures, and each round's."""
    solved = [r.solve() for r in rounds]
    per = [s[0] for s in solved]
    raw = [r.raw for r in rounds]
    return {
        "path": route.path,
        "per_request": round(statistics.median(per), 1),
        "rounds": [round(v, 1) for v in per],
        "ir_per_second": round(statistics.median(s[1] for s in solved)),
        "raw_per_request": round(statistics.median(raw), 1),
        "raw_rounds": [round(v, 1) for v in raw],
        "seconds": [round(r.burst.seconds, 2) for r in rounds],
    }


def routes_table(result: dict) -> Table:
    """One line per route: Ir per request, each round, their spread, Ir per second, total/N."""
    rows = []
    for name, r in result["routes"].items():
        spread = (max(r["rounds"]) - min(r["rounds"])) / r["per_request"] * 100
        rows.append(
            [
                name,
                r["path"],
                f"{r['per_request']:,.0f}",
                " / ".join(f"{v:,.0f}" for v in r["rounds"]),
                f"{spread:.2f} %",
                f"{r['ir_per_second'] / 1000:,.0f}k",
                f"{r['raw_per_request']:,.0f}",
                " / ".join(f"{v:.1f}" for v in r["seconds"]),
            ]
        )
    return Table(
        f"Instructions per request, median of {result['rounds']} rounds of "
        f"{result['requests']:,} requests (total/N: the counted window's instructions over its "
        "requests, the per-second work included)",
        ["route", "path", "Ir/request", "rounds", "spread", "Ir/s", "total/N", "seconds"],
        rows,
        right=(2, 4, 5, 6),
    )


def render_table(result: dict) -> str:
    """The report table: one line per route."""
    t = routes_table(result)
    return format_table(t.headers, t.rows, t.right)


def load_previous(source: str) -> dict:
    """An earlier result: the JSON text itself, or the last JSON line of a file."""
    text = source.strip()
    if not text.startswith("{"):
        lines = [ln for ln in Path(source).read_text().splitlines() if ln.strip().startswith("{")]
        if not lines:
            raise ValueError(f"no JSON line in {source}")
        text = lines[-1]
    return json.loads(text)


def compare(result: dict, previous: dict, tolerance: float) -> tuple[str, bool]:
    """A table of each route's change against ``previous``, and whether all are within
    ``tolerance`` % (a route missing on either side is shown and not judged)."""
    rows = []
    within = True
    for name in sorted(set(result["routes"]) | set(previous.get("routes", {})), key=_order):
        new = result["routes"].get(name, {}).get("per_request")
        old = previous.get("routes", {}).get(name, {}).get("per_request")
        if new is None or old is None:
            rows.append([name, _k(old), _k(new), "-", "-", "n/a"])
            continue
        change = (new - old) / old * 100
        ok = change <= tolerance
        within &= ok
        raw_new = result["routes"][name].get("raw_per_request")
        raw_old = previous["routes"][name].get("raw_per_request")
        raw = f"{(raw_new - raw_old) / raw_old * 100:+.2f} %" if raw_new and raw_old else "-"
        verdict = "PASS" if ok else "FAIL"
        rows.append([name, _k(old), _k(new), f"{change:+.2f} %", raw, verdict])
    title = (
        f"against {previous.get('commit', '?')} ({previous.get('date', '?')}), "
        f"limit +{tolerance:g} %:"
    )
    settings = ("requests", "warmup")
    changed = [
        f"{k} {previous.get(k)} then, {result[k]} now"
        for k in settings
        if previous.get(k) != result[k]
    ]
    if changed:
        title += "\nnote: measured differently: " + ", ".join(changed)
    headers = ["route", "before", "now", "change", "total/N change", "verdict"]
    table = format_table(headers, rows, right=(1, 2, 3, 4))
    return f"{title}\n{table}", within


def _order(name: str) -> int:
    return list(ROUTES).index(name) if name in ROUTES else len(ROUTES)


def _k(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.2f}k"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--requests", type=int, default=5000, help="requests counted per route and round (5000)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=1000,
        help="requests before each round, on the same connection (1000)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="windows per route, the routes taking turns; the median is reported (3)",
    )
    p.add_argument(
        "--paced",
        type=int,
        default=200,
        help="requests of the paced window after each counted one (200)",
    )
    p.add_argument(
        "--routes",
        default=",".join(ROUTES),
        help=f"comma-separated routes to measure ({','.join(ROUTES)})",
    )
    p.add_argument("--json", action="store_true", help="print the JSON line alone")
    p.add_argument("--output", metavar="FILE", help="also write the JSON line to FILE")
    p.add_argument(
        "--compare",
        metavar="FILE_OR_JSON",
        help="an earlier JSON line (or a file holding it): print the change in %% "
        "and exit 1 if a route grew by more than --tolerance %%",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="allowed growth in %% for --compare (3)",
    )
    p.add_argument(
        "--disable",
        metavar="NAME[,NAME...]",
        default="",
        help="C entry points to turn off in the server: speedups, shm (whole modules) or "
        f"{','.join(ENTRY_POINTS)}",
    )
    args = p.parse_args(argv)
    off = [n.strip() for n in args.disable.split(",") if n.strip()]
    bad = [n for n in off if n not in ENTRY_POINTS and n not in WHOLE_MODULES]
    if bad:
        p.error(f"--disable: unknown {bad}")
    whole = [n for n in off if n in WHOLE_MODULES]
    args.disable_list = whole + closure([n for n in off if n not in WHOLE_MODULES])
    names = [n.strip() for n in args.routes.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROUTES]
    if unknown or not names:
        p.error(f"--routes: unknown {unknown}; choose from {','.join(ROUTES)}")
    args.route_list = [ROUTES[n] for n in dict.fromkeys(names)]
    if args.requests < 1 or args.warmup < 0 or args.rounds < 1 or args.paced < 20:
        p.error("--requests and --rounds >= 1, --warmup >= 0, --paced >= 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = None
    if args.compare:
        try:
            previous = load_previous(args.compare)
        except (OSError, ValueError) as exc:
            print(f"--compare: {exc}", file=sys.stderr)
            return 2
    for tool in ("valgrind", "callgrind_control", "nginx"):
        if not shutil.which(tool):
            print(
                f"{tool} not found (Debian: apt-get install valgrind nginx-light)", file=sys.stderr
            )
            return 2
    python = sys.executable
    if Path(python).is_relative_to(Path.cwd()):
        python = os.path.relpath(python)
    command = shlex.join([python, sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    try:
        totals = run(args, args.route_list)
    except (RuntimeError, TimeoutError, OSError, ValueError, HarnessError) as exc:
        print(f"instructions: {exc}", file=sys.stderr)
        return 2
    result = {
        "bench": "instructions",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": command,
        "python": servers_python(_venv_python()),
        "valgrind": tool_version(["valgrind", "--version"]),
        "requests": args.requests,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "paced": args.paced,
        "disabled": args.disable_list,
        "routes": {name: route_result(ROUTES[name], rounds) for name, rounds in totals.items()},
    }
    line = json.dumps(result, separators=(",", ":"))
    if args.output:
        Path(args.output).write_text(line + "\n")
    if not args.json:
        print(
            f"instructions per request (callgrind Ir, 1 worker, {args.requests} keep-alive "
            f"requests per window after {args.warmup} of warm-up, median of {args.rounds} "
            f"rounds; {time.monotonic() - started:.0f} s)"
        )
        print(f"commit {result['commit']}, {result['python']}, {result['valgrind']}")
        if args.disable_list:
            print(f"C entry points off: {', '.join(args.disable_list)}")
        print(render_table(result))
    print(line)
    if previous is not None:
        report, within = compare(result, previous, args.tolerance)
        print(report, file=sys.stdout if not args.json else sys.stderr)
        return 0 if within else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
