"""edgeworker.sdnotify against a real AF_UNIX datagram socket and a real inherited listener."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgeworker import sdnotify

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def path_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch):
    name = f"edgeworker-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def fields(datagram: bytes) -> dict[str, str]:
    text = datagram.decode()
    assert text.endswith("\n")
    return dict(line.split("=", 1) for line in text.splitlines())


def test_ready_with_status_over_a_path_socket(path_socket):
    assert sdnotify.ready(status="2 workers accepting\non 127.0.0.1:8080") is True
    got = fields(path_socket.recv(4096))
    assert got == {"READY": "1", "STATUS": "2 workers accepting on 127.0.0.1:8080"}


def test_reloading_sends_monotonic_usec(abstract_socket):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = fields(abstract_socket.recv(4096))
    assert list(got) == ["RELOADING", "MONOTONIC_USEC"]
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= after


def test_reload_sequence_then_stop(abstract_socket):
    assert sdnotify.reloading("reloading configuration")
    assert sdnotify.ready("reloaded")
    assert sdnotify.stopping()
    assert sdnotify.status("draining 3 connections")
    messages = [fields(abstract_socket.recv(4096)) for _ in range(4)]
    assert messages[0]["RELOADING"] == "1" and messages[0]["STATUS"] == "reloading configuration"
    assert messages[1] == {"READY": "1", "STATUS": "reloaded"}
    assert messages[2] == {"STOPPING": "1"}
    assert messages[3] == {"STATUS": "draining 3 connections"}


def test_notify_raw_lines(path_socket):
    assert sdnotify.notify("STATUS=x", "MAINPID=42") is True
    assert path_socket.recv(4096) == b"STATUS=x\nMAINPID=42\n"


def test_unset_socket_is_silently_false(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.reloading() is False
    assert sdnotify.stopping() is False


def test_unreachable_or_unsupported_socket_is_false(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.ready() is False


def test_forged_lines_are_refused(path_socket):
    with pytest.raises(ValueError):
        sdnotify.notify("STATUS=ok\nREADY=1")
    with pytest.raises(ValueError):
        sdnotify.notify("READY")
    with pytest.raises(TypeError):
        sdnotify.notify(b"READY=1")
    path_socket.settimeout(0.1)
    with pytest.raises(TimeoutError):
        path_socket.recv(4096)  # nothing was sent


# -- socket activation ----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, socket, sys
    from edgeworker.sdnotify import listen_fds

    socks = listen_fds()
    report = {
        "count": len(socks),
        "env_left": [k for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if k in os.environ],
    }
    if socks:
        s = socks[0]
        report.update(fd=s.fileno(), family=int(s.family), type=int(s.type),
                      addr=list(s.getsockname()), inheritable=os.get_inheritable(s.fileno()))
        print(json.dumps(report), flush=True)
        conn, _ = s.accept()  # the very socket the parent bound
        conn.sendall(b"hello from fd 3")
        conn.close()
    else:
        print(json.dumps(report), flush=True)
    """
)


def run_child(tmp_path, listener: socket.socket, pid_expr: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    fd = listener.fileno()

    def to_fd3() -> None:
        os.dup2(fd, 3)  # inheritable by default

    env = dict(os.environ, PYTHONPATH=str(ROOT), LISTEN_FDS="1", LISTEN_FDNAMES="http")
    # the shell's $$ is the pid the exec'd python keeps: the LISTEN_PID systemd would set
    cmd = f'LISTEN_PID={pid_expr} exec "$0" "$1"'
    return subprocess.Popen(
        ["/bin/sh", "-c", cmd, sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=to_fd3,
        pass_fds=(3,),
    )


def test_listen_fds_takes_an_inherited_listener(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    child = run_child(tmp_path, listener, "$$")
    try:
        report = json.loads(child.stdout.readline())
        assert report == {
            "count": 1,
            "env_left": [],
            "fd": 3,
            "family": int(socket.AF_INET),
            "type": int(socket.SOCK_STREAM),
            "addr": ["127.0.0.1", port],
            "inheritable": False,
        }
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            assert conn.recv(100) == b"hello from fd 3"
        assert child.wait(timeout=30) == 0, child.stderr.read()
    finally:
        child.kill()
        child.wait()
        listener.close()


def test_listen_fds_ignores_fds_meant_for_another_pid(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    child = run_child(tmp_path, listener, "1")
    try:
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        assert json.loads(out) == {"count": 0, "env_left": []}  # and the env is cleaned anyway
    finally:
        listener.close()


def test_listen_fds_without_activation_is_empty(monkeypatch):
    monkeypatch.delenv("LISTEN_PID", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    assert sdnotify.listen_fds() == []
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "garbage")
    assert sdnotify.listen_fds() == []
    assert "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ
