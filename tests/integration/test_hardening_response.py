"""Response-side safety on a real server: nothing a handler, a variable or a redirect target
carries can split a response or inject a header (CR, LF, NUL), in the answer to the client or
in the request edgeworker sends upstream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import Server, free_port, split_responses, wait_port

RECORDER = Path(__file__).resolve().parents[1] / "backends" / "recorder.py"

APP = r'''
def set_header(req):
    req.resp_headers["X-Evil"] = req.args.get("v")
    return "not reached\n"

def add_header(req):
    req.resp_headers.add("X-Evil", req.args.get("v"))
    return "not reached\n"

def bad_name(req):
    req.resp_headers[req.args.get("v")] = "1"
    return "not reached\n"

def exit_headers(req):
    req.exit(403, "no\n", headers={"X-Evil": req.args.get("v")})

def redirect(req):
    req.redirect(req.args.get("v"))

def early_filter(req):
    req.resp_headers["X-Evil"] = req.args.get("v")

def ok(req):
    return "ok\n"
'''

CONFIG = """
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "= /set"
  content = "app:set_header"
  [[server.location]]
  match = "= /add"
  content = "app:add_header"
  [[server.location]]
  match = "= /name"
  content = "app:bad_name"
  [[server.location]]
  match = "= /exit"
  content = "app:exit_headers"
  [[server.location]]
  match = "= /redirect"
  content = "app:redirect"
  [[server.location]]
  match = "= /filter"
  header_filter = "app:early_filter"
  content = "app:ok"
  [[server.location]]
  match = "= /addhdr"
  add_header = {{{{ X-Echo = "[$arg_v]" }}}}
  content = "app:ok"
  [[server.location]]
  match = "/up/"
  proxy_pass = "http://127.0.0.1:{backend}"
  proxy_set_header = {{{{ X-Arg = "[$arg_v]" }}}}
"""

# each one would put "Set-Cookie: pwn=1" on its own line if it got through
INJECTIONS = {
    "crlf": "%0d%0aSet-Cookie:%20pwn=1",
    "lf": "%0aSet-Cookie:%20pwn=1",
    "cr": "%0dSet-Cookie:%20pwn=1",
    "nul": "a%00Set-Cookie:%20pwn=1",
    "crlfcrlf": "%0d%0a%0d%0a<html>pwn</html>",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the module (they are only read from); ``srv.records()`` what the
    backend behind ``/up/`` received."""
    tmp = tmp_path_factory.mktemp("response")
    record = tmp / "recorded.jsonl"
    record.touch()
    port = free_port()
    backend = subprocess.Popen([sys.executable, str(RECORDER), str(port), str(record)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_port(port, proc=backend)
    s = Server(tmp / "edge", CONFIG.format(backend=port), files={"app.py": APP}).start()
    s.records = lambda: [json.loads(line) for line in record.read_text().splitlines()]
    try:
        yield s
    finally:
        s.stop()
        os.killpg(backend.pid, signal.SIGKILL)
        backend.wait(5)


def raw_get(srv, target: str) -> bytes:
    return srv.raw(f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())


def head_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def assert_clean(raw: bytes) -> None:
    """Exactly one response, no injected header line, no NUL/bare CR/LF in the head."""
    assert raw.startswith(b"HTTP/1.1 "), raw
    (resp,) = split_responses(raw)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\x00" not in head
    assert b"\n" not in head.replace(b"\r\n", b"") and b"\r" not in head.replace(b"\r\n", b"")
    assert not any(line.lower().startswith(b"set-cookie") for line in head_lines(raw)), raw
    assert b"pwn</html>" not in raw


@pytest.mark.parametrize("path", ["/set", "/add", "/exit", "/filter"])
@pytest.mark.parametrize("payload", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_handler_header_value_with_ctl_is_a_500(srv, path: str, payload: str) -> None:
    raw = raw_get(srv, f"{path}?v={payload}")
    assert_clean(raw)
    assert raw.startswith(b"HTTP/1.1 500 "), raw
    assert "invalid header value" in srv.errors()


@pytest.mark.parametrize("payload", ["X-A%0d%0aSet-Cookie", "X%20A", "X:A", "", "X%00"])
def test_handler_header_name_not_a_token_is_a_500(srv, payload: str) -> None:
    raw = raw_get(srv, f"/name?v={payload}")
    assert_clean(raw)
    assert raw.startswith(b"HTTP/1.1 500 "), raw


@pytest.mark.parametrize("payload", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_redirect_to_url_with_ctl_is_refused(srv, payload: str) -> None:
    raw = raw_get(srv, f"/redirect?v=/next{payload}")
    assert_clean(raw)
    assert raw.startswith(b"HTTP/1.1 500 "), raw
    assert not any(line.lower().startswith(b"location") for line in head_lines(raw))
    assert "req.redirect()" in srv.errors()


def test_redirect_to_a_clean_url_works(srv) -> None:
    raw = raw_get(srv, "/redirect?v=/next%3Fa%3D1")
    assert raw.startswith(b"HTTP/1.1 302 ") and b"\r\nLocation: /next?a=1\r\n" in raw


@pytest.mark.parametrize("payload", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_add_header_variable_cannot_inject(srv, payload: str) -> None:
    raw = raw_get(srv, f"/addhdr?v={payload}")
    assert_clean(raw)
    # the header is dropped (a value a handler could not have set is not sent), the page served
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"ok\n"), raw
    assert not any(line.lower().startswith(b"x-echo") for line in head_lines(raw)), raw


def test_add_header_variable_clean_and_non_latin1(srv) -> None:
    raw = raw_get(srv, "/addhdr?v=fine")
    assert b"\r\nX-Echo: [fine]\r\n" in raw
    raw = raw_get(srv, "/addhdr?v=%E2%82%AC")  # "€": not latin-1
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"ok\n"), raw


@pytest.mark.parametrize("payload", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_proxy_set_header_variable_cannot_inject_upstream(srv, payload: str) -> None:
    before = len(srv.records())
    raw = raw_get(srv, f"/up/x?v={payload}")
    assert raw.startswith(b"HTTP/1.1 200 "), raw
    (rec,) = srv.records()[before:]
    up = rec["raw"].encode("latin-1")
    head = up.split(b"\r\n\r\n", 1)[0]
    assert b"\x00" not in head
    assert b"\n" not in head.replace(b"\r\n", b"") and b"\r" not in head.replace(b"\r\n", b"")
    assert not any(line.lower().startswith(b"set-cookie") for line in head.split(b"\r\n"))
    assert up.endswith(b"\r\n\r\n")  # no injected body either


def test_no_injection_keeps_the_server_healthy(srv) -> None:
    for payload in INJECTIONS.values():
        raw_get(srv, f"/set?v={payload}")
    assert srv.get("/addhdr?v=x")[0] == 200
    assert "unexpected error" not in srv.errors()
