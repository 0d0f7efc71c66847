"""The worker process: gevent hub, accept loops, connection greenlets, graceful exit.

The worker is a gunicorn ``Worker`` subclass, so the master (gunicorn's arbiter) supervises it
as any other worker (heartbeat, reaping). Order at boot, right after ``fork()``:

1. ``gevent.monkey.patch_all()`` and ``hub.reinit()`` — before any handler module is imported,
   so redis-py, sockets and ``time.sleep`` in handlers yield instead of blocking;
2. listeners re-wrapped as gevent sockets;
3. handler modules imported (``App``), timers installed, ``init_worker`` run;
4. the worker tells the master it is ready, then accepts.

Signals: TERM = graceful exit (stop accepting, finish in-flight requests, close idle
keep-alive connections, fire pending timers prematurely, run ``exit_worker``; at most
``graceful_timeout``); INT/QUIT = fast exit; USR1 = reopen logs; HUP, USR2, WINCH, TTIN and
TTOU sent to a worker by mistake are logged and ignored (the master owns them).
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import time
from functools import partial

from gunicorn.workers.base import Worker

from . import runtime
from .balance import DELAY, Balance
from .errors import Drain

IGNORED_SIGNALS = ("HUP", "USR2", "WINCH", "TTIN", "TTOU")


class EdgeWorker(Worker):
    """One edgeworker worker process (created by the master's arbiter before the fork)."""

    ew_id: int = 0
    ew_generation: int = 0
    ready_fd: int = -1  # write end of the readiness pipe (worker side)
    ready_r: int = -1  # read end (master side)

    # ------------------------------------------------------------------ boot
    def init_process(self) -> None:
        from gevent import hub, monkey

        monkey.patch_all()
        hub.reinit()
        sockets = []
        for s in self.sockets:
            sockets.append(socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach()))
        self.sockets = self.listeners = sockets
        super().init_process()

    def init_signals(self) -> None:
        import gevent
        from gevent.event import Event

        #: set by TERM: wakes the main loop of ``run`` at once
        self._stopping = Event()
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        gevent.signal_handler(signal.SIGTERM, self._graceful)
        gevent.signal_handler(signal.SIGQUIT, self._fast)
        gevent.signal_handler(signal.SIGINT, self._fast)
        gevent.signal_handler(signal.SIGUSR1, self._reopen)
        gevent.signal_handler(signal.SIGABRT, self._abort)
        for name in IGNORED_SIGNALS:
            signum = getattr(signal, "SIG" + name)
            gevent.signal_handler(signum, self._ignored, name)

    def load_wsgi(self) -> None:
        """Import the handlers and build the request pipeline (gunicorn calls this)."""
        from .handlers import add_python_path
        from .phases import App
        from .timers import Timers, install

        cfg = self.app.ew_config
        runtime.config = cfg
        runtime.worker.id = self.ew_id
        runtime.worker.count = cfg.main.workers
        runtime.worker.generation = self.app.generation
        add_python_path(cfg.main.python_path)
        self.edge = App(cfg, runtime.log)
        self.timers = Timers(cfg.main.max_pending_timers, cfg.main.max_running_timers, runtime.log)
        install(self.timers)
        self.wsgi = self.edge
        from .handlers import resolve

        for spec in cfg.main.init_worker:
            resolve(spec)()

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        import gevent
        from gevent.lock import Semaphore

        from .server import Connection

        self.connections: set = set()
        self.slots = Semaphore(self.cfg.worker_connections)
        from .status import metrics

        self.metrics = metrics.start_worker(self.edge, self.connections, self.timers)
        self.balance = Balance(self.ew_id, self.ew_generation)
        self.acceptors = []
        from .http2.schema import http2_addresses
        from .tls.schema import tls_addresses

        tls = tls_addresses(self.app.ew_config.server)
        h2 = http2_addresses(self.app.ew_config.server)
        contexts = self.app.ew_tls
        for sock in self.listeners:
            addr = sock.getsockname()
            key = (addr[0], addr[1]) if isinstance(addr, tuple) else ("unix:" + str(addr), 0)
            options: dict = {}
            if key in tls:  # its connections start with the handshake (in their greenlet)
                options["tls_contexts"] = contexts
            if key in h2:  # HTTP/2 after ALPN or the preface (h2 imported only then)
                from .server_h2 import serve as serve_h2

                options["h2"] = serve_h2
            conn_cls = partial(Connection, **options) if options else Connection
            self.acceptors.append(gevent.spawn(self._accept_loop, sock, key, conn_cls))
        # everything loaded so far lives as long as the worker: keep it out of the cyclic GC's
        # scans, so collections during requests stay short
        gc.collect()
        gc.freeze()
        self._signal_ready()
        runtime.log.debug("worker %s ready (pid %s)", self.ew_id, os.getpid())
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                runtime.log.warning("master %s is gone, worker %s exits", self.ppid, os.getpid())
                # as a TERM does: the accept loops end on the closed listeners instead of
                # retrying accept() on them without ever yielding
                self.alive = False
                break
            self._stopping.wait(1.0)  # (a TERM sets it: the exit starts at once)
        self._shutdown()

    def _accept_loop(self, sock: socket.socket, key: tuple, conn_cls) -> None:
        import gevent

        slots = self.slots
        app = self.edge
        connections = self.connections
        spawn = gevent.spawn
        counts = self.metrics  # accepted connections (None: metrics off)
        crowded = self.balance.crowded
        update = self.balance.update
        sleep = gevent.sleep
        warned = False
        while self.alive:
            if slots.locked() and not warned:
                runtime.log.warning(
                    "%d worker_connections are not enough, new connections wait",
                    self.cfg.worker_connections,
                )
                warned = True
            slots.acquire()
            if not self.alive:
                slots.release()
                return
            if crowded(len(connections)):
                sleep(DELAY)  # the other workers take the next connection first (balance.py)
            try:
                client, addr = sock.accept()
            except OSError as exc:
                slots.release()
                if not self.alive:
                    return
                if exc.errno in (24, 23):  # EMFILE / ENFILE
                    runtime.log.error("accept() failed: %s", exc)
                    gevent.sleep(0.1)
                continue
            warned = False
            if client.family != socket.AF_UNIX:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = conn_cls(client, addr, key, app)
            connections.add(conn)
            update(len(connections))
            if counts is not None:
                counts.accepted += 1
            spawn(self._serve, conn)

    def _serve(self, conn) -> None:
        try:
            conn.serve()
        finally:
            connections = self.connections
            connections.discard(conn)
            self.balance.update(len(connections))
            self.slots.release()

    def _signal_ready(self) -> None:
        """Tell the master that init_worker ran and the accept loops run."""
        fd = self.ready_fd
        if fd >= 0:
            try:
                os.write(fd, b"%d\n" % os.getpid())
            except OSError:
                pass
            os.close(fd)
            self.ready_fd = -1

    # ------------------------------------------------------------------ exit
    def _graceful(self) -> None:
        if self.alive:
            runtime.log.info("gracefully shutting down worker %s", self.ew_id)
        self.alive = False
        self._stopping.set()

    def _fast(self) -> None:
        runtime.worker._exiting = True
        self.alive = False
        runtime.log.info("exiting worker %s (fast)", self.ew_id)
        os._exit(0)

    def _abort(self) -> None:
        runtime.log.error("worker %s aborted by the master (timeout)", self.ew_id)
        os._exit(1)

    def _reopen(self) -> None:
        """USR1: reopen the error and access logs; one that cannot be reopened keeps its old
        descriptor (logged), and the other is reopened all the same."""
        from . import logs

        logs_ = [("error log", logs.reopen)]
        if self.edge.access_log is not None:
            logs_.append(("access log", self.edge.access_log.reopen))
        for what, reopen in logs_:
            try:
                reopen()
            except OSError as exc:
                runtime.log.error(
                    "worker %s: cannot reopen the %s %s: %s; the old one stays open",
                    self.ew_id,
                    what,
                    exc.filename,
                    exc.strerror,
                )

    def _ignored(self, name: str) -> None:
        runtime.log.warning(
            "worker %s (pid %s) got SIG%s, which is meant for the master (pid %s): ignored",
            self.ew_id,
            os.getpid(),
            name,
            self.ppid,
        )

    def _shutdown(self) -> None:
        """Graceful exit, bounded by graceful_timeout."""
        import gevent

        runtime.worker._exiting = True
        self.balance.leave()
        deadline = time.monotonic() + self.app.ew_config.main.graceful_timeout
        for sock in self.listeners:
            try:
                sock.close()
            except OSError:
                pass
        for g in self.acceptors:
            g.kill(block=False)
        # busy connections answer with Connection: close; idle keep-alive ones are woken up
        # and serve a request already on its way (with Connection: close) before closing
        for conn in list(self.connections):
            conn.closing = True
            if not conn.busy and conn.greenlet is not None:
                conn.greenlet.kill(Drain, block=False)
        self.timers.shutdown(max(0.0, deadline - time.monotonic()))
        while self.connections and time.monotonic() < deadline:
            self.notify()
            gevent.sleep(0.05)
        if self.connections:
            runtime.log.warning(
                "worker %s: graceful_timeout reached with %d connections open",
                self.ew_id,
                len(self.connections),
            )
        if self.metrics is not None:
            self.metrics.flush()  # the last counts of this worker
        cfg = self.app.ew_config
        from .handlers import resolve

        for spec in cfg.main.exit_worker:
            try:
                resolve(spec)()
            except Exception:
                runtime.log.exception("exit_worker %s failed", spec)
        sys.stdout.flush()
