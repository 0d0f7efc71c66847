"""``ssl_certificate_by``: a handler chooses the certificate of each TLS handshake (real
``edgeworker run`` processes, certificates made at test time, Python ``ssl`` clients)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from ..support import require_tool
from .test_tls import client_context, https_get

HANDLERS = """
import os

import gevent

from edgeworker.tls import Certificate

DIR = {dir!r}
FIXED = Certificate(os.path.join(DIR, "fixed.example.crt"), os.path.join(DIR, "fixed.example.key"))
SEEN = []


def by_name(server_name, client):
    if server_name == "boom.example":
        raise RuntimeError("no certificate for you")
    if server_name == "bad.example":
        return 42
    if server_name == "gone.example":
        return (os.path.join(DIR, "gone.crt"), os.path.join(DIR, "gone.key"))
    if server_name == "slow.example":
        gevent.sleep(30)
    if server_name == "nap.example":
        gevent.sleep(1.5)
        return None
    if server_name == "fixed.example":
        return FIXED
    if server_name == "client.example":
        # the client's address, seen by the function: answered with the configured certificate
        assert client.remote_addr == "127.0.0.1" and client.server_port > 0, client
        return None
    if server_name is None:
        return None
    cert = os.path.join(DIR, server_name + ".crt")
    if os.path.exists(cert):
        return cert, os.path.join(DIR, server_name + ".key")
    return None


def none(server_name, client):
    return None
"""


def _config(ca_default, spec: str = "app:by_name", extra: str = "") -> str:
    return f"""
[[server]]
listen = ["127.0.0.1:{{port}} ssl"]
server_name = "_"
ssl_certificate = "{ca_default.cert}"
ssl_certificate_key = "{ca_default.key}"
ssl_certificate_by = "{spec}"
ssl_handshake_timeout = "2s"
{extra}
  [[server.location]]
  match = "/"
  return = {{{{ status = 200, body = "ok $ssl_server_name" }}}}
"""


@pytest.fixture
def picked(server, certs):
    ca = certs.ca()
    folder = certs.folder
    ca.server(["one.example"], file="one.example")
    ca.server(["two.example"], file="two.example")
    ca.server(["fixed.example"], file="fixed.example")
    default = ca.server(["default.example", "client.example", "nap.example"], file="default")
    srv = server(_config(default), {"app.py": HANDLERS.format(dir=str(folder))})
    return srv, ca


def _cn(port: int, ca, sni: str | None) -> str:
    status, body, subject = https_get(port, "/", client_context(ca), sni)
    assert status == 200, body
    return subject["commonName"]


def test_sni_names_pick_certificates_from_a_folder(picked):
    srv, ca = picked
    # verified by the client against server_hostname: each name gets its own certificate
    assert _cn(srv.port, ca, "one.example") == "one.example"
    assert _cn(srv.port, ca, "two.example") == "two.example"
    assert _cn(srv.port, ca, "one.example") == "one.example"  # (the cached context)
    assert _cn(srv.port, ca, "fixed.example") == "fixed.example"  # a Certificate object
    # None: the configured certificate (a name with no file, no SNI)
    assert _cn(srv.port, ca, "default.example") == "default.example"
    assert _cn(srv.port, ca, "client.example") == "default.example"
    assert _cn(srv.port, ca, None) == "default.example"


def test_a_certificate_file_replaced_is_read_again(picked, certs):
    srv, ca = picked
    assert _cn(srv.port, ca, "one.example") == "one.example"
    first = https_get(srv.port, "/", client_context(ca), "one.example")
    time.sleep(0.01)  # (a later mtime)
    ca.server(["one.example", "renewed.example"], file="one.example")
    ctx = client_context(ca)
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="one.example") as tls:
        sans = [v for k, v in tls.getpeercert()["subjectAltName"] if k == "DNS"]
    assert "renewed.example" in sans
    assert first[0] == 200


@pytest.mark.parametrize(
    ("sni", "reason"),
    [
        ("boom.example", "raised RuntimeError: no certificate for you"),
        ("bad.example", "returned int 42: expected None, (cert path, key path)"),
        ("gone.example", "gone.crt"),
    ],
)
def test_a_failing_function_fails_that_handshake_only(picked, sni, reason):
    srv, ca = picked
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        https_get(srv.port, "/", client_context(ca), sni)
    srv.wait_log("server[0].ssl_certificate_by failed for server name " + sni)
    line = [x for x in srv.errors().splitlines() if "ssl_certificate_by failed" in x][-1]
    assert "[error]" in line and reason in line, line
    assert _cn(srv.port, ca, "one.example") == "one.example"


def test_a_slow_function_is_bounded_by_the_handshake_timeout(picked):
    srv, ca = picked
    start = time.monotonic()
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        https_get(srv.port, "/", client_context(ca), "slow.example", timeout=10)
    took = time.monotonic() - start
    assert 1.5 < took < 5.0, took
    srv.wait_log("timed out in the TLS handshake (ssl_certificate_by)")


def test_a_cooperative_wait_inside_does_not_block_other_connections(picked):
    srv, ca = picked
    done: dict[str, float] = {}

    def slow() -> None:
        start = time.monotonic()
        assert _cn(srv.port, ca, "nap.example") == "default.example"
        done["nap"] = time.monotonic() - start

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)  # the nap is under way in the worker's only process
    start = time.monotonic()
    for _ in range(3):
        assert _cn(srv.port, ca, "two.example") == "two.example"
    fast = time.monotonic() - start
    t.join(10)
    assert fast < 1.0, fast
    assert done["nap"] >= 1.4


def test_sessions_made_with_a_chosen_certificate_resume_on_any_worker(server, certs, tmp_path):
    """The connection starts with the server's own context (made in the master, shared by
    the workers) and switches to the chosen certificate's: the session and its ticket are
    the server context's, so a session resumes on any worker."""
    openssl = require_tool("openssl", "openssl")
    ca = certs.ca()
    ca.server(["one.example"], file="one.example")
    ca.server(["fixed.example"], file="fixed.example")
    default = ca.server(["default.example"], file="default")
    srv = server(
        "[http]\naccess_log_format = '$ssl_session_reused|$ssl_server_name|$pid'\n"
        + _config(default),
        {"app.py": HANDLERS.format(dir=str(certs.folder))},
        workers=2,
    )
    sess = tmp_path / "session.pem"
    request = b"GET / HTTP/1.1\r\nHost: one.example\r\nConnection: close\r\n\r\n"

    def s_client(*args: str) -> str:
        return subprocess.run(
            [
                openssl,
                "s_client",
                "-connect",
                f"127.0.0.1:{srv.port}",
                "-servername",
                "one.example",
                "-CAfile",
                str(ca.path),
                "-verify_return_error",
                "-ign_eof",
                *args,
            ],
            input=request,
            capture_output=True,
            timeout=10,
        ).stdout.decode(errors="replace")

    first = s_client("-sess_out", str(sess))
    assert "New, TLSv1.3" in first and "ok one.example" in first
    assert "CN = one.example" in first or "CN=one.example" in first
    n = 0
    while n < 40:
        out = s_client("-sess_in", str(sess))
        n += 1
        assert "Reused, TLSv1.3" in out and "ok one.example" in out
        lines = srv.access_lines(n + 1)
        if n >= 8 and len({line.split("|")[2] for line in lines[1:]}) == 2:
            break
    assert [line.split("|")[0] for line in lines] == ["."] + ["r"] * n
    assert len({line.split("|")[2] for line in lines[1:]}) == 2  # resumed on both workers


def test_without_a_configured_certificate_a_none_answer_fails(server, certs):
    ca = certs.ca()
    ca.server(["one.example"], file="one.example")
    ca.server(["fixed.example"], file="fixed.example")
    toml = """
[[server]]
listen = ["127.0.0.1:{port} ssl"]
ssl_certificate_by = "app:by_name"
  [[server.location]]
  match = "/"
  return = {{ status = 200, body = "ok" }}
"""
    srv = server(toml, {"app.py": HANDLERS.format(dir=str(certs.folder))})
    assert _cn(srv.port, ca, "one.example") == "one.example"
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        https_get(srv.port, "/", client_context(ca), "nothing.example")
    srv.wait_log("returned None and the server has no ssl_certificate")


def test_check_imports_the_function_and_names_the_config_path(certs, tmp_path):
    ca = certs.ca()
    default = ca.server(["default.example"], file="default")
    (tmp_path / "app.py").write_text(
        "def two(server_name, client):\n    return None\ndef one(server_name):\n    return None\n"
    )
    conf = tmp_path / "check.toml"

    def check(spec: str) -> subprocess.CompletedProcess:
        conf.write_text(
            f'[main]\npython_path = ["{tmp_path}"]\n'
            + _config(default, spec).replace("{port}", "1").replace("{{", "{").replace("}}", "}")
        )
        return subprocess.run(
            [sys.executable, "-m", "edgeworker", "check", "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    out = check("app:two")
    assert out.returncode == 0, out.stderr
    out = check("missing_module:fn")
    assert out.returncode == 1
    assert "server[0].ssl_certificate_by:" in out.stderr and "missing_module" in out.stderr
    out = check("app:nope")
    assert out.returncode == 1
    assert 'server[0].ssl_certificate_by: cannot import "app:nope"' in out.stderr, out.stderr
    out = check("app:one")
    assert out.returncode == 1
    assert "cannot be called as fn(server_name, client)" in out.stderr, out.stderr
    out = check("not a spec")
    assert out.returncode == 1
    assert "server[0].ssl_certificate_by" in out.stderr
