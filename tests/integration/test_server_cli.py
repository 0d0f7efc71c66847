"""The command line and process model, against real `edgeworker` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ..support import (
    EDGEWORKER,
    ROOT,
    Server,
    free_port,
    read_all,
    status_of,
    wait_port,
    wait_until,
)

APP = '''
import edgeworker

def hello(req):
    return "hello v1\\n"

def slow(req):
    edgeworker.sleep(float(req.args.get("t", "1")))
    return "slow done\\n"

def incr(req):
    return str(edgeworker.shared["counters"].incr("k", 1, init=0))

def who(req):
    return {"id": edgeworker.worker.id, "pid": edgeworker.worker.pid, "count": edgeworker.worker.count}
'''

CONF = '''
[main]
graceful_timeout = "5s"

[shared_dict]
counters = "256k"

[[server]]
listen = ["127.0.0.1:{port}"]

  [[server.location]]
  match = "= /hello"
  content = "app:hello"

  [[server.location]]
  match = "= /slow"
  content = "app:slow"

  [[server.location]]
  match = "= /incr"
  content = "app:incr"

  [[server.location]]
  match = "= /who"
  content = "app:who"
'''


def test_check_success_and_failure(tmp_path):
    srv = Server(tmp_path, CONF, {"app.py": APP})
    r = srv.cli("check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"configuration file {srv.config} test is successful"
    bad = Server(tmp_path / "bad", CONF.replace('content = "app:hello"', 'content = "app:nope"'), {"app.py": APP})
    r = bad.cli("check")
    assert r.returncode == 1
    assert "server[0].location[0].content" in r.stderr
    assert "nope" in r.stderr
    assert str(bad.config) in r.stderr


def test_run_refuses_invalid_config_with_path(tmp_path):
    srv = Server(tmp_path, CONF.replace("[main]", "[main]\nbogus_key = 1"), {"app.py": APP})
    r = subprocess.run([*EDGEWORKER, "run", "-c", str(srv.config)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "bogus_key" in r.stderr and str(srv.config) in r.stderr


def test_config_errors_name_file_and_line(tmp_path):
    conf = tmp_path / "ew.toml"
    conf.write_text(
        '[main]\nworkers = 1\n\n[[server]]\nlisten = "127.0.0.1:${EW_TEST_PORT}"\n'
        '  [[server.location]]\n  match = "/"\n  conten = "app:hello"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "EW_TEST_PORT"}
    r = subprocess.run([*EDGEWORKER, "check", "-c", str(conf)], capture_output=True, text=True,
                       timeout=60, env={**env, "EW_TEST_PORT": "8089"})
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f'{conf}:8: server[0].location[0]: unknown key "conten" (did you mean "content"?)',
        f"configuration file {conf} test failed",
    ]
    # an unset variable stops run before anything starts
    r = subprocess.run([*EDGEWORKER, "run", "-c", str(conf)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f'{conf}:5: server[0].listen: environment variable "EW_TEST_PORT" is not set '
        "(give a default with ${EW_TEST_PORT:-value})"
    )


def test_bundled_default_config(tmp_path):
    """The bundled config: welcome page (with a shared-dict visit counter) and /hello."""
    src = ROOT / "edgeworker" / "default"
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    port = free_port()
    conf = (tmp_path / "edgeworker.toml").read_text()
    conf = conf.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    conf = conf.replace("[main]\n", f'[main]\npid_file = "{tmp_path}/pid"\n', 1)
    (tmp_path / "edgeworker.toml").write_text(conf)
    proc = subprocess.Popen([*EDGEWORKER, "run", "-c", str(tmp_path / "edgeworker.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_port(port, proc=proc)
        import http.client

        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        page = r.read().decode()
        assert r.status == 200 and "Welcome to edgeworker" in page
        assert r.getheader("content-type") == "text/html; charset=utf-8"
        c.request("GET", "/")
        page2 = c.getresponse().read().decode()
        assert "<b>1</b> visits" in page and "<b>2</b> visits" in page2
        c.request("GET", "/hello")
        assert c.getresponse().read() == b"hello, world\n"
        c.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def test_bundled_config_passes_check():
    r = subprocess.run([*EDGEWORKER, "check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stdout


def test_workers_have_stable_ids_and_respawn_keeps_id(server):
    srv = server(CONF, {"app.py": APP}, workers=2)
    ids = {}
    for _ in range(30):
        doc = json.loads(srv.get("/who")[2])
        ids[doc["pid"]] = doc["id"]
        assert doc["count"] == 2
    assert set(ids.values()) <= {0, 1}
    pids = srv.worker_pids()
    assert len(pids) == 2
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = srv.worker_pids()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    now = srv.worker_pids()
    assert len(now) == 2 and victim not in now
    seen = {}
    for _ in range(40):
        doc = json.loads(srv.get("/who")[2])
        seen[doc["pid"]] = doc["id"]
    assert sorted(seen.values()) == [0, 1] or set(seen.values()) <= {0, 1}
    assert set(seen) <= set(now)


def test_signals_sent_to_a_worker_by_mistake_are_ignored(server):
    srv = server(CONF, {"app.py": APP}, workers=1)
    (pid,) = srv.worker_pids()
    for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU):
        os.kill(pid, sig)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and srv.errors().count("meant for the master") < 5:
        time.sleep(0.1)
    assert srv.errors().count("meant for the master") == 5, srv.errors()
    assert srv.worker_pids() == [pid]
    assert srv.get("/hello")[0] == 200


def test_reload_serves_new_code_and_keeps_shared_dict(server):
    srv = server(CONF, {"app.py": APP}, workers=2)
    assert srv.get("/hello")[2] == b"hello v1\n"
    assert srv.get("/incr")[2] == b"1"
    (srv.dir / "app.py").write_text(APP.replace("hello v1", "hello v2"))
    r = srv.cli("reload")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 5
    body = b""
    while time.monotonic() < deadline:
        body = srv.get("/hello")[2]
        if body == b"hello v2\n":
            break
        time.sleep(0.05)
    assert body == b"hello v2\n"
    assert srv.get("/incr")[2] == b"2"  # same zone, data kept


def test_reload_with_broken_config_keeps_serving(server):
    srv = server(CONF, {"app.py": APP}, workers=1)
    pids = srv.worker_pids()
    srv.config.write_text(srv.config.read_text().replace('content = "app:hello"', 'content = "app:missing"'))
    r = srv.cli("reload")
    assert r.returncode == 1
    assert "server[0].location[0].content" in r.stderr
    # a HUP sent directly (bypassing the CLI's own check) is refused by the master too
    os.kill(srv.master_pid, signal.SIGHUP)
    srv.wait_log("reload failed", timeout=10)
    assert srv.get("/hello")[2] == b"hello v1\n"
    assert srv.worker_pids() == pids
    assert "reload failed" in srv.errors()


def test_graceful_stop_finishes_inflight_request(server):
    srv = server(CONF, {"app.py": APP}, workers=1)
    result = {}

    def slow():
        result["resp"] = srv.get("/slow?t=1")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    r = srv.cli("stop")
    assert r.returncode == 0, r.stderr
    t.join(10)
    assert result["resp"][0] == 200 and result["resp"][2] == b"slow done\n"
    assert srv.proc.wait(10) == 0
    assert not srv.pid_file.exists()


def test_stop_now_is_fast(server):
    srv = server(CONF, {"app.py": APP}, workers=1)
    threading.Thread(target=lambda: _swallow(srv.get, "/slow?t=5"), daemon=True).start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert srv.cli("stop", "--now").returncode == 0
    srv.proc.wait(10)
    assert time.monotonic() - t0 < 4


def _swallow(fn, *a):
    try:
        fn(*a)
    except Exception:
        pass


def access_text(path) -> str:
    return path.read_text() if path.exists() else ""


def test_reopen_logs(server):
    srv = server(CONF, {"app.py": APP}, workers=1)
    srv.get("/hello")
    wait_until(lambda: access_text(srv.access_log), lambda text: "GET /hello" in text,
               what="the first request in the access log")
    rotated = srv.access_log.with_suffix(".1")
    srv.access_log.rename(rotated)
    srv.get("/hello")  # still written to the renamed file
    assert srv.cli("reopen").returncode == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not srv.access_log.exists():
        srv.get("/hello")
        time.sleep(0.1)
    srv.get("/hello")
    wait_until(lambda: access_text(srv.access_log), lambda text: "GET /hello" in text,
               what="a request in the reopened access log")
    assert srv.access_log.exists() and "GET /hello" in srv.access_log.read_text()
    assert rotated.read_text().count("GET /hello") >= 2


def test_shm_command_lists_zones(server):
    srv = server(CONF, {"app.py": APP}, workers=1)
    srv.get("/incr")
    r = srv.cli("shm")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["name", "capacity", "used", "free", "entries", "evictions"]
    row = lines[1].split()
    assert row[0] == "counters" and int(row[4]) == 1


def test_commands_without_running_server_fail_clearly(tmp_path):
    srv = Server(tmp_path, CONF, {"app.py": APP})
    for cmd in (["stop"], ["reopen"], ["shm"], ["reload"]):
        r = srv.cli(*cmd)
        assert r.returncode == 1
        assert "not found" in r.stderr and str(srv.config) in r.stderr


def test_worker_connections_is_enforced(server):
    conf = CONF.replace("[main]", "[main]\nworker_connections = 2")
    srv = server(conf, {"app.py": APP}, workers=1)
    held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
    for s in held:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(s.recv(65536)) == 200
    extra = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    extra.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    extra.settimeout(0.8)
    with pytest.raises(TimeoutError):
        extra.recv(100)  # not served while both slots are taken
    held[0].close()
    assert status_of(read_all(extra, 5)) == 200
    extra.close()
    held[1].close()


def test_two_listen_addresses(server, tmp_path):
    port2 = free_port()
    conf = CONF.replace('listen = ["127.0.0.1:{port}"]', f'listen = ["127.0.0.1:{{port}}", "127.0.0.1:{port2}"]')
    srv = server(conf, {"app.py": APP}, workers=1)
    wait_port(port2)
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port2, timeout=5)
    c.request("GET", "/hello")
    assert c.getresponse().read() == b"hello v1\n"
    assert srv.get("/hello")[0] == 200


def test_python_m_edgeworker_and_console_script_agree():
    r1 = subprocess.run([*EDGEWORKER, "--help"], capture_output=True, text=True)
    exe = Path(EDGEWORKER[0]).parent / "edgeworker"
    r2 = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r1.returncode == 0 and "reload" in r1.stdout
    assert r2.returncode == 0 and r1.stdout.replace("__main__.py", "edgeworker") == r2.stdout
