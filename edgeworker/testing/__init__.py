"""Run a real edgeworker server from a test: ``Server`` and the pytest plugin's fixture.

::

    from edgeworker.testing import Server

    with Server("edgeworker.toml", workers=1) as srv:
        urllib.request.urlopen(srv.url + "/hello")

``Server`` starts ``edgeworker run`` (a master and its workers, real processes) on a copy of the
config whose listen ports are replaced by free ones, and returns once every worker accepts. The
copy is written next to the config (a hidden file, removed at ``stop()``) so that its relative
paths (``python_path``, certificates, ``root``) still resolve; the pid file, the error log and
the process output go to a folder of their own. With pytest, the ``edgeworker_server`` fixture
(:mod:`edgeworker.testing.pytest_plugin`) starts servers and stops them after the test.

Importing this module imports no network library and nothing of the server.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as daytime
from pathlib import Path
from typing import IO, Any

from .. import control

__all__ = ["Listener", "ReloadError", "Server", "ServerError", "child_pids"]

#: how long ``start()`` and ``reload()`` wait for the workers to report ready
READY_TIMEOUT = 60.0

#: the default ``listen`` of a ``[[server]]`` without one (config.Server.listen)
DEFAULT_LISTEN = "127.0.0.1:8080"


class ServerError(RuntimeError):
    """The server did not start (its output is in the message), or a bad config was given."""


class ReloadError(ServerError):
    """A reload was refused; the previous generation still serves (the reason is in the message)."""


@dataclass(frozen=True)
class Listener:
    """One listen address of the running server."""

    host: str
    port: int
    ssl: bool = False

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (``https`` for an ``ssl`` listener); a wildcard address is
        reached through the loopback address of its family."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}"


class Server:
    """A real ``edgeworker run`` on ``config`` (a path), its listen ports replaced by free ones.

    ``workers``: the number of workers (``--workers``). ``env``: variables added to the server's
    environment. ``workdir``: the folder for the pid file, the error log and the output (default:
    a temporary folder removed at ``stop()``). Use it as a context manager, or call ``start()``
    and ``stop()``.
    """

    def __init__(
        self,
        config: str | os.PathLike[str],
        workers: int = 1,
        env: dict[str, str] | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an integer of at least 1, not {workers!r}")
        self.config = Path(config).absolute()
        self.workers = workers
        self.env = dict(env or {})
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgeworker-test-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pid_file = self.dir / "edgeworker.pid"
        self.error_log_file = self.dir / "error.log"
        #: the master's stdout (an access log on ``stdout`` lands here) and stderr
        self.output_file = self.dir / "stdout.log"
        self.stderr_file = self.dir / "stderr.log"
        #: the config file the master runs (the rewritten copy)
        self.running_config: Path | None = None
        self.listeners: list[Listener] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._ports: dict[int, int] = {}  # the config's port -> the free port standing in
        self._output: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._notify: _NotifyListener | None = None
        self._last_log = ""
        self._last_output = ""

    # ------------------------------------------------------------------ the public side
    @property
    def url(self) -> str:
        """The URL of the first listener, e.g. ``http://127.0.0.1:40123``."""
        return self._first().url

    @property
    def port(self) -> int:
        """The port of the first listener."""
        return self._first().port

    @property
    def urls(self) -> list[str]:
        """The URL of every listener, in the config's order."""
        return [listener.url for listener in self.listeners]

    @property
    def master_pid(self) -> int:
        """The pid of the master process."""
        if self.proc is None:
            raise ServerError("the server is not started")
        return self.proc.pid

    def start(self) -> Server:
        """Start the master and wait until every worker accepts. Raises ``ServerError`` with the
        server's output when it exits or does not get ready within ``READY_TIMEOUT`` s."""
        if self.proc is not None:
            raise ServerError("the server is already started")
        self._prepare()
        self._notify = _NotifyListener(self.env.get("NOTIFY_SOCKET"))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.update(self.env)
        env["NOTIFY_SOCKET"] = self._notify.address
        self._output = open(self.output_file, "ab")
        self._stderr = open(self.stderr_file, "ab")
        self.proc = subprocess.Popen(
            self._command(),
            stdout=self._output,
            stderr=self._stderr,
            cwd=self.dir,
            env=env,
            start_new_session=True,
        )
        try:
            self._notify.wait("READY=1", 0, READY_TIMEOUT, self.proc)
        except ServerError as exc:
            self.stop()
            raise ServerError(f"edgeworker did not start: {exc}\n{self._output_text()}") from None
        return self

    def reload(self, timeout: float = READY_TIMEOUT) -> None:
        """Rewrite the config copy from ``config`` (edit it first to test a change: the ports
        stay), send SIGHUP, and return once the new generation serves and the old workers have
        exited (they finish their in-flight requests first), so every later request meets the
        new code. Raises ``ReloadError`` (with the error log's reason) when the master refused
        the reload: the old generation then still serves."""
        if self.proc is None or self._notify is None:
            raise ServerError("the server is not started")
        self._prepare()
        old_workers = set(child_pids(self.proc.pid))
        pid_file = str(self.pid_file)
        try:
            state = control.read_state(control.state_path(pid_file))
        except (OSError, ValueError):
            state = None
        before = state["reload"]["seq"] if state is not None else 0
        sent = time.monotonic()
        os.kill(self.proc.pid, signal.SIGHUP)
        # the outcome the master reports, as `edgeworker reload` reads it
        ok, message = control.await_outcome(
            self.proc.pid, pid_file, "reload", before, sent, timeout
        )
        if not ok:
            raise ReloadError(f"reload refused ({message}):\n{self._log_since_reload()}")
        deadline = time.monotonic() + timeout
        while old_workers.intersection(child_pids(self.proc.pid)):
            if time.monotonic() > deadline:
                raise ServerError(f"the old workers did not exit within {timeout:g} s")
            time.sleep(0.02)

    def error_log(self) -> str:
        """The server's error log so far (also after ``stop()``)."""
        if self.error_log_file.exists():
            self._last_log = self.error_log_file.read_text(errors="replace")
        return self._last_log

    def output(self) -> str:
        """The master's stdout/stderr and the error log so far, for a failure message."""
        if not self.dir.exists():
            return self._last_output
        parts = []
        for f in (self.output_file, self.stderr_file, self.error_log_file):
            if f.exists() and f.stat().st_size:
                parts.append(f"--- {f.name}\n" + f.read_text(errors="replace"))
        return "\n".join(parts)

    def _output_text(self) -> str:
        """``output()`` naming the config given, not the copy the master ran."""
        text = self.output()
        if self.running_config is not None and self.running_config != self.config:
            text = text.replace(str(self.running_config), str(self.config))
        return text

    def stop(self, timeout: float = 15.0) -> int | None:
        """Graceful stop (SIGTERM to the master); after ``timeout`` s, SIGKILL to every process
        of the server. Returns the master's exit status (None if it never started)."""
        if self.proc is None:
            self._cleanup()
            return None
        if self.proc.poll() is None:
            _killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        _killpg(self.proc.pid, signal.SIGKILL)  # workers of a master that died
        self._cleanup()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = ", ".join(self.urls) or "not started"
        return f"<edgeworker.testing.Server {self.config} {where}>"

    # ------------------------------------------------------------------ hooks and details
    def _command(self) -> list[str]:
        """The command line of the master."""
        assert self.running_config is not None
        return [
            sys.executable,
            "-m",
            "edgeworker",
            "run",
            "-c",
            str(self.running_config),
            "--workers",
            str(self.workers),
        ]

    def _prepare(self) -> None:
        """Write the config copy the master runs and set ``listeners``."""
        try:
            with open(self.config, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ServerError(f"cannot read the config {self.config}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ServerError(f"{self.config}: {exc}") from None
        self.listeners = self._rewrite_listen(data)
        main = data.setdefault("main", {})
        if not isinstance(main, dict):
            raise ServerError(f"{self.config}: [main] must be a table")
        main["pid_file"] = str(self.pid_file)
        main["error_log"] = str(self.error_log_file)
        if self.running_config is None:
            name = f".{self.config.stem}.edgeworker-test-{os.getpid()}-{id(self):x}.toml"
            self.running_config = self.config.with_name(name)
        try:
            self.running_config.write_text(_dump_toml(data), encoding="utf-8")
        except OSError as exc:
            raise ServerError(
                f"cannot write the test copy of {self.config} beside it (its relative paths "
                f"must keep resolving): {exc}"
            ) from None

    def _rewrite_listen(self, data: dict[str, Any]) -> list[Listener]:
        from ..confschema import format_listen, parse_listen

        servers = data.get("server")
        if not isinstance(servers, list) or not servers:
            raise ServerError(f"{self.config}: no [[server]] to listen on")
        parsed: list[tuple[dict[str, Any], list[tuple[str, int, list[str]]]]] = []
        for i, server in enumerate(servers):
            if not isinstance(server, dict):
                raise ServerError(f"{self.config}: server[{i}] must be a table")
            entries = server.get("listen", [DEFAULT_LISTEN])
            if isinstance(entries, str):
                entries = [entries]
            addresses = []
            for j, text in enumerate(entries):
                if not isinstance(text, str) or not text.split():
                    raise ServerError(f"{self.config}: server[{i}].listen[{j}]: not an address")
                address, *flags = text.split()
                try:
                    host, port = parse_listen(address)
                except ValueError as exc:
                    raise ServerError(f"{self.config}: server[{i}].listen[{j}]: {exc}") from None
                addresses.append((host, port, flags))
            parsed.append((server, addresses))
        wanted = [(host, port) for _, addresses in parsed for host, port, _ in addresses]
        for port in dict.fromkeys(port for _, port in wanted):
            if port not in self._ports:
                families = {
                    socket.AF_INET6 if ":" in h else socket.AF_INET for h, p in wanted if p == port
                }
                self._ports[port] = _free_port(families, set(self._ports.values()))
        listeners: dict[tuple[str, int], Listener] = {}
        for server, addresses in parsed:
            server["listen"] = []
            for host, port, flags in addresses:
                new = self._ports[port]
                server["listen"].append(" ".join([format_listen(host, new), *flags]))
                listeners.setdefault((host, new), Listener(host, new, "ssl" in flags))
        return list(listeners.values())

    def _first(self) -> Listener:
        if not self.listeners:
            raise ServerError("the server is not started")
        return self.listeners[0]

    def _log_since_reload(self) -> str:
        text = self.error_log()
        cut = text.rfind("reload")
        start = text.rfind("\n", 0, cut) + 1 if cut >= 0 else 0
        return text[start:].strip() or text.strip()

    def _cleanup(self) -> None:
        # keep the texts for error_log() and output() after the folder is gone
        self.error_log()
        self._last_output = self.output()
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        for f in (self._output, self._stderr):
            if f is not None:
                f.close()
        self._output = self._stderr = None
        if self.running_config is not None and self.running_config != self.config:
            self.running_config.unlink(missing_ok=True)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _free_port(families: set[int], taken: set[int]) -> int:
    """A TCP port free on the wildcard address of every family in ``families``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET) as probe:
            probe.bind(("0.0.0.0", 0))
            port = probe.getsockname()[1]
        if port in taken:
            continue
        if socket.AF_INET6 in families:
            try:
                with socket.socket(socket.AF_INET6) as probe6:
                    probe6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    probe6.bind(("::", port))
            except OSError:
                continue
        return port
    raise ServerError("no free TCP port found")


def child_pids(pid: int) -> list[int]:
    """The pids of the direct children of ``pid`` (a master's workers), from ``/proc``; sorted."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command may contain spaces and parentheses: the ppid follows the last ")"
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(entry))
    return sorted(children)


class _NotifyListener:
    """The server's ``NOTIFY_SOCKET``: an abstract datagram socket read by a thread, which keeps
    every message (``READY=1``, ``RELOADING=1``…) and passes it on to ``forward_to`` (the
    ``NOTIFY_SOCKET`` the test gave in ``env``, if any)."""

    def __init__(self, forward_to: str | None) -> None:
        self.address = f"@edgeworker-test-{os.getpid()}-{id(self):x}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.2)
        self.forward_to = forward_to
        self.messages: list[str] = []
        self.changed = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="edgeworker-notify", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self._forward(data)
            with self.changed:
                self.messages.append(data.decode("utf-8", "replace"))
                self.changed.notify_all()

    def _forward(self, data: bytes) -> None:
        if not self.forward_to:
            return
        target = self.forward_to
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
                out.sendto(data, target)
        except OSError:
            pass  # as sd_notify: a missing listener is not the server's problem

    def wait(self, line: str, start: int, timeout: float, proc: subprocess.Popen[bytes]) -> int:
        """The index of the first message from ``start`` on that has ``line``; waits for it."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for i in range(start, len(self.messages)):
                    if line in self.messages[i].splitlines():
                        return i
                if proc.poll() is not None:
                    raise ServerError(f"the master exited with status {proc.returncode}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerError(f"no {line} from the master within {timeout:g} s")
                self.changed.wait(min(left, 0.1))

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        self.thread.join(2)


# ---------------------------------------------------------------------- a small TOML writer

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dump_toml(data: dict[str, Any]) -> str:
    """``data`` (as ``tomllib`` reads it) as TOML text: one ``key = value`` line per top-level
    key, tables and arrays of tables written inline."""
    return "".join(f"{_key(k)} = {_value(v)}\n" for k, v in data.items())


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t" or (ch >= " " and ch != "\x7f"):
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}")
    out.append('"')
    return "".join(out)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime | date | daytime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
