#!/usr/bin/env python3
"""TLS benchmark: edgeworker's TLS termination against nginx's, same certificate, same run.

Both servers serve ``/hello`` (``hello\\n``: nginx ``content_by_lua_block { ngx.say("hello") }``,
edgeworker ``bench_app:hello``; both return a fresh ``X-Request-Id``, edgeworker by default,
nginx with ``add_header X-Request-Id $request_id``) with 2 workers each, access logs off, over
TLS 1.3 on a free 127.0.0.1 port, with the certificate the bench makes at start-up with
``openssl`` (ECDSA P-256 by default, ``--key rsa`` for RSA 2048; CN=localhost, SAN localhost
and 127.0.0.1). nginx
listens with ``ssl``, ``ssl_protocols TLSv1.3``, ``ssl_session_tickets on``; edgeworker with
``listen = ["127.0.0.1:PORT ssl"]``, ``ssl_certificate`` and ``ssl_certificate_key``.

Cases, each server in turn (never two under load at once), ``--rounds`` times (5), every other
round the servers and the cases in the reverse order:

    keepalive  wrk -t2 -c50 over https, keep-alive: requests/s
    close      the same with -H "Connection: close": a new TLS connection per request (checked
               against the kernel's count of accepted connections); wrk resumes its TLS session
               on each reconnect (PSK), so these are resumed handshakes: connections/s
    full       `openssl s_time -new -www /hello` from --full-clients processes (4): a full
               handshake (no session offered), one request, close: connections/s
    flood      one `openssl s_time -new` client opening connections (full handshakes, no
               request) as fast as it can while wrk measures keep-alive requests: their p99

Goals (bench/common.py's Goal: the ratio edgeworker ÷ nginx taken within each round; PASS when
every kept round meets it, FAIL when none does, inconclusive when they straddle):

    keepalive requests/s                   >= 0.40
    new connections/s (close, full)        >= 0.50

The flood's p99 ratio is shown for context (no goal). A round whose two measurements of a case
ran beside other load (other processes > 20 % of the machine; the flooding client counts as the
bench's own) is marked and left out of that goal. One default run (``--duration 6 --warmup 1``,
5 rounds) takes about 5 minutes.

Usage: python bench/tls_bench.py [--duration 6] [--rounds 5] [--no-edgeworker] [--json FILE]
[--check]. See bench/README.md.

Exit status: 0 after a run (1 with ``--check`` unless every goal is PASS), 2 when the harness
cannot run (wrk, openssl or nginx missing, a server that does not start or answers wrongly),
130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DISTURBED_PCT,
    CpuMeter,
    Goal,
    HarnessError,
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
    logger,
    parse_wrk_output,
    per_round_ratio,
    run_harness,
    servers_python,
    tool_version,
    wait_for_port,
    wait_for_workers,
)
from http_bench import edgeworker_command, lua_module_paths  # noqa: E402

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
HANDLERS = BENCH_DIR / "handlers"
VENV_BIN = REPO / ".venv" / "bin"
EXPECTED_BODY = b"hello\n"
TARGETS = ("nginx", "edgeworker")
CASES = ("keepalive", "close", "full", "flood")

#: (name, case, target): edgeworker ÷ nginx of the case's rate within each round >= target
GOALS = (
    ("keepalive: requests/s, edgeworker ÷ nginx", "keepalive", 0.40),
    ("close: new connections/s (resumed), edgeworker ÷ nginx", "close", 0.50),
    ("full: new connections/s (full handshakes), edgeworker ÷ nginx", "full", 0.50),
)

NGINX_CONF = """
{modules}
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
    server {{
        listen {host}:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_tickets on;
        keepalive_requests 1000000;
        default_type text/plain;
        add_header X-Request-Id $request_id;  # (edgeworker's default: the same work)
        location = /hello {{
            content_by_lua_block {{ ngx.say("hello") }}
        }}
    }}
}}
"""

EDGEWORKER_TOML = """
[main]
workers = {workers}
pid_file = "{prefix}/edgeworker.pid"
error_log = "stderr"
log_level = "warn"
python_path = ["{prefix}/handlers"]
graceful_timeout = "5s"

[http]
access_log = "off"
keepalive_requests = 1000000

[[server]]
listen = ["{host}:{port} ssl"]
ssl_certificate = "{cert}"
ssl_certificate_key = "{key}"

  [[server.location]]
  match = "= /hello"
  content = "bench_app:hello"
"""


log = logger("tls_bench")


# ---------------------------------------------------------------------------------------------
# certificate and servers


def find_openssl() -> str:
    path = shutil.which("openssl")
    if not path:
        raise HarnessError("openssl not found on PATH (Debian: apt-get install openssl)")
    return path


def make_certificate(tmp: Path, key_type: str) -> tuple[Path, Path]:
    """A self-signed server certificate for localhost / 127.0.0.1 in ``tmp``: (cert, key)."""
    cert, key = tmp / "server.crt", tmp / "server.key"
    newkey = (
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        if key_type == "ecdsa"
        else ["-newkey", "rsa:2048"]
    )
    argv = [
        find_openssl(),
        "req",
        "-x509",
        *newkey,
        "-nodes",
        "-sha256",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError("openssl req did not finish within 60s") from exc
    if done.returncode != 0:
        raise HarnessError(f"openssl req failed: {done.stderr.strip()}")
    return cert, key


def start_nginx(
    reg: ProcessRegistry,
    tmp: Path,
    port: int,
    args: argparse.Namespace,
    cert: Path,
    key: Path,
    template: str = NGINX_CONF,
) -> Server:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise HarnessError("nginx not found (Debian: apt-get install nginx-light)")
    try:
        modules = "\n".join(f"load_module {p};" for p in lua_module_paths())
    except FileNotFoundError as exc:
        raise HarnessError(str(exc)) from exc
    conf = tmp / "nginx.conf"
    conf.write_text(
        template.format(
            modules=modules,
            workers=args.workers,
            prefix=tmp,
            host=HOST,
            port=port,
            cert=cert,
            key=key,
        )
    )
    argv = [nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"]
    return reg.start("nginx", argv, cwd=tmp, log_path=tmp / "output.log")


def start_edgeworker(
    reg: ProcessRegistry,
    tmp: Path,
    port: int,
    args: argparse.Namespace,
    cert: Path,
    key: Path,
    template: str = EDGEWORKER_TOML,
) -> Server:
    shutil.copytree(HANDLERS, tmp / "handlers")
    conf = tmp / "edgeworker.toml"
    conf.write_text(
        template.format(workers=args.workers, prefix=tmp, host=HOST, port=port, cert=cert, key=key)
    )
    cmd, env = edgeworker_command()
    if args.edgeworker:
        cmd = args.edgeworker.split()
    argv = [*cmd, "run", "-c", str(conf)]
    return reg.start("edgeworker", argv, cwd=tmp, env=env, log_path=tmp / "output.log")


@dataclass
class TlsFacts:
    """What a client sees of a server's TLS: checked before any load."""

    version: str = ""
    cipher: str = ""
    ticket: bool = False  # the server sent a session ticket
    resumed: bool = False  # a second connection offering that session resumed it

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def client_context(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass
class Reply:
    """A reply read by :func:`https_hello`, with what the connection negotiated."""

    data: bytes
    version: str
    cipher: str
    session: ssl.SSLSession | None
    reused: bool


def https_hello(
    ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None = None, timeout: float = 5.0
) -> Reply:
    """GET /hello (HTTP/1.0: no chunks) over a new TLS connection, hostname localhost checked
    against the certificate, ``session`` offered for resumption; the whole reply."""
    raw = socket.create_connection((HOST, port), timeout=timeout)
    tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    try:
        tls.sendall(b"GET /hello HTTP/1.0\r\nHost: localhost\r\n\r\n")
        chunks = []
        while True:
            data = tls.recv(65536)
            if not data:
                break
            chunks.append(data)
        cipher = tls.cipher()
        return Reply(
            b"".join(chunks),
            tls.version() or "",
            cipher[0] if cipher else "",
            tls.session,
            tls.session_reused,
        )
    finally:
        tls.close()


def check_hello(reply: bytes) -> None:
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not re.match(rb"HTTP/1\.[01] 200 ", status) or body != EXPECTED_BODY:
        raise RuntimeError(f"GET /hello answered {reply[:300]!r}, expected 200 'hello\\n'")


def tls_facts(ctx: ssl.SSLContext, port: int) -> TlsFacts:
    """One connection to read the protocol, cipher and ticket, a second offering the session."""
    first = https_hello(ctx, port)
    check_hello(first.data)
    facts = TlsFacts(first.version, first.cipher)
    facts.ticket = bool(first.session is not None and first.session.has_ticket)
    if facts.ticket:
        second = https_hello(ctx, port, session=first.session)
        check_hello(second.data)
        facts.resumed = second.reused
    return facts


def wait_until_serving(server: Server, ctx: ssl.SSLContext, port: int, timeout: float) -> None:
    """Wait for the port, then for an https GET /hello to answer 200 hello (bounded)."""
    deadline = time.monotonic() + timeout
    wait_for_port(HOST, port, timeout, server.proc)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited with status {server.proc.returncode}")
        try:
            check_hello(https_hello(ctx, port).data)
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"https GET /hello did not answer 'hello' within {timeout:g}s: {last}")


# ---------------------------------------------------------------------------------------------
# load


def passive_opens() -> int:
    """TCP connections this network namespace accepted so far (``Tcp: PassiveOpens``)."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Tcp:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("PassiveOpens")])


def wrk(url: str, args: argparse.Namespace, duration: float, close: bool = False) -> WrkResult:
    """``wrk --latency`` over https, killed ``duration + 30`` s after it starts."""
    argv = [
        find_wrk(),
        "--latency",
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "5s",
    ]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"wrk did not finish within {duration + 30:g}s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout}")
    try:
        return parse_wrk_output(done.stdout, url)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc


_STIME_RE = re.compile(r"^(\d+) connections in [\d.]+s;", re.M)


def s_time_argv(port: int, seconds: float, request: bool) -> list[str]:
    argv = [
        find_openssl(),
        "s_time",
        "-connect",
        f"{HOST}:{port}",
        "-new",
        "-time",
        str(max(1, round(seconds))),
    ]
    return argv + (["-www", "/hello"] if request else [])


def s_time_count(proc: subprocess.Popen, timeout: float) -> int:
    """Wait (bounded) for an ``openssl s_time`` and return its connection count."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"openssl s_time did not finish within {timeout:g}s") from None
    m = _STIME_RE.search(out)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"openssl s_time exited {proc.returncode}: {(err or out)[-300:]}")
    return int(m.group(1))


def spawn_s_time(port: int, seconds: float, request: bool) -> subprocess.Popen:
    return subprocess.Popen(
        s_time_argv(port, seconds, request),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Round:
    """One measured run of a case on a server."""

    rate: float | None = None  # requests/s (keepalive, flood) or connections/s (close, full)
    wrk: WrkResult | None = None
    opened: int | None = None  # connections the kernel accepted during the run
    flood_rate: float | None = None  # flood: the flooding client's connections/s
    foreign_cpu_pct: float | None = None
    error: str = ""

    @property
    def disturbed(self) -> bool:
        return disturbed_rounds([[self.foreign_cpu_pct]])[0]

    def to_json(self) -> dict[str, object]:
        return {
            "ok": not self.error,
            "error": self.error,
            "rate": self.rate,
            "wrk": self.wrk.to_json() if self.wrk else None,
            "connections_accepted": self.opened,
            "flood_connections_per_s": self.flood_rate,
            "foreign_cpu_pct": self.foreign_cpu_pct,
        }


def measure(case: str, server: Server, port: int, args: argparse.Namespace) -> Round:
    """One round of ``case``. Never raises except KeyboardInterrupt: errors land in the round."""
    rnd = Round()
    url = f"https://{HOST}:{port}/hello"
    pids = [server.pid, *child_pids(server.pid)]
    meter = CpuMeter()
    flood: subprocess.Popen | None = None
    try:
        if case in ("keepalive", "close") and args.warmup > 0:
            wrk(url, args, args.warmup, close=case == "close")
        if case == "flood":  # the flood starts first and outlasts the measured run
            flood = spawn_s_time(port, args.warmup + args.duration + 2, request=False)
            time.sleep(max(args.warmup, 1.0))
        log(f"  {server.name} {case}: {args.duration:g}s")
        if flood is not None:  # the flooding client is part of the load: its CPU is ours
            pids.append(flood.pid)
        opened0 = passive_opens()
        meter.start(pids)
        if case == "full":
            t0 = time.monotonic()
            clients = [spawn_s_time(port, args.duration, True) for _ in range(args.full_clients)]
            counts = [s_time_count(p, args.duration + 60) for p in clients]
            rnd.rate = sum(counts) / (time.monotonic() - t0)
        else:
            rnd.wrk = wrk(url, args, args.duration, close=case == "close")
            rnd.rate = rnd.wrk.rps
        rnd.foreign_cpu_pct = meter.stop(pids)
        rnd.opened = passive_opens() - opened0
        if flood is not None:
            t_flood = args.warmup + args.duration + 2
            rnd.flood_rate = s_time_count(flood, t_flood + 60) / t_flood
            flood = None
        if not server.alive():
            raise RuntimeError(f"server exited with status {server.proc.returncode}")
        if rnd.wrk is not None:
            if rnd.wrk.non_2xx_3xx:
                rnd.error = f"{rnd.wrk.non_2xx_3xx} non-2xx/3xx responses"
            elif rnd.wrk.requests == 0:
                rnd.error = "no request completed"
            elif case == "close" and rnd.opened < 0.9 * rnd.wrk.requests:
                rnd.error = (
                    f"{rnd.opened} connections accepted for {rnd.wrk.requests} requests: "
                    "not one connection per request"
                )
    except Exception as exc:  # noqa: BLE001 - reported per case, the bench goes on
        rnd.error = f"{type(exc).__name__}: {exc}"
        rnd.rate = None
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.communicate()
    return rnd


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class Target:
    name: str
    status: str = "skipped"  # ok, failed, skipped
    error: str = ""
    command: list[str] = field(default_factory=list)
    tls: TlsFacts | None = None
    cases: dict[str, list[Round]] = field(default_factory=dict)

    def rates(self, case: str) -> list[float | None]:
        """The case's figure of each round, None where it failed; [] when the server was
        skipped or failed (the goals then read every round as not measured)."""
        if self.status != "ok":
            return []
        return [r.rate if not r.error else None for r in self.cases.get(case, [])]

    def p99s(self, case: str) -> list[float | None]:
        if self.status != "ok":
            return []
        return [r.wrk.p99_ms if r.wrk and not r.error else None for r in self.cases.get(case, [])]

    def other_cpu(self, case: str) -> list[float | None]:
        return [r.foreign_cpu_pct for r in self.cases.get(case, [])]

    def median_round(self, case: str) -> Round | None:
        """The round of the median figure among those that succeeded and were not disturbed."""
        done = sorted(
            (
                r
                for r in self.cases.get(case, [])
                if r.rate is not None and not r.error and not r.disturbed
            ),
            key=lambda r: r.rate,
        )
        return done[(len(done) - 1) // 2] if done else None

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "error": self.error,
            "command": self.command,
            "tls": self.tls.to_json() if self.tls else None,
            "cases": {c: [r.to_json() for r in rs] for c, rs in self.cases.items()},
        }


def _output(server: Server, tmp: Path) -> str:
    tail = server.output_tail()
    log_file = tmp / "error.log"
    if log_file.exists() and log_file.stat().st_size:
        tail += "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
    return "\n--- server output (tail) ---\n" + tail.strip() if tail.strip() else ""


def run(args: argparse.Namespace, reg: ProcessRegistry, top: Path) -> dict[str, Target]:
    """Make the certificate, start both servers (HarnessError if one does not serve), measure
    every case ``--rounds`` times, the servers in turn, every other round reversed."""
    find_wrk()
    cert, key = make_certificate(top, args.key)
    ctx = client_context(cert)
    targets = {name: Target(name) for name in TARGETS}
    running: list[tuple[Target, Server, int]] = []
    starters = {"nginx": start_nginx, "edgeworker": start_edgeworker}
    for name in TARGETS:
        t = targets[name]
        if name == "edgeworker" and args.no_edgeworker:
            t.error = "skipped by --no-edgeworker"
            continue
        tmp = top / name
        tmp.mkdir()
        os.chmod(top, 0o755)
        port = free_port()
        log(f"{name}: starting on https://{HOST}:{port} in {tmp}")
        try:
            server = starters[name](reg, tmp, port, args, cert, key)
        except OSError as exc:
            raise HarnessError(f"{name} could not be started: {exc}") from exc
        t.command = server.argv
        try:
            wait_until_serving(server, ctx, port, args.startup_timeout)
            wait_for_workers(server.pid, args.workers, args.startup_timeout)
            t.tls = tls_facts(ctx, port)
        except Exception as exc:  # noqa: BLE001 - a server that does not serve stops the bench
            t.status = "failed"
            raise HarnessError(
                f"{name} did not serve https://{HOST}:{port}/hello "
                f"({' '.join(server.argv)}): {type(exc).__name__}: {exc}" + _output(server, tmp)
            ) from exc
        log(
            f"{name}: {t.tls.version} {t.tls.cipher}, ticket {t.tls.ticket}, "
            f"resumed {t.tls.resumed}"
        )
        t.status = "ok"
        running.append((t, server, port))
    for n in range(args.rounds):
        log(f"round {n + 1} of {args.rounds}")
        flip = n % 2 == 1
        for t, server, port in reversed(running) if flip else running:
            for case in reversed(CASES) if flip else CASES:
                t.cases.setdefault(case, []).append(measure(case, server, port, args))
            if not server.alive():
                t.status = "failed"
                t.error = f"server exited with status {server.proc.returncode} during the bench"
    return targets


# ---------------------------------------------------------------------------------------------
# report


def case_disturbed(targets: dict[str, Target], case: str) -> list[bool]:
    """Per round: True when either server's measurement of ``case`` ran beside other load."""
    ew, ng = targets["edgeworker"].other_cpu(case), targets["nginx"].other_cpu(case)
    n = max(len(ew), len(ng))
    return disturbed_rounds(
        [[*(ew[i : i + 1] or [None]), *(ng[i : i + 1] or [None])] for i in range(n)]
    )


def goals(targets: dict[str, Target]) -> list[Goal]:
    """The goals of GOALS, edgeworker ÷ nginx within each round; the flood's p99 for context."""
    ew, ng = targets["edgeworker"], targets["nginx"]
    out = [
        Goal(label, ">=", target, per_round_ratio(ew.rates(case), ng.rates(case)))
        for label, case, target in GOALS
    ]
    out.append(
        Goal(
            "flood: p99 of keep-alive requests, edgeworker ÷ nginx",
            "<=",
            None,
            per_round_ratio(ew.p99s("flood"), ng.p99s("flood")),
            note="under a handshake flood, for context (lower is better)",
        )
    )
    for g, case in zip(out, [*(c for _, c, _ in GOALS), "flood"], strict=True):
        g.disturbed = case_disturbed(targets, case)
    return out


UNITS = {"keepalive": "req/s", "close": "conn/s", "full": "conn/s", "flood": "req/s"}


def _round_cell(r: Round) -> str:
    if r.error or r.rate is None:
        return "-"
    return f"{r.rate:,.0f}" + ("*" if r.disturbed else "")


def _note(case: str, t: Target, m: Round | None) -> str:
    notes = []
    if m is not None and case == "flood" and m.flood_rate is not None:
        notes.append(f"flood {m.flood_rate:,.0f} handshakes/s")
    if m is not None and case == "close" and m.wrk is not None and m.opened is not None:
        notes.append(f"{m.opened / max(1, m.wrk.requests):.2f} connections per request")
    errors = sorted({r.error for r in t.cases.get(case, []) if r.error})
    return "; ".join(notes + errors)


def figures_table(targets: dict[str, Target], args: argparse.Namespace) -> Table:
    """Every server's figures per case: the median of the kept rounds, then each round."""
    rows = []
    for t in targets.values():
        if t.status != "ok":
            rows.append([t.name, "-", t.status.upper(), "", "", "", "", "", t.error])
            continue
        for case in CASES:
            m = t.median_round(case)
            rounds = t.cases.get(case, [])
            rows.append(
                [
                    t.name,
                    case,
                    "-" if m is None else f"{m.rate:,.0f} {UNITS[case]}",
                    f"{m.wrk.p50_ms:.2f}" if m and m.wrk else "-",
                    f"{m.wrk.p99_ms:.2f}" if m and m.wrk else "-",
                    str(m.wrk.errors) if m and m.wrk else "-",
                    " ".join(_round_cell(r) for r in rounds),
                    " ".join(
                        "-" if r.foreign_cpu_pct is None else f"{r.foreign_cpu_pct:.0f}"
                        for r in rounds
                    ),
                    _note(case, t, m),
                ]
            )
    notes = [
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s over https after a "
        f"{args.warmup:g} s warm-up (keepalive, close, flood); full: {args.full_clients} "
        f"`openssl s_time -new -www /hello` clients for {args.duration:g} s; {args.rounds} rounds, "
        "the servers and the cases in the reverse order every other round",
        f"edgeworker runs on {servers_python(_venv_python())}",
    ]
    for t in targets.values():
        if t.tls:
            notes.append(
                f"{t.name}: {t.tls.version} {t.tls.cipher}, session ticket "
                f"{'yes' if t.tls.ticket else 'no'}, resumption {'yes' if t.tls.resumed else 'no'}"
            )
    notes.append(
        "median: the round of the median figure among those not disturbed (p50, p99, errors "
        "are that round's); other CPU %: other processes' share of the machine during each "
        f"round's measurement (the flooding client counts as the bench's); a figure marked * ran "
        f"beside other load (> {DISTURBED_PCT:g} %) and is left out of the median"
    )
    return Table(
        f"TLS 1.3 /hello, {args.key.upper()} certificate, {args.workers} workers per server",
        [
            "server",
            "case",
            "median",
            "p50 ms",
            "p99 ms",
            "errors",
            "each round",
            "other CPU %",
            "note",
        ],
        rows,
        notes=notes,
        right=(2, 3, 4, 5),
    )


def _venv_python() -> str:
    python = VENV_BIN / "python"
    return str(python if python.exists() else sys.executable)


def environment() -> dict[str, str]:
    return {
        "host": platform.node(),
        "cpus": str(os.cpu_count()),
        "python": servers_python(_venv_python()),
        "wrk": tool_version([shutil.which("wrk") or "wrk", "--version"]),
        "nginx": tool_version(["nginx", "-v"]),
        "openssl": tool_version(["openssl", "version"]),
    }


SETTINGS = ("duration", "warmup", "threads", "connections", "workers", "full_clients", "key")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=6.0, help="seconds per measured run (6)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds of wrk cases (1)")
    add_common_args(p)
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    p.add_argument(
        "--full-clients",
        type=int,
        default=4,
        help="openssl s_time processes of the full-handshake case (4)",
    )
    p.add_argument(
        "--key",
        choices=("ecdsa", "rsa"),
        default="ecdsa",
        help="server key: ECDSA P-256 (default) or RSA 2048",
    )
    p.add_argument("--no-edgeworker", action="store_true", help="run the nginx side alone")
    p.add_argument(
        "--edgeworker", default="", help="command to run edgeworker (default: .venv/bin/edgeworker)"
    )
    p.add_argument("--startup-timeout", type=float, default=30.0, help="seconds (30)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks")
    args = p.parse_args(argv)
    if (
        args.duration < 1
        or args.warmup < 0
        or min(args.rounds, args.threads, args.workers, args.full_clients) < 1
    ):
        p.error(
            "--duration >= 1, --warmup >= 0, --rounds, --threads, --workers, --full-clients >= 1"
        )
    if args.connections < args.threads:
        p.error("--connections must be >= --threads")
    if args.full_clients > 16 or args.connections > 1000 or args.duration > 600 or args.rounds > 20:
        p.error(
            "bounded load: --full-clients <= 16, --connections <= 1000, --duration <= 600, "
            "--rounds <= 20"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    targets, status = run_harness(
        "tls_bench",
        lambda reg, top: run(args, reg, top),
        errors=(FileNotFoundError,),
        verbose=args.verbose,
        keep=args.keep,
    )
    if targets is None:
        return status
    return finish(
        "tls",
        args,
        goals(targets),
        [figures_table(targets, args)],
        started,
        extra={
            "settings": {k: getattr(args, k) for k in SETTINGS},
            "environment": environment(),
            "targets": {k: v.to_json() for k, v in targets.items()},
        },
    )


if __name__ == "__main__":
    sys.exit(main())
