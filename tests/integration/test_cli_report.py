"""What the command line reports: --version, the outcome of reload/stop/reopen, the running
master's own config, listen errors; against real `edgeworker` processes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import edgeworker
from edgeworker import control

from ..support import EDGEWORKER, Server, free_port, require_tool, wait_port, wait_until
from .test_server_cli import APP as SERVER_CLI_APP
from .test_server_cli import CONF, _swallow

# the server of test_server_cli, with an init hook that fails
APP = (
    SERVER_CLI_APP
    + """
def boom():
    raise RuntimeError("no database")
"""
)


def _dev_shm_of(pid: int) -> list[str]:
    """The shared-memory segments and semaphores named after master ``pid``."""
    return sorted(
        n
        for n in os.listdir("/dev/shm")
        if n.startswith((f"edgeworker.{pid}.", f"sem.edgeworker.{pid}."))
    )


def test_version_has_one_source():
    want = f"edgeworker {edgeworker.__version__}\n"
    assert edgeworker.__version__ == importlib.metadata.version("edgeworker")
    for flag in ("--version", "-V"):
        r = subprocess.run([*EDGEWORKER, flag], capture_output=True, text=True, timeout=30)
        assert (r.returncode, r.stdout, r.stderr) == (0, want, "")


# a handler module that can be imported in the shell, not in the server's environment
# (EDGE_ROLE=edge): reload checks in the master's environment, as the master will
HOSTONLY = """
import os
if os.environ.get("EDGE_ROLE") == "edge":
    raise ImportError("hostonly is for the staging host")
def hello(req):
    return "staging"
"""


def test_reload_reports_the_outcome_and_a_refusal_keeps_serving(server):
    srv = server(
        CONF, {"app.py": APP, "hostonly.py": HOSTONLY}, workers=2, env={"EDGE_ROLE": "edge"}
    )
    r = srv.cli("reload")
    assert (r.returncode, r.stdout, r.stderr) == (0, "reloaded: generation 1, 2 workers\n", "")
    pids = wait_until(srv.worker_pids, lambda p: len(p) == 2, what="generation 0 gone")
    conf = srv.config.read_text()
    srv.config.write_text(conf.replace('content = "app:hello"', 'content = "hostonly:hello"'))
    assert "EDGE_ROLE" not in os.environ
    r = srv.cli("reload")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"{srv.config}:")
    assert "server[0].location[0].content" in r.stderr
    assert "hostonly is for the staging host" in r.stderr
    assert r.stderr.endswith(f"configuration file {srv.config} test failed; nothing reloaded\n")
    # not signalled: the master's state shows no reload since generation 1
    state = json.loads((srv.dir / "edgeworker.pid.json").read_text())
    assert (state["generation"], state["reload"]["seq"]) == (1, 1)
    # a HUP sent by hand past the CLI's check: the master refuses and records why
    os.kill(srv.master_pid, signal.SIGHUP)
    state = wait_until(
        lambda: json.loads((srv.dir / "edgeworker.pid.json").read_text()),
        lambda doc: doc["reload"]["seq"] == 2,
        what="the refused reload in the state file",
    )
    assert state["reload"]["ok"] is False and state["generation"] == 1
    message = state["reload"]["message"]
    assert message.startswith(f"reload refused: {srv.config}:"), message
    assert "server[0].location[0].content" in message and "staging host" in message
    assert srv.get("/hello")[2] == b"hello v1\n" and srv.worker_pids() == pids
    srv.config.write_text(conf)
    # the CLI's check passes (it runs no init), the master's reload fails in init: the CLI
    # reports the master's reason, and generation 1 serves on
    (srv.dir / "app.py").write_text(APP.replace("hello v1", "hello v2"))
    srv.config.write_text(
        srv.config.read_text().replace("[main]\n", '[main]\ninit = ["app:boom"]\n', 1)
    )
    r = srv.cli("reload")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        "reload refused: init failed: RuntimeError: no database (traceback in the error log)\n"
    )
    assert srv.get("/hello")[2] == b"hello v1\n"
    assert srv.worker_pids() == pids
    # a listen address that is taken: refused at once, no retry loop, generation 1 serves
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = busy.getsockname()[1]
    srv.config.write_text(
        srv.config.read_text()
        .replace('init = ["app:boom"]\n', "")
        .replace(
            f'listen = ["127.0.0.1:{srv.port}"]',
            f'listen = ["127.0.0.1:{srv.port}", "127.0.0.1:{busy_port}"]',
        )
    )
    t0 = time.monotonic()
    r = srv.cli("reload")
    assert r.returncode == 1, r.stdout
    assert (
        r.stderr
        == f"reload refused: cannot listen on 127.0.0.1:{busy_port}: address already in use\n"
    )
    assert time.monotonic() - t0 < 5
    assert srv.get("/hello")[2] == b"hello v1\n" and srv.worker_pids() == pids
    # freed: the reload adds the address and keeps the first listener
    busy.close()
    r = srv.cli("reload")
    assert (r.returncode, r.stdout) == (0, "reloaded: generation 2, 2 workers\n"), r.stderr
    wait_port(busy_port)
    # the old workers stop accepting when they handle their TERM, a moment later
    wait_until(
        lambda: srv.get("/hello")[2],
        lambda body: body == b"hello v2\n",
        what="generation 2 serving",
    )
    # the master's own refusal of an invalid config (a HUP sent by hand, past the CLI's check)
    # is recorded all the same
    srv.config.write_text(
        srv.config.read_text().replace('content = "app:hello"', 'content = "app:nope"')
    )
    r = srv.cli("reload")
    assert (
        r.returncode == 1
        and "server[0].location[0].content" in r.stderr
        and "nothing reloaded" in r.stderr
    )
    failed = srv.errors().count("reload failed")
    os.kill(srv.master_pid, signal.SIGHUP)
    srv.wait_log("reload failed", count=failed + 1)
    assert srv.get("/hello")[2] == b"hello v2\n"
    # start, reloads, a worker crash and a stop, all in edgeworker's own words
    os.kill(srv.worker_pids()[0], signal.SIGKILL)
    wait_until(srv.worker_pids, lambda p: len(p) == 2, what="the crashed worker respawned")
    master = srv.master_pid
    r = srv.cli("stop")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"stopped: master {master}\n", "")
    assert srv.proc.wait(10) == 0
    out = srv.output()
    assert f"edgeworker {edgeworker.__version__} starting, master pid {master}" in out
    assert "gunicorn" not in out.lower(), out


def test_stop_waits_bounded_and_says_why_it_cannot(server):
    srv = server(CONF, {"app.py": APP}, workers=1)
    master = srv.master_pid
    threading.Thread(target=lambda: _swallow(srv.get, "/slow?t=3"), daemon=True).start()
    time.sleep(0.3)
    t0 = time.monotonic()
    r = srv.cli("stop", "--timeout", "0.5")  # the slow request holds the graceful stop
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"master {master} still running after 0.5 s (see its error log)\n"
    assert time.monotonic() - t0 < 5
    assert srv.proc.wait(15) == 0
    r = srv.cli("stop")
    assert r.returncode == 1
    assert r.stderr == f"no running master: {srv.pid_file} not found (pid_file of {srv.config})\n"
    dead = subprocess.Popen(["true"])
    dead.wait()
    srv.pid_file.write_text(f"{dead.pid}\n")
    for cmd in ("stop", "reload", "reopen", "shm"):
        r = srv.cli(cmd)
        assert r.returncode == 1, cmd
        assert r.stderr == (
            f"master {dead.pid} is not running (stale pid file {srv.pid_file}) (pid_file of {srv.config})\n"
        )


def test_reopen_reports_and_survives_a_log_it_cannot_open(tmp_path):
    srv = Server(tmp_path, CONF, {"app.py": APP}, workers=1)
    logs = tmp_path / "logs"
    logs.mkdir()
    srv.config.write_text(
        srv.config.read_text().replace(str(srv.error_log_file), str(logs / "error.log"))
    )
    srv.error_log_file = logs / "error.log"
    srv.start()
    try:
        r = srv.cli("reopen")
        assert (r.returncode, r.stdout, r.stderr) == (
            0,
            f"reopened: master {srv.master_pid} and 1 worker\n",
            "",
        )
        shutil.rmtree(logs)  # the error log's folder is gone: the master cannot reopen it
        r = srv.cli("reopen")
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr == f"reopen failed: {logs / 'error.log'}: No such file or directory\n"
        assert srv.proc.poll() is None and srv.get("/hello")[0] == 200
        r = srv.cli("shm")
        assert r.returncode == 0 and r.stdout.splitlines()[1].split()[0] == "counters"
    finally:
        srv.stop()


def test_without_c_the_running_masters_own_config(tmp_path):
    """No -c: the master of the default pid file, checked against the config it runs (not the
    bundled one). The default pid file is /run/edgeworker.pid for root: the test gives the
    master and the CLI a /run of their own (a mount namespace); other users get
    $XDG_RUNTIME_DIR."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    srv = Server(tmp_path / "srv", CONF, {"app.py": APP}, workers=1)
    conf = srv.config.read_text().replace(f'pid_file = "{srv.pid_file}"\n', "")
    srv.config.write_text(conf)
    pid_file = run_dir / "edgeworker.pid"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if os.geteuid() == 0:
        unshare = require_tool("unshare", "util-linux")
        nsenter = require_tool("nsenter", "util-linux")
        start = [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /run && exec "$@"',
            str(run_dir),
        ]
    else:
        env["XDG_RUNTIME_DIR"] = str(run_dir)
        start = []
    log = open(srv.dir / "stdout.log", "wb")
    proc = subprocess.Popen(
        [*start, *EDGEWORKER, "run", "-c", str(srv.config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        enter = [nsenter, "--target", str(proc.pid), "--mount", "--"] if start else []
        return subprocess.run(
            [*enter, *EDGEWORKER, *args], capture_output=True, text=True, env=env, timeout=60
        )

    try:
        wait_port(srv.port, proc=proc)
        wait_until(
            lambda: pid_file.exists() and (run_dir / "edgeworker.pid.json").exists(),
            what="the pid and state files in the default place",
        )
        assert int(pid_file.read_text()) == proc.pid
        r = cli("reload")
        assert (r.returncode, r.stdout, r.stderr) == (0, "reloaded: generation 1, 1 worker\n", "")
        # an edit that breaks the running config: reload checks that file, not the bundled one
        srv.config.write_text(conf.replace('content = "app:hello"', 'content = "app:nope"'))
        r = cli("reload")
        assert r.returncode == 1 and f"{srv.config}:" in r.stderr
        assert "server[0].location[0].content" in r.stderr
        assert f"configuration file {srv.config} test failed; nothing reloaded" in r.stderr
        srv.config.write_text(conf)
        # -c naming another file than the running master's: refused, nothing signalled
        other = srv.dir / "other.toml"
        other.write_text(conf)
        for cmd in ("reload", "stop", "reopen", "shm"):
            r = cli(cmd, "-c", str(other))
            assert r.returncode == 1, cmd
            assert r.stderr == (
                f"{other} is not the config of the running master {proc.pid}: it runs {srv.config} "
                f"(pid file /run/edgeworker.pid); name that file with -c, or leave -c out\n"
                if start
                else f"{other} is not the config of the running master {proc.pid}: it runs {srv.config} "
                f"(pid file {pid_file}); name that file with -c, or leave -c out\n"
            )
        r = cli("reload", "-c", str(srv.config))
        assert (r.returncode, r.stdout) == (0, "reloaded: generation 2, 1 worker\n"), r.stderr
        r = cli("stop")
        assert (r.returncode, r.stdout, r.stderr) == (0, f"stopped: master {proc.pid}\n", "")
        assert proc.wait(10) == 0
        assert not pid_file.exists() and not (run_dir / "edgeworker.pid.json").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def _run_refused(
    conf: str, prefix: list[str], tmp_path
) -> tuple[subprocess.CompletedProcess, int, float]:
    """``edgeworker run`` on ``conf``, expected to fail at once: (result, pid, seconds)."""
    srv = Server(tmp_path, conf, {"app.py": APP}, workers=1)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*prefix, *EDGEWORKER, "run", "-c", str(srv.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=30)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert not srv.pid_file.exists()
    return r, proc.pid, time.monotonic() - t0


def test_busy_listen_address_is_one_line_at_once(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r, pid, took = _run_refused(CONF.replace("{port}", str(port)), [], tmp_path)
    finally:
        busy.close()
    assert (r.returncode, r.stdout, r.stderr) == (
        1,
        "",
        f"cannot listen on 127.0.0.1:{port}: address already in use\n",
    )
    assert took < 4  # no retry loop (gunicorn retries five times, a second apart)
    assert _dev_shm_of(pid) == []


def test_forbidden_listen_address_is_one_line_at_once(tmp_path):
    """A port below 1024 without CAP_NET_BIND_SERVICE: root gives the capability up first."""
    port = 81
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        unprivileged = int(f.read())
    if os.geteuid() == 0:
        setpriv = require_tool("setpriv", "util-linux")
        prefix = [setpriv, "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service", "--"]
    elif port < unprivileged:
        prefix = []
    else:
        pytest.skip(
            f"any user may bind port {port} here (ip_unprivileged_port_start = {unprivileged})"
        )
    r, pid, took = _run_refused(CONF.replace("{port}", str(port)), prefix, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (
        1,
        "",
        f"cannot listen on 127.0.0.1:{port}: permission denied\n",
    )
    assert took < 4
    assert _dev_shm_of(pid) == []


def test_second_master_on_the_same_pid_file_is_refused(server, tmp_path):
    srv = server(CONF, {"app.py": APP}, workers=1)
    text = srv.config.read_text().replace(f"127.0.0.1:{srv.port}", f"127.0.0.1:{free_port()}")
    second = tmp_path / "second.toml"
    second.write_text(text)
    proc = subprocess.run(
        [*EDGEWORKER, "run", "-c", str(second)], capture_output=True, text=True, timeout=30
    )
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"already running: master {srv.master_pid} (pid file {srv.pid_file})\n"
    assert srv.get("/hello")[0] == 200


def test_workers_exit_when_the_master_is_killed(server):
    """A worker whose master died (SIGKILL) exits within seconds, without spinning on its
    closed listeners."""
    srv = server(CONF, {"app.py": APP}, workers=1)
    master = srv.master_pid
    (worker,) = srv.worker_pids()
    try:
        os.kill(master, signal.SIGKILL)
        srv.proc.wait(5)
        wait_until(
            lambda: control.process_alive(worker),
            lambda alive: not alive,
            timeout=10,
            what=f"worker {worker} gone after its master {master} was killed",
        )
    finally:  # what only the killed master would have freed
        for name in _dev_shm_of(master):
            os.unlink(f"/dev/shm/{name}")
