"""The master process: gunicorn's arbiter, with edgeworker's own rules where gunicorn falls short.

The master owns the config, the listening sockets, the shared-dict zones, the ``init`` hook,
signals and systemd notifications; it never parses a request. Differences from stock gunicorn
(see docs/internals/design.md):

- every worker has an id 0..N-1, kept by a respawned worker (``edgeworker.worker.id``);
- a worker counts as ready only after ``init_worker`` returned and it accepts (a pipe tells
  the master); ``READY=1`` goes to systemd only then;
- HUP validates the new config in a separate process first and keeps serving on failure,
  starts the new workers, waits until they are ready, then retires the old ones;
- when a worker dies, the shared-dict locks it held are recovered at once;
- a worker that fails to boot halts the server at start, but on reload or respawn it is
  logged and the old workers keep serving;
- the listeners are bound at once, before any shared memory exists: a busy or forbidden
  address is one ``ListenError`` (no retry loop), and on reload a refusal;
- the outcome of a reload or a log reopen goes to the state file beside the pid file
  (``edgeworker.control``), where ``edgeworker reload``/``reopen`` wait for it;
- gunicorn's own start-up and shut-down wording is replaced by edgeworker's.
"""

from __future__ import annotations

import gc
import io
import logging
import math
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from gunicorn import sock as gunicorn_sock
from gunicorn import systemd as gunicorn_systemd
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from gunicorn.pidfile import Pidfile

from . import __version__, balance, control, handlers, logs, runtime, sdnotify, zones
from . import config as config_mod
from .errors import ConfigError, EdgeworkerError
from .status import metrics
from .tls import context as tls_context
from .worker_process import EdgeWorker

READY_TIMEOUT = 30.0  # seconds a new worker may take to run init_worker and accept


class StartError(EdgeworkerError):
    """The master cannot start; the message is the one line to show (nothing was created)."""


class ListenError(StartError):
    """A listen address cannot be bound: ``cannot listen on 127.0.0.1:8080: address already in
    use``."""


def open_listeners(
    addresses: list[tuple[str, int]], conf: Any, log: Any, keep: list[Any] = ()
) -> list[Any]:
    """Listening sockets (gunicorn's listener objects) for ``addresses``, all or none.

    A listener in ``keep`` bound to one of the addresses is reused as is (a reload that adds an
    address keeps the others). A bind that fails closes what this call opened and raises
    ``ListenError`` at once: no retry.
    """
    kept = {lnr.cfg_addr: lnr for lnr in keep}
    opened: list[Any] = []
    listeners = []
    for host, port in addresses:
        if (host, port) in kept:
            listeners.append(kept[(host, port)])
            continue
        kind = gunicorn_sock.TCP6Socket if ":" in host else gunicorn_sock.TCPSocket
        try:
            lnr = kind((host, port), conf, log)
        except OSError as exc:
            for lnr in opened:
                lnr.close()
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            where = config_mod.format_listen(host, port)
            raise ListenError(f"cannot listen on {where}: {reason}") from None
        opened.append(lnr)
        listeners.append(lnr)
    return listeners


class _OwnWording(logging.Filter):
    """gunicorn's messages in edgeworker's words: its name and internals never show."""

    DROP = ("Current configuration:", "Arbiter booted", "Using worker: ", "Hang up: ")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if not isinstance(msg, str):
            return True
        if msg.startswith("Starting gunicorn"):
            record.msg, record.args = (
                "edgeworker %s starting, master pid %d",
                (__version__, os.getpid()),
            )
        elif msg.startswith("Shutting down: "):
            record.msg, record.args = "edgeworker stopped, master pid %d", (os.getpid(),)
        elif msg.startswith(self.DROP):
            return False
        return True


def run_hooks(specs: tuple[str, ...], what: str) -> None:
    for spec in specs:
        fn = handlers.resolve(spec)
        runtime.log.debug("running %s %s", what, spec)
        fn()


def _open_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)  # the descriptor listdir itself used is closed by now
        except OSError:
            continue
        fds.add(fd)
    return fds


def run_init(specs: tuple[str, ...]) -> None:
    """Run the ``init`` hooks in the master; what they leave open is closed when they return.

    ``init`` may do blocking I/O (read files, load data from Redis). Sockets and files it left
    open would be inherited by every worker (and pile up in the master at each reload), so
    they are closed here, through their Python objects, and logged. Open long-lived
    connections in ``init_worker`` instead.
    """
    if not specs:
        return
    before = _open_fds()
    run_hooks(specs, "init")
    gc.collect()
    leaked = _open_fds() - before
    if not leaked:
        return
    closed = []
    for obj in gc.get_objects():
        if isinstance(obj, (socket.socket, io.IOBase)):
            try:
                fd = obj.fileno()
            except (OSError, ValueError):
                continue
            if fd in leaked:
                closed.append(f"{fd} ({type(obj).__name__})")
                obj.close()
    if closed:
        runtime.log.info(
            "init left %s open; closed (open long-lived connections in init_worker)",
            ", ".join(sorted(closed)),
        )
    still = leaked & _open_fds()
    if still:
        runtime.log.warning(
            "init left file descriptors %s open that edgeworker cannot close; the workers "
            "inherit them",
            ", ".join(map(str, sorted(still))),
        )


class EdgeApplication(BaseApplication):
    """gunicorn embedding: our config in, our worker class, no WSGI."""

    def __init__(
        self, config_path: str, workers: int | None = None, listen: list[str] | None = None
    ):
        self.config_path = config_path
        self.override_workers = workers
        self.override_listen = listen or None
        self.generation = 0
        self.ew_config, self.ew_tls = self._load()
        super().__init__()

    def _load(self) -> tuple[Any, Any]:
        """The config and its TLS contexts (``edgeworker.tls.context.build``: made here, in
        the master, so that every worker shares their session-ticket keys). ``ConfigError``
        when either is invalid."""
        cfg = config_mod.load(self.config_path)
        if self.override_workers:
            cfg.main.workers = self.override_workers
        if self.override_listen:
            listen = tuple(
                config_mod.format_listen(*config_mod.parse_listen(a)) for a in self.override_listen
            )
            for server in cfg.server:
                server.listen = listen
                server.listen_ssl = ()
                server.listen_http2 = ()
        return cfg, tls_context.build(cfg)

    def log_warnings(self) -> None:
        """What loading the config found worth a warning (certificates expired or not yet
        valid), in the error log."""
        for warning in self.ew_tls.warnings:
            runtime.log.warning("%s: %s", self.ew_config.file, warning)

    def load_config(self) -> None:
        cfg = self.ew_config
        binds = [config_mod.format_listen(h, p) for h, p in cfg.listen_addresses()]
        settings = {
            "bind": binds,
            "workers": cfg.main.workers,
            "worker_class": EdgeWorker,
            "worker_connections": cfg.main.worker_connections,
            "graceful_timeout": math.ceil(cfg.main.graceful_timeout),
            "timeout": 30,
            "pidfile": cfg.main.pid_file or config_mod.default_pid_file(),
            "control_socket_disable": True,
            "logger_class": GunicornLoggerRef,
            "loglevel": "warning"
            if cfg.main.log_level in ("notice", "warn", "warning")
            else ("critical" if cfg.main.log_level == "crit" else cfg.main.log_level),
            "proc_name": "edgeworker",
            "pre_fork": _pre_fork,
            "post_fork": _post_fork,
            "child_exit": _child_exit,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> None:  # workers build their App themselves (worker.load_wsgi)
        return None

    def reload(self) -> None:  # the arbiter's reload() does it: see EdgeArbiter.reload
        raise RuntimeError("EdgeApplication.reload is replaced by EdgeArbiter.reload")

    def run(self) -> None:
        EdgeArbiter(self).run()


# gunicorn wants a class path or class for logger_class; the class lives in logs.py
GunicornLoggerRef = logs.GunicornLogger


def _pre_fork(arbiter: EdgeArbiter, worker: EdgeWorker) -> None:
    arbiter.prepare_worker(worker)


def _post_fork(arbiter: EdgeArbiter, worker: EdgeWorker) -> None:
    arbiter.in_child(worker)


def _child_exit(arbiter: EdgeArbiter, worker: EdgeWorker) -> None:
    arbiter.worker_gone(worker)


def _workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def _close_unused(listeners: list[Any], keep: list[Any]) -> None:
    """Close the listeners of ``listeners`` that are not in ``keep``."""
    for lnr in listeners:
        if lnr not in keep:
            lnr.close()


class EdgeArbiter(Arbiter):
    """gunicorn's arbiter with edgeworker's lifecycle rules (see the module docstring)."""

    def __init__(self, app: EdgeApplication) -> None:
        self.zones = zones.Zones(os.getpid())
        self.ready_pipes: dict[int, int] = {}  # pid -> read end
        self.ready_pids: set[int] = set()
        self.booting = True
        self.halting = False
        self.generation = 0
        self.spawned_ids: set[tuple[int, int]] = set()  # (generation, worker id) ever forked
        self.restarts: dict[int, int] = {}  # worker id -> respawns after a death
        # the last outcome of each action the CLI waits for (see edgeworker.control)
        self.outcomes = {
            a: {"seq": 0, "started": 0.0, "ok": True, "message": ""} for a in control.ACTIONS
        }
        self.state_written: dict[str, Any] | None = None
        gunicorn_log = logging.getLogger("gunicorn.error")
        if not any(isinstance(f, _OwnWording) for f in gunicorn_log.filters):
            gunicorn_log.addFilter(_OwnWording())
        super().__init__(app)

    # ------------------------------------------------------------ start
    def start(self) -> None:
        """Bind, then create the zones, run ``init``, write the pid and state files.

        Raises ``StartError`` (nothing created, nothing left behind) when a listen address is
        busy or forbidden or another master owns the pid file."""
        cfg = self.app.ew_config
        other = Pidfile(self.cfg.pidfile).validate()
        if other and other != os.getpid():
            raise StartError(f"already running: master {other} (pid file {self.cfg.pidfile})")
        if not gunicorn_systemd.listen_fds(unset_environment=False):  # else: socket activation
            self.LISTENERS = open_listeners(cfg.listen_addresses(), self.cfg, self.log)
        logs.setup_error_log(cfg.main.error_log, cfg.main.log_level, cfg.main.error_log_format)
        self.app.log_warnings()
        self.zones = zones.Zones(os.getpid())
        self.zones.commit(*self.zones.open(cfg.shared_dict))
        runtime.shared._install(self.zones.dicts)
        runtime.worker.count = cfg.main.workers
        handlers.add_python_path(cfg.main.python_path)
        runtime.config = cfg
        try:
            run_init(cfg.main.init)
        except Exception:
            runtime.log.exception("init failed; edgeworker does not start")
            self.zones.close_all()
            sys.exit(1)
        # the metrics zone: created once, kept across reloads (its size is not reloadable)
        metrics.create_zone(os.getpid(), cfg.main.status_zone_size)
        metrics.master_started(os.getpid(), self.generation)
        balance.create()  # (mapped before the first fork: every worker shares it)
        if cfg.main.code_cache is False:
            runtime.log.warning("code_cache is off: handler modules are re-imported per request")
        # gunicorn announces READY=1 before any worker exists; we announce it once they accept
        notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
        try:
            super().start()
        except BaseException:
            self.zones.close_all()
            metrics.close_zone()
            raise
        finally:
            if notify_socket is not None:
                os.environ["NOTIFY_SOCKET"] = notify_socket
        self.write_state()  # the signal handlers are installed: the CLI may signal now

    # ------------------------------------------------------------ workers
    def prepare_worker(self, worker: EdgeWorker) -> None:
        """Before the fork: choose the worker id and open its readiness pipe."""
        used = {w.ew_id for w in self.WORKERS.values() if w.ew_generation == self.generation}
        wid = 0
        while wid in used:
            wid += 1
        worker.ew_id = wid
        worker.ew_generation = self.generation
        balance.reserve(wid)
        if (self.generation, wid) in self.spawned_ids:
            self.restarts[wid] = self.restarts.get(wid, 0) + 1
        self.spawned_ids.add((self.generation, wid))
        r, w = os.pipe()
        os.set_inheritable(r, False)
        os.set_inheritable(w, False)
        worker.ready_fd = w
        worker.ready_r = r

    def in_child(self, worker: EdgeWorker) -> None:
        """Right after the fork, in the worker: drop the master's ends of other pipes."""
        os.close(worker.ready_r)
        for fd in self.ready_pipes.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.ready_pipes = {}

    def spawn_worker(self) -> int:
        pid = super().spawn_worker()  # in the child this never returns
        worker = self.WORKERS[pid]
        os.close(worker.ready_fd)
        worker.ready_fd = -1
        self.ready_pipes[pid] = worker.ready_r
        metrics.worker_spawned(
            pid, worker.ew_id, worker.ew_generation, self.restarts.get(worker.ew_id, 0)
        )
        return pid

    def spawn_workers(self) -> None:
        for _ in range(self.num_workers - len(self._current_workers())):
            self.spawn_worker()

    def _current_workers(self) -> list[EdgeWorker]:
        return [w for w in self.WORKERS.values() if w.ew_generation == self.generation]

    def manage_workers(self) -> None:
        """Keep ``num_workers`` workers of the current generation; retire the rest.

        The first call (at start) waits until the workers are ready, then tells systemd."""
        current = self._current_workers()
        if len(current) < self.num_workers:
            self.spawn_workers()
        current = sorted(self._current_workers(), key=lambda w: w.ew_id)
        for w in current[self.num_workers :]:
            self.kill_worker(w.pid, signal.SIGTERM)
        if self.booting:
            ready = self.wait_ready(set(self.WORKERS), READY_TIMEOUT)
            self.booting = False
            runtime.log.info("edgeworker started: %d workers ready, pid %d", len(ready), self.pid)
            sdnotify.ready(f"edgeworker: {len(ready)} workers serving")
        self.write_state()

    # ------------------------------------------------------------ state file
    def state(self) -> dict[str, Any]:
        cfg = self.app.ew_config
        return {
            "pid": self.pid,
            "version": __version__,
            "config": self.app.config_path,
            "pid_file": self.pidfile.fname,
            "generation": self.generation,
            "workers": self.num_workers,
            "graceful_timeout": cfg.main.graceful_timeout,
            "shared_dicts": sorted(self.zones.dicts),
            **self.outcomes,
        }

    def write_state(self) -> None:
        """Write the state file beside the pid file when the state changed. A failure is
        logged once per change (the CLI then reports that it got no outcome)."""
        if self.pidfile is None:
            return
        doc = self.state()
        if doc == self.state_written:
            return
        self.state_written = doc
        path = control.state_path(self.pidfile.fname)
        try:
            control.write_state(path, doc)
        except OSError as exc:
            runtime.log.error("cannot write the state file %s: %s", path, exc)

    def record(self, action: str, started: float, ok: bool, message: str) -> None:
        """The outcome of ``action`` (begun at ``started``, monotonic), for the CLI."""
        seq = self.outcomes[action]["seq"] + 1
        self.outcomes[action] = {"seq": seq, "started": started, "ok": ok, "message": message}
        self.write_state()

    def wait_ready(self, pids: set[int], timeout: float) -> set[int]:
        """Wait until every pid in ``pids`` reported ready (or died, or timeout). Returns the
        pids that are ready."""
        deadline = time.monotonic() + timeout
        waiting = {pid for pid in pids if pid not in self.ready_pids}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            fds = {self.ready_pipes[pid]: pid for pid in waiting if pid in self.ready_pipes}
            if not fds:
                break
            readable, _, _ = select.select(list(fds), [], [], min(left, 0.2))
            for fd in readable:
                pid = fds[fd]
                data = os.read(fd, 64)
                self._close_ready(pid)
                if data:
                    self.ready_pids.add(pid)
                waiting.discard(pid)
            self._reap_quietly()
            waiting = {pid for pid in waiting if pid in self.WORKERS}
        return {pid for pid in pids if pid in self.ready_pids}

    def _close_ready(self, pid: int) -> None:
        fd = self.ready_pipes.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def _reap_quietly(self) -> None:
        try:
            self.reap_workers()
        except HaltServer as exc:
            if self.booting:
                raise
            runtime.log.error("%s", exc.reason)

    def reap_workers(self) -> None:
        try:
            super().reap_workers()
        except HaltServer:
            if self.halting:
                return
            if self.booting:
                self.halting = True
                raise
            # a worker that fails to boot after the start (respawn or reload) must not take
            # the server down: the error was logged by the worker; retry after a pause
            runtime.log.error("a worker failed to boot; retrying in 1 s")
            time.sleep(1.0)

    def worker_gone(self, worker: EdgeWorker) -> None:
        """A worker was reaped: recover the shared-dict locks it may have held."""
        self._close_ready(worker.pid)
        self.ready_pids.discard(worker.pid)
        metrics.worker_exited(worker.pid)
        for name, zone in self.zones.dicts.items():
            try:
                if zone.recover(worker.pid):
                    runtime.log.warning(
                        "shared dict %r: lock of dead worker %s recovered", name, worker.pid
                    )
            except Exception:
                runtime.log.exception(
                    "shared dict %r: recovery after worker %s failed", name, worker.pid
                )

    # ------------------------------------------------------------ reload
    def reload(self) -> None:
        """HUP: validate, re-run init with fresh code, start new workers, retire the old.

        The outcome (``reloaded: generation 4, 2 workers`` or ``reload refused: why``) goes to
        the state file, where ``edgeworker reload`` waits for it."""
        started = time.monotonic()
        sdnotify.reloading()
        refused = self._reload()
        if refused is None:
            message = f"reloaded: generation {self.generation}, {_workers(self.num_workers)}"
            self.record("reload", started, True, message)
            sdnotify.ready("edgeworker: reloaded")
        else:
            self.record("reload", started, False, "reload refused: " + refused)
            sdnotify.ready("reload failed; old configuration serving")

    def _reload(self) -> str | None:
        """The reload itself: None when the new generation serves, else why it was refused
        (logged; the old generation keeps serving)."""
        path = self.app.config_path
        problem = self._check_in_subprocess(path)
        if problem:
            runtime.log.error("reload failed, keeping the current configuration:\n%s", problem)
            return problem
        old_cfg, old_tls = self.app.ew_config, self.app.ew_tls
        try:
            new_cfg, new_tls = self.app._load()
        except ConfigError as exc:
            runtime.log.error("reload failed, keeping the current configuration:\n%s", exc)
            return str(exc)
        for warning in new_tls.warnings:
            runtime.log.warning("%s: %s", new_cfg.file, warning)
        if new_cfg.main.status_zone_size != old_cfg.main.status_zone_size:
            runtime.log.warning(
                "main.status_zone_size changed: the status zone keeps its size "
                "until the next restart"
            )
        old_listeners = self.LISTENERS
        new_listeners = old_listeners
        if new_cfg.listen_addresses() != old_cfg.listen_addresses():
            try:
                new_listeners = open_listeners(
                    new_cfg.listen_addresses(), self.cfg, self.log, old_listeners
                )
            except ListenError as exc:
                runtime.log.error("reload failed, keeping the current configuration: %s", exc)
                return str(exc)
        handlers.purge_user_modules(old_cfg.main.python_path)
        handlers.add_python_path(new_cfg.main.python_path)
        new_zones: dict[str, Any] = {}
        try:
            new_zones, new_sizes = self.zones.open(new_cfg.shared_dict)
            runtime.shared._install(new_zones)
            runtime.config = new_cfg
            run_init(new_cfg.main.init)
        except Exception as exc:
            runtime.log.exception("reload failed in init, keeping the current configuration")
            self.zones.abort(new_zones)
            runtime.shared._install(self.zones.dicts)
            runtime.config = old_cfg
            handlers.purge_user_modules(new_cfg.main.python_path)
            _close_unused(new_listeners, old_listeners)
            return f"init failed: {type(exc).__name__}: {exc} (traceback in the error log)"
        self.app.ew_config, self.app.ew_tls = new_cfg, new_tls
        self.app.do_load_config()
        self.setup(self.app)
        self.LISTENERS = new_listeners
        old_generation = self.generation
        self.generation += 1
        self.app.generation = self.generation
        self._stats["reloads"] += 1
        new_pids = set()
        for _ in range(self.num_workers):
            new_pids.add(self.spawn_worker())
        ready = self.wait_ready(new_pids, READY_TIMEOUT)
        if len(ready) < len(new_pids):
            runtime.log.error(
                "reload failed: %d of %d new workers did not become ready; old workers keep serving",
                len(new_pids) - len(ready),
                len(new_pids),
            )
            for pid in new_pids:
                if pid in self.WORKERS:
                    self.kill_worker(pid, signal.SIGKILL)
            self.generation = old_generation
            self.app.generation = old_generation
            self.app.ew_config, self.app.ew_tls = old_cfg, old_tls
            self.app.do_load_config()
            self.setup(self.app)
            self.LISTENERS = old_listeners
            _close_unused(new_listeners, old_listeners)
            self.zones.abort(new_zones)
            runtime.shared._install(self.zones.dicts)
            runtime.config = old_cfg
            return (
                f"{len(new_pids) - len(ready)} of {len(new_pids)} new workers did not become "
                "ready (see the error log); the old workers keep serving"
            )
        for w in list(self.WORKERS.values()):
            if w.ew_generation != self.generation:
                self.kill_worker(w.pid, signal.SIGTERM)
        self.zones.commit(new_zones, new_sizes)
        _close_unused(old_listeners, new_listeners)
        metrics.reloaded(self.generation)
        runtime.log.info("reloaded: generation %d serving", self.generation)
        return None

    def _check_in_subprocess(self, path: str) -> str | None:
        """Validate ``path`` and import every handler in a forked child, so that the imports
        never touch the master (fast: no interpreter start). Returns the errors, or None."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: check, report, exit without running any master cleanup
            status = 1
            try:
                os.close(r)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for sig in self.SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                from .check import check

                handlers.purge_user_modules(self.app.ew_config.main.python_path)
                _cfg, errors = check(path)
                os.write(w, "\n".join(errors).encode())  # FILE:LINE: path: cause
                status = 1 if errors else 0
            except BaseException as exc:  # noqa: BLE001 - report anything
                try:
                    os.write(w, f"{path}: config check failed: {exc!r}".encode())
                except OSError:
                    pass
            finally:
                os._exit(status)
        os.close(w)
        chunks = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 1.0)
            if ready:
                data = os.read(r, 65536)
                if not data:
                    break
                chunks.append(data)
        os.close(r)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by a concurrent reap_workers()
            status = 0 if not chunks else 256
        text = b"".join(chunks).decode(errors="replace").strip()
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and not text:
            return None
        return text or f"config check exited with status {status}"

    # ------------------------------------------------------------ signals & stop
    def handle_usr1(self) -> None:
        """USR1: reopen the error log here and the logs of every worker; the outcome goes to
        the state file. A log that cannot be reopened keeps the old descriptor (logged)."""
        started = time.monotonic()
        try:
            logs.reopen()
        except OSError as exc:
            message = f"reopen failed: {exc.filename}: {exc.strerror or exc}"
            runtime.log.error("%s; the old error log stays open", message)
            ok = False
        else:
            ok = True
        self.kill_workers(signal.SIGUSR1)
        if ok:
            message = f"reopened: master {self.pid} and {_workers(len(self.WORKERS))}"
        self.record("reopen", started, ok, message)

    def handle_term(self) -> None:
        sdnotify.stopping()
        raise StopIteration

    def handle_int(self) -> None:
        sdnotify.stopping()
        self.stop(False)
        raise StopIteration

    handle_quit = handle_int

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        self.halting = True
        try:
            super().halt(reason, exit_status)
        finally:
            self.zones.close_all()
            metrics.close_zone()
            if self.pidfile is not None:
                control.remove_state(control.state_path(self.pidfile.fname))
