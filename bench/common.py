"""Shared helpers for the edgeworker benchmarks.

Everything here uses only the standard library, so a bench can run under any Python 3.11:

- ports: :func:`free_port`, :func:`wait_for_port`, :func:`http_get`;
- processes: :class:`Server` (a child started in its own process group, always stopped) and
  :class:`ProcessRegistry` (stops every registered server on exit, Ctrl-C or error);
- memory: :func:`child_pids`, :func:`rss_kb`, :func:`pss_kb`, :func:`workers_rss`;
- load: :func:`run_wrk` runs ``wrk --latency`` and parses it into a :class:`WrkResult`;
- reporting: :class:`Goal` (a value taken within each round against a target: PASS, FAIL,
  inconclusive), :class:`Table`, :func:`add_common_args` and :func:`finish` (the one ``--check``
  rule, the JSON that bench/report.py turns into bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from edgeworker.testing import child_pids

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# running a bench


class HarnessError(Exception):
    """The bench cannot run (a tool is missing, a server does not start or answers wrongly):
    exit status 2."""


def logger(bench: str) -> Callable[[str], None]:
    """A bench's progress line printer: on stderr, so that stdout holds only the report."""

    def log(msg: str) -> None:
        print(f"[{bench} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def run_harness(
    bench: str,
    run: Callable[[ProcessRegistry, Path], T],
    errors: tuple[type[BaseException], ...] = (),
    verbose: bool = False,
    keep: bool = False,
) -> tuple[T | None, int]:
    """``run(registry, temp_dir)``; its result and 0, or None and the exit status: 130 on
    Ctrl-C, 2 on :class:`HarnessError` (or one of ``errors``, printed as one line, with the
    traceback when ``verbose``). Every server registered is stopped whatever happens; the temp
    dir is removed unless ``keep``."""
    top = Path(tempfile.mkdtemp(prefix=f"{bench}-"))
    log = logger(bench)
    try:
        with ProcessRegistry() as reg:
            try:
                return run(reg, top), 0
            except KeyboardInterrupt:
                log("interrupted: stopping servers")
                reg.stop_all()
                return None, 130
            except (HarnessError, *errors) as exc:
                if verbose:
                    traceback.print_exc()
                print(f"{bench}: {exc}", file=sys.stderr, flush=True)
                reg.stop_all()
                return None, 2
    finally:
        if keep:
            log(f"kept {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# ports


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen | None = None
) -> None:
    """Wait until a TCP connect to ``host:port`` succeeds.

    Raises ``TimeoutError`` after ``timeout`` seconds, or ``RuntimeError`` at once if ``proc``
    is given and exits before the port opens.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with status {proc.returncode} before {host}:{port} opened"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:g}s")
        time.sleep(0.05)


@dataclass
class HttpReply:
    """A small HTTP response read by :func:`http_get`."""

    status: int
    headers: dict[str, str]
    body: bytes


def http_get(host: str, port: int, path: str, timeout: float = 5.0) -> HttpReply:
    """GET ``path`` from ``host:port`` over a fresh connection and return the whole reply.

    Raises ``OSError`` (incl. timeouts) or ``http.client.HTTPException`` on failure.
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"{host}:{port}"})
        resp = conn.getresponse()
        body = resp.read()
        return HttpReply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# processes


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Server:
    """A server started in its own session (process group) with output going to ``log_path``.

    ``stop_signal`` is sent to the leader first (the fast-stop signal of the server); whatever is
    left of the process group after ``grace`` seconds is killed with SIGKILL. ``stop()`` is
    idempotent and never raises.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGINT,
        grace: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.stop_signal = stop_signal
        self.grace = grace
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.proc.pid  # session leader: pgid == pid
        self._stopped = False

    @property
    def pid(self) -> int:
        """The pid of the process we started (the server's master)."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the started process has not exited."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server and every process of its group; bounded by ``2 * grace`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(self.stop_signal)
                try:
                    self.proc.wait(timeout=self.grace)
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + self.grace
            while _group_alive(self.pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_alive(self.pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=self.grace)
        finally:
            self._log.close()

    def output_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines the server wrote to stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessRegistry:
    """Keeps every started :class:`Server` and stops them all in :meth:`stop_all`.

    Used as a context manager; SIGTERM and SIGHUP are turned into ``KeyboardInterrupt`` inside
    the ``with`` block, so a killed bench still stops what it started.
    """

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self._old_handlers: dict[int, object] = {}

    def start(self, *args: object, **kwargs: object) -> Server:
        """Start a :class:`Server` (same arguments) and register it."""
        server = Server(*args, **kwargs)  # type: ignore[arg-type]
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every registered server, most recent first."""
        while self.servers:
            self.servers.pop().stop()

    def __enter__(self) -> ProcessRegistry:
        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# CPU accounting: how much of the machine was used by processes other than the bench's own


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from the first line of ``/proc/stat``."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user/nice
    return total - idle, total


def process_jiffies(pids: Sequence[int]) -> int:
    """utime + stime of the given processes (those still alive), in jiffies."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total


class CpuMeter:
    """Measures, over an interval, the share of the machine's CPU time used by *other* processes.

    Ours are the server (master + workers, passed to :meth:`start`/:meth:`stop` as a pid list)
    and the children this process waited for meanwhile (wrk). A high foreign share means the run
    competed with something else on the machine and its numbers are not comparable.
    """

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK")
        self._start: tuple[int, int, int, float] | None = None

    def start(self, pids: Sequence[int]) -> None:
        busy, total = _machine_jiffies()
        self._start = (busy, total, process_jiffies(pids), _children_cpu_s())

    def stop(self, pids: Sequence[int]) -> float | None:
        """Foreign CPU in percent of the machine's capacity over the interval, or None."""
        if self._start is None:
            return None
        busy0, total0, ours0, kids0 = self._start
        busy, total = _machine_jiffies()
        ours = process_jiffies(pids) - ours0 + (_children_cpu_s() - kids0) * self._hz
        if total <= total0:
            return None
        return max(0.0, (busy - busy0 - ours) / (total - total0) * 100)


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------------
# memory


def _status_kb(pid: int, key: str, path: str = "status") -> int | None:
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kb(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (``VmRSS``), or None if the process is gone."""
    return _status_kb(pid, "VmRSS")


def pss_kb(pid: int) -> int | None:
    """Proportional set size of ``pid`` in KiB (shared pages divided among sharers), or None."""
    return _status_kb(pid, "Pss", "smaps_rollup")


@dataclass
class WorkersMemory:
    """RSS (and PSS) of a server's worker processes, in KiB, one entry per worker pid."""

    pids: list[int]
    rss_kb: list[int]
    pss_kb: list[int]

    @property
    def rss_sum_kb(self) -> int:
        return sum(self.rss_kb)

    @property
    def rss_max_kb(self) -> int:
        return max(self.rss_kb, default=0)

    def to_json(self) -> dict[str, object]:
        return {
            "pids": self.pids,
            "rss_kb": self.rss_kb,
            "pss_kb": self.pss_kb,
            "rss_sum_kb": self.rss_sum_kb,
        }


def workers_rss(master_pid: int) -> WorkersMemory:
    """Memory of the workers of a pre-fork server: the direct children of ``master_pid``."""
    pids, rss, pss = [], [], []
    for pid in child_pids(master_pid):
        r = rss_kb(pid)
        if r is None:
            continue
        pids.append(pid)
        rss.append(r)
        pss.append(pss_kb(pid) or 0)
    return WorkersMemory(pids, rss, pss)


def wait_for_workers(master_pid: int, count: int, timeout: float) -> list[int]:
    """Wait until ``master_pid`` has at least ``count`` children; return their pids.

    Raises ``TimeoutError`` if that does not happen within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = child_pids(master_pid)
        if len(pids) >= count:
            return pids
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{len(pids)} of {count} workers running after {timeout:g}s")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# wrk

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME_RE = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")
_PCT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\S+)\s*$", re.M)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL_RE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_SOCKERR_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.M)
_LAT_RE = re.compile(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", re.M)


def run_edgeworker(
    reg: ProcessRegistry,
    conf: Path,
    host: str,
    port: int,
    workers: int,
    python: Path,
    cwd: Path,
    log_path: Path,
    timeout: float = 30.0,
) -> Server:
    """``python -m edgeworker run -c conf`` in ``reg``, once it listens on ``host:port`` with
    ``workers`` workers (``TimeoutError`` after ``timeout`` seconds)."""
    srv = reg.start(
        "edgeworker",
        [str(python), "-m", "edgeworker", "run", "-c", str(conf)],
        cwd=cwd,
        log_path=log_path,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    wait_for_port(host, port, timeout, srv.proc)
    wait_for_workers(srv.pid, workers, timeout)
    return srv


def parse_time_ms(text: str) -> float:
    """Convert a wrk time such as ``"635.91us"``, ``"1.20ms"`` or ``"2.00s"`` to milliseconds.

    Raises ``ValueError`` for anything else.
    """
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a wrk time: {text!r}")
    return float(m.group(1)) * _TIME_UNITS_MS[m.group(2)]


@dataclass
class WrkResult:
    """What one wrk run measured. Latencies are in milliseconds."""

    url: str
    requests: int
    duration_s: float
    rps: float
    latency_avg_ms: float
    latency_max_ms: float
    percentiles_ms: dict[str, float] = field(default_factory=dict)  # "50", "75", "90", "99"
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx_3xx: int = 0

    @property
    def p50_ms(self) -> float:
        return self.percentiles_ms["50"]

    @property
    def p99_ms(self) -> float:
        return self.percentiles_ms["99"]

    @property
    def errors(self) -> int:
        """Socket errors of every kind plus non-2xx/3xx answers."""
        return sum(self.socket_errors.values()) + self.non_2xx_3xx

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["errors"] = self.errors
        return d


def parse_wrk_output(text: str, url: str = "") -> WrkResult:
    """Parse the text printed by ``wrk --latency``.

    Raises ``ValueError`` if the requests/sec line or the latency distribution is missing.
    """
    rps = _RPS_RE.search(text)
    if not rps:
        raise ValueError("wrk output has no Requests/sec line:\n" + text)
    pcts = {_pct_key(p): parse_time_ms(t) for p, t in _PCT_RE.findall(text)}
    if "50" not in pcts or "99" not in pcts:
        raise ValueError("wrk output has no latency distribution (run with --latency):\n" + text)
    total = _TOTAL_RE.search(text)
    lat = _LAT_RE.search(text)
    sock = _SOCKERR_RE.search(text)
    non2xx = _NON2XX_RE.search(text)
    return WrkResult(
        url=url,
        requests=int(total.group(1)) if total else 0,
        duration_s=parse_time_ms(total.group(2) + total.group(3)) / 1000 if total else 0.0,
        rps=float(rps.group(1)),
        latency_avg_ms=parse_time_ms(lat.group(1)) if lat else 0.0,
        latency_max_ms=parse_time_ms(lat.group(3)) if lat else 0.0,
        percentiles_ms=pcts,
        socket_errors=(
            dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True))
            if sock
            else {}
        ),
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
    )


def _pct_key(p: str) -> str:
    return p[:-2] if p.endswith(".0") else p


def find_wrk() -> str:
    """Path of the ``wrk`` binary; raises ``FileNotFoundError`` with an install hint if absent."""
    path = shutil.which("wrk")
    if not path:
        raise FileNotFoundError("wrk not found on PATH (Debian: apt-get install wrk)")
    return path


def run_wrk(
    url: str,
    *,
    threads: int = 2,
    connections: int = 50,
    duration: float = 10.0,
    timeout_s: float = 5.0,
    wrk: str | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """Run ``wrk --latency`` (keep-alive) against ``url``, with ``headers`` added to every
    request, and return the parsed result.

    The run is bounded: wrk is killed ``duration + 30`` seconds after it starts. Raises
    ``RuntimeError`` if wrk fails or its output cannot be parsed.
    """
    argv = [
        wrk or find_wrk(),
        "--latency",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        f"{timeout_s:g}s",
        *(a for k, v in (headers or {}).items() for a in ("-H", f"{k}: {v}")),
        url,
    ]
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


def tool_version(argv: Sequence[str]) -> str:
    """First line of a tool's version output (stdout or stderr), or ``"unknown"``."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    out = (done.stdout or done.stderr).strip().splitlines()
    return out[0].strip() if out else "unknown"


def servers_python(python: str | os.PathLike[str]) -> str:
    """``"Python 3.11.2 (/usr/bin/python3.11)"``: the interpreter the servers under test run on
    (its version and real path). Ratios to nginx depend on it: a distribution build with PGO
    and LTO runs edgeworker's request path ~25 % faster than a default pyenv build."""
    try:
        done = subprocess.run(
            [
                str(python),
                "-c",
                "import os, sys; print(sys.version.split()[0], os.path.realpath(sys.executable))",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        version, path = done.stdout.split(maxsplit=1)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return f"Python at {python} (version unknown)"
    return f"Python {version} ({path.strip()})"


# ---------------------------------------------------------------------------------------------
# reporting


# Every bench judges its goals the same way, with :class:`Goal`:
#
# - a value is taken *within* each round (a ratio of two sides measured in that round), never as
#   the ratio of medians of different rounds, never as a best-of;
# - a round whose measurements ran beside other load (other processes took more than
#   DISTURBED_PCT % of the machine, see :class:`CpuMeter`) is shown, flagged, and left out;
# - the verdict: PASS when every kept round meets the target, FAIL when none does,
#   "inconclusive" when they straddle it, "too few rounds" with fewer than MIN_ROUNDS kept
#   rounds, FAIL "not measured" when a side is missing in a round (a failed or skipped side
#   never passes);
# - ``--check`` exits 1 unless every goal is PASS (:func:`finish`).

MIN_ROUNDS = 5
DISTURBED_PCT = 20.0


@dataclass
class Goal:
    """A value taken within each round against a target (``value >= target`` or ``<=``).

    ``per_round`` holds one value per round, None where a side of it was not measured in that
    round; ``disturbed`` flags the rounds that ran beside other load. ``target`` None is a
    figure shown for context, judged by nothing.
    """

    name: str
    op: str  # ">=" or "<="
    target: float | None
    per_round: list[float | None]
    disturbed: list[bool] = field(default_factory=list)
    unit: str = "x"
    note: str = ""

    def _flag(self, i: int) -> bool:
        return i < len(self.disturbed) and self.disturbed[i]

    @property
    def kept(self) -> list[float | None]:
        """The values of the rounds that were not disturbed (None: a side missing)."""
        return [v for i, v in enumerate(self.per_round) if not self._flag(i)]

    @property
    def median(self) -> float | None:
        vals = [v for v in self.kept if v is not None]
        return statistics.median(vals) if vals else None

    def met(self, value: float) -> bool:
        assert self.target is not None
        return value >= self.target if self.op == ">=" else value <= self.target

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "no goal"
        kept = self.kept
        # a side missing in any round, disturbed or not: a failed or skipped side never passes
        if not self.per_round or any(v is None for v in self.per_round):
            return "FAIL (not measured)"
        if len(kept) < MIN_ROUNDS:
            return "too few rounds"
        met = [self.met(v) for v in kept]  # type: ignore[arg-type]
        return "PASS" if all(met) else "FAIL" if not any(met) else "inconclusive"

    @property
    def judged(self) -> bool:
        return self.target is not None

    def fmt(self, v: float | None) -> str:
        """A value as printed: a ratio to 3 decimals, anything else to 3 significant digits."""
        if v is None:
            return "-"
        return format(v, ".3f" if self.unit == "x" else ".3g")

    def rounds_text(self) -> str:
        """Each round's value, a disturbed one marked ``*``, a missing one ``-``."""
        out = [self.fmt(v) + ("*" if self._flag(i) else "") for i, v in enumerate(self.per_round)]
        return " ".join(out) or "-"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "op": self.op,
            "target": self.target,
            "unit": self.unit,
            "per_round": self.per_round,
            "disturbed": [self._flag(i) for i in range(len(self.per_round))],
            "median": self.median,
            "verdict": self.verdict,
            "note": self.note,
        }


def disturbed_rounds(foreign_pcts: Sequence[Sequence[float | None]]) -> list[bool]:
    """One flag per round: True when any measurement of that round saw other processes use more
    than DISTURBED_PCT % of the machine (a measurement without a reading flags nothing)."""
    return [any(p is not None and p > DISTURBED_PCT for p in rnd) for rnd in foreign_pcts]


def per_round_ratio(
    nums: Sequence[float | None], dens: Sequence[float | None]
) -> list[float | None]:
    """``nums[i] / dens[i]`` of every round (None where a side is missing or zero); rounds that
    one side did not run at all are missing too (the longer list sets the count)."""
    n = max(len(nums), len(dens))
    out: list[float | None] = []
    for i in range(n):
        a = nums[i] if i < len(nums) else None
        b = dens[i] if i < len(dens) else None
        out.append(ratio(a, b))
    return out


def goals_table(goals: Sequence[Goal]) -> Table:
    rows = []
    for g in goals:
        target = (
            "-" if g.target is None else f"{g.op} {g.target:g}{'' if g.unit == 'x' else g.unit}"
        )
        rows.append([g.name, g.rounds_text(), g.fmt(g.median), target, g.verdict])
    notes = [f"{g.name}: {g.note}" for g in goals if g.note]
    if any(any(g._flag(i) for i in range(len(g.per_round))) for g in goals):
        notes.append(
            f"a value marked * ran beside other load (other processes > {DISTURBED_PCT:g} % of "
            "the machine): shown, left out of the median and the verdict"
        )
    return Table(
        "Goals: the value of each round, then the median of the kept rounds",
        ["goal", "each round", "median", "target", "verdict"],
        rows,
        notes=notes,
        right=(2,),
    )


@dataclass
class Table:
    """A titled table of a bench's figures: printed as text and written, as Markdown, into
    bench/RESULTS.md by bench/report.py (both from the same rows)."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    right: Sequence[int] = ()

    def text(self) -> str:
        out = [self.title + ":", format_table(self.headers, self.rows, self.right)]
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        def cells(row: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

        align = ["---:" if i in set(self.right) else "---" for i in range(len(self.headers))]
        out = [f"**{self.title}**", "", cells(self.headers), "|" + "|".join(align) + "|"]
        out += [cells(r) for r in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out)

    def to_json(self) -> dict[str, object]:
        return {
            "title": self.title,
            "headers": self.headers,
            "rows": self.rows,
            "notes": self.notes,
            "right": list(self.right),
        }


def add_common_args(p: argparse.ArgumentParser, rounds: int = MIN_ROUNDS) -> None:
    """``--rounds`` (default MIN_ROUNDS), ``--json FILE`` and ``--check``, the same in every
    bench."""
    p.add_argument(
        "--rounds",
        type=int,
        default=rounds,
        help=f"alternating rounds ({rounds}); fewer than {MIN_ROUNDS} never PASS a goal",
    )
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    p.add_argument("--check", action="store_true", help="exit 1 unless every goal is PASS")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def git_commit(root: Path | None = None) -> str:
    """The checkout's commit (short), ``+dirty`` when tracked files other than Markdown (which
    no measurement reads) differ from it."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        rev = _git(root, "rev-parse", "--short", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = [line for line in changed if not line.endswith(".md")]
    return rev + ("+dirty" if dirty else "")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The bench's command line as a reader would type it from the repository's root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).resolve().parent.parent)
    except ValueError:
        pass
    rest = list(argv[1:])
    for i, arg in enumerate(rest):  # where the JSON went is no part of what was measured
        if arg == "--json" and i + 1 < len(rest):
            rest[i + 1] = "FILE"
        elif arg.startswith("--json="):
            rest[i] = "--json=FILE"
    return shlex.join([".venv/bin/python", str(script), *rest])


def finish(
    bench: str,
    args: argparse.Namespace,
    goals: Sequence[Goal],
    tables: Sequence[Table],
    started: float,
    extra: dict[str, object] | None = None,
) -> int:
    """Print the tables and the goals, write ``--json``, and return the exit status: 1 with
    ``--check`` unless every judged goal is PASS, else 0."""
    gt = goals_table(goals) if goals else None
    print("\n\n".join(t.text() for t in [*tables, *([gt] if gt else [])]))
    if getattr(args, "json", None):
        doc = {
            "bench": bench,
            "commit": git_commit(),
            "command": command_line(),
            "started": _utc(started),
            "finished": _utc(time.time()),
            "rounds": getattr(args, "rounds", None),
            "python": platform.python_version(),
            "goals": [g.to_json() for g in goals],
            "tables": [t.to_json() for t in tables],
            **(extra or {}),
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    if getattr(args, "check", False) and any(g.judged and g.verdict != "PASS" for g in goals):
        return 1
    return 0


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None if either is missing or ``den`` is zero."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterator[int] | Sequence[int] = ()
) -> str:
    """Format rows as a plain-text table; columns whose index is in ``right`` are right-aligned."""
    right = set(right)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def mib(kib: float | None) -> str:
    """KiB as a short MiB string (``"12.3"``), or ``"-"``."""
    return "-" if kib is None else f"{kib / 1024:.1f}"
