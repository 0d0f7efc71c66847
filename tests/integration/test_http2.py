"""HTTP/2 end to end: one real `edgeworker run` listening with ``ssl http2`` (ALPN) and with
``http2`` in cleartext (prior knowledge), a real backend behind ``proxy_pass``; real clients:
``curl --http2``/``--http2-prior-knowledge``, ``h2load`` and the ``h2`` library. Every phase
per stream as over HTTP/1.1, multiplexing, request bodies and flow control, gzip, static files,
status pages and counters, HTTP/1.1 still served on the same ports."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import ssl
import subprocess
import time

import pytest

from ..backends import Backend
from ..h2_client import H2Client
from ..support import Server, free_port, require_tool, self_signed_cert

APP = """
import hashlib
import edgeworker

def hello(req):
    return "hello\\n"

def vars_(req):
    v = req.var
    return {k: v.get(k) for k in ("server_protocol", "scheme", "https", "host",
                                  "connection_requests", "http_version", "request_length",
                                  "http_x_thing", "http_cookie")} | {
        "http_version_attr": req.http_version}

def slow(req):
    edgeworker.sleep(float(req.args.get("t", "1")))
    return "slow\\n"

def upload(req):
    body = req.read_body()
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"

def lazy_upload(req):
    edgeworker.sleep(float(req.args.get("t", "1")))
    n = 0
    for piece in req.iter_body():
        n += len(piece)
    return f"{n}"

def gen(req):
    def body():
        for i in range(50):
            yield f"part {i} of a generated body\\n"
    return body()

def say(req):
    req.say("first")
    req.flush()
    req.say("second")
    req.eof()

def deny(req):
    req.exit(403, "denied\\n", headers={"X-Why": "deny"})

def hf(req):
    req.resp_headers["X-Filtered"] = "yes"

def bf(req, chunk, eof):
    return chunk.upper()

def big(req):
    return b"0123456789abcdef" * (int(req.args.get("kib", "1024")) * 64)

def boom(req):
    raise RuntimeError("kaboom")

def detach(req):
    req.detach()
"""

TOML = """
[http]
access_log_format = '$server_protocol $status $request_uri $connection_requests'

[[server]]
listen = ["127.0.0.1:{port} ssl http2", "127.0.0.1:%(clear)d http2", "127.0.0.1:%(plain)d"]
ssl_certificate = "%(cert)s"
ssl_certificate_key = "%(key)s"

  [[server.location]]
  match = "/"
  content = "app:hello"

  [[server.location]]
  match = "/vars"
  content = "app:vars_"

  [[server.location]]
  match = "/slow"
  content = "app:slow"

  [[server.location]]
  match = "/upload"
  content = "app:upload"
  client_max_body_size = "4m"

  [[server.location]]
  match = "/lazy"
  content = "app:lazy_upload"
  client_max_body_size = "4m"

  [[server.location]]
  match = "/gen"
  content = "app:gen"
  gzip = true
  gzip_min_length = 1
  gzip_types = ["text/plain"]

  [[server.location]]
  match = "/say"
  content = "app:say"

  [[server.location]]
  match = "/deny"
  content = "app:deny"

  [[server.location]]
  match = "/filtered"
  content = "app:hello"
  header_filter = "app:hf"
  body_filter = "app:bf"

  [[server.location]]
  match = "/big"
  content = "app:big"

  [[server.location]]
  match = "/boom"
  content = "app:boom"

  [[server.location]]
  match = "/detach"
  content = "app:detach"

  [[server.location]]
  match = "/files/"
  root = "{dir}/www"

  [[server.location]]
  match = "/proxy/"
  proxy_pass = "http://%(backend)s/"

  [[server.location]]
  match = "= /status"
  status = "json"

  [[server.location]]
  match = "= /metrics"
  status = "prometheus"
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("h2")
    cert, key = self_signed_cert(base)
    backend = Backend("h2backend")
    www = base / "srv" / "www" / "files"
    www.mkdir(parents=True)
    (www / "blob.bin").write_bytes(os.urandom(300_000))
    ports = {"clear": free_port(), "plain": free_port()}
    toml = TOML % dict(ports, cert=cert, key=key, backend=backend.addr)
    server = Server(base / "srv", toml, {"app.py": APP})
    server.clear_port = ports["clear"]
    server.plain_port = ports["plain"]
    server.cert = cert
    server.start()
    yield server
    server.stop()
    backend.stop()


def tls_context(srv) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(srv.cert))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def client(srv, **kw) -> H2Client:
    return H2Client(srv.port, tls=tls_context(srv), **kw)


def curl(*args: str) -> subprocess.CompletedProcess:
    exe = require_tool("curl", "curl")
    return subprocess.run([exe, "-sS", "--max-time", "20", *args], capture_output=True, timeout=30)


def curl_https(srv, path: str, *args: str) -> subprocess.CompletedProcess:
    return curl(
        "--cacert",
        str(srv.cert),
        *args,
        f"https://localhost:{srv.port}{path}",
        "--resolve",
        f"localhost:{srv.port}:127.0.0.1",
    )


# --------------------------------------------------------------------------- negotiation
def test_curl_negotiates_h2_with_alpn_and_gets_http2_variables(srv):
    out = curl_https(
        srv, "/vars", "--http2", "-v", "-H", "X-Thing: 1", "-H", "Cookie: a=1", "-H", "Cookie: b=2"
    )
    assert out.returncode == 0, out.stderr
    assert b"ALPN: server accepted h2" in out.stderr
    assert b"< HTTP/2 200" in out.stderr
    doc = json.loads(out.stdout)
    assert doc["server_protocol"] == "HTTP/2.0" and doc["http_version_attr"] == "2.0"
    assert doc["scheme"] == "https" and doc["https"] == "on"
    assert doc["host"] == "localhost" and doc["http_x_thing"] == "1"
    assert doc["http_cookie"] == "a=1; b=2"  # the crumbs joined again (RFC 9113 §8.2.3)


def test_http11_clients_are_unaffected_on_the_same_ports(srv):
    out = curl_https(srv, "/vars", "--http1.1", "-v")
    assert b"ALPN: server accepted http/1.1" in out.stderr
    assert json.loads(out.stdout)["server_protocol"] == "HTTP/1.1"
    status, headers, body = srv.get("/vars")  # (no ALPN at all: the TLS port is HTTPS)
    assert status == 400  # plain HTTP on the TLS port, as before
    for port in (srv.clear_port, srv.plain_port):
        out = curl("-v", f"http://127.0.0.1:{port}/vars")
        assert json.loads(out.stdout)["server_protocol"] == "HTTP/1.1"
        assert b"< Connection: keep-alive" in out.stderr


def test_prior_knowledge_in_cleartext_only_where_flagged(srv):
    out = curl("--http2-prior-knowledge", "-v", f"http://127.0.0.1:{srv.clear_port}/vars")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["server_protocol"] == "HTTP/2.0" and doc["scheme"] == "http"
    out = curl("--http2-prior-knowledge", "-v", f"http://127.0.0.1:{srv.plain_port}/vars")
    assert out.returncode != 0  # a plain HTTP/1.1 listener answers the preface with 400


def test_no_connection_specific_fields_go_out(srv):
    c = H2Client(srv.clear_port)
    r = c.get("/proxy/headers")  # the backend sends Connection, Keep-Alive, X-Hop
    c.close()
    assert r.status == 200 and r.body == b"h"
    assert r.headers["x-kept"] == "yes"
    for name in ("connection", "keep-alive", "transfer-encoding", "upgrade", "x-hop"):
        assert name not in r.headers


# --------------------------------------------------------------------------- multiplexing
def test_many_streams_on_one_connection_and_a_slow_one_blocks_none(srv):
    c = client(srv)
    slow = c.request("/slow?t=1.5")
    fast = [c.request("/") for _ in range(60)]
    got = c.wait(fast, timeout=5)
    assert all(r.status == 200 and r.body == b"hello\n" for r in got)
    assert not c.responses[slow].done  # the others did not wait for it
    (r,) = c.wait([slow], timeout=5)
    assert r.status == 200 and r.body == b"slow\n"
    assert max(x.done_at for x in got) < r.done_at
    c.close()


def test_h2load_many_clients_and_streams_all_succeed(srv):
    exe = require_tool("h2load", "nghttp2-client")
    out = subprocess.run(
        [exe, "-n", "2000", "-c", "4", "-m", "10", f"https://127.0.0.1:{srv.port}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "2000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout + out.stderr
    assert "status codes: 2000 2xx" in out.stdout
    assert "Application protocol: h2" in out.stdout


# --------------------------------------------------------------------------- the phases
def test_phases_exits_filters_and_generators_per_stream(srv):
    c = client(srv)
    deny, filt, gen, say, boom, det = (
        c.request(p) for p in ("/deny", "/filtered", "/gen", "/say", "/boom", "/detach")
    )
    c.wait()
    r = c.responses
    assert r[deny].status == 403 and r[deny].body == b"denied\n"
    assert r[deny].headers["x-why"] == "deny"
    assert r[filt].body == b"HELLO\n" and r[filt].headers["x-filtered"] == "yes"
    assert r[gen].body.count(b"of a generated body") == 50
    assert r[say].body == b"first\nsecond\n"
    assert r[boom].status == 500 and b"500" in r[boom].body
    assert r[det].status == 500  # detach is refused on HTTP/2
    c.close()
    assert "req.detach(): an HTTP/2 stream cannot be taken over" in srv.errors()


def test_head_and_not_found(srv):
    c = client(srv)
    head = c.request("/", method="HEAD")
    missing = c.request("/files/missing.txt")
    c.wait()
    assert c.responses[head].status == 200 and c.responses[head].body == b""
    assert c.responses[head].headers["content-length"] == "6"
    assert c.responses[missing].status == 404
    c.close()


def test_gzip_over_h2(srv):
    out = curl(
        "--http2-prior-knowledge",
        "-H",
        "Accept-Encoding: gzip",
        "-D",
        "-",
        f"http://127.0.0.1:{srv.clear_port}/gen",
    )
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head
    assert gzip.decompress(body).count(b"of a generated body") == 50


def test_static_file_in_pieces_and_a_range(srv):
    want = (srv.dir / "www" / "files" / "blob.bin").read_bytes()
    c = client(srv)
    whole = c.request("/files/blob.bin")
    part = c.request("/files/blob.bin", headers=[("range", "bytes=100-199")])
    c.wait()
    assert c.responses[whole].status == 200 and c.responses[whole].body == want
    assert c.responses[part].status == 206 and c.responses[part].body == want[100:200]
    c.close()


# --------------------------------------------------------------------------- bodies
def test_request_bodies_with_and_without_length(srv):
    data = os.urandom(1_500_000)
    digest = hashlib.sha256(data).hexdigest()
    for extra in ((), ("-H", "Transfer-Encoding: chunked")):
        out = subprocess.run(
            [
                require_tool("curl", "curl"),
                "-sS",
                "--http2",
                "--cacert",
                str(srv.cert),
                "--resolve",
                f"localhost:{srv.port}:127.0.0.1",
                "--data-binary",
                "@-",
                *extra,
                f"https://localhost:{srv.port}/upload",
            ],
            input=data,
            capture_output=True,
            timeout=30,
        )
        assert out.stdout.decode() == f"{len(data)} {digest}", out.stderr


def test_body_over_client_max_body_size_is_413(srv):
    c = client(srv)
    sid = c.request("/upload", method="POST", headers=[("content-length", "5000000")], end=False)
    (r,) = c.wait([sid])
    assert r.status == 413
    sid = c.request("/upload", method="POST", end=False)  # no length: counted as it comes
    try:
        c.send_body(sid, b"x" * 4_300_000, timeout=10)
    except Exception:  # noqa: BLE001 - the server may reset the stream under us
        pass
    (r,) = c.wait([sid])
    assert r.status == 413
    c.close()


def test_expect_100_continue_gets_an_interim_response(srv):
    c = client(srv)
    sid = c.request(
        "/upload",
        method="POST",
        headers=[("expect", "100-continue"), ("content-length", "5")],
        end=False,
    )
    deadline = time.monotonic() + 5
    while not c.responses[sid].informational and time.monotonic() < deadline:
        c.read_some(0.1)
    assert c.responses[sid].informational == [100]
    c.send_body(sid, b"hello")
    (r,) = c.wait([sid])
    assert r.status == 200 and r.body.startswith(b"5 ")
    c.close()


def test_a_slow_reader_pushes_back_on_its_client(srv):
    c = client(srv)
    sid = c.request("/lazy?t=1.0", method="POST", end=False)
    sent = 0
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # the handler reads nothing for a second
        window = c.h2.local_flow_control_window(sid)
        if window:
            size = min(window, c.h2.max_outbound_frame_size)
            c.h2.send_data(sid, b"y" * size)
            c.flush()
            sent += size
        c.read_some(0.05)
    assert sent <= 65535  # one stream window, nothing buffered beyond it
    c.send_body(sid, b"z" * 300_000)  # then it reads, and the windows open again
    (r,) = c.wait([sid])
    assert r.status == 200 and r.body == str(sent + 300_000).encode()
    c.close()


def test_a_small_client_window_gets_the_whole_body(srv):
    c = client(srv, settings={h2_settings().INITIAL_WINDOW_SIZE: 1000})
    r = c.get("/big?kib=256")
    assert r.status == 200 and len(r.body) == 256 * 1024
    c.close()


def h2_settings():
    from h2.settings import SettingCodes

    return SettingCodes


# --------------------------------------------------------------------------- proxy
def test_proxy_relays_bodies_and_streams_responses(srv):
    c = client(srv)
    data = os.urandom(200_000)
    up = c.request("/proxy/echo", method="POST", body=data, end=True)
    stream = c.request("/proxy/big?n=3000000&chunked=1")
    c.wait(timeout=20)
    doc = json.loads(c.responses[up].body)
    assert doc["body_len"] == len(data)
    assert doc["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["version"] == "HTTP/1.1"
    r = c.responses[stream]
    assert r.status == 200 and len(r.body) == 3_000_000 and set(r.body) == {ord("x")}
    c.close()


# --------------------------------------------------------------------------- logs, status
def test_access_log_per_stream_and_status_counters(srv):
    c = client(srv)
    for _ in range(3):
        c.get("/")
    c.close()
    for _ in range(2):
        c = client(srv)
        c.get("/")
        c.close()
    lines = srv.access_lines(5)
    h2_lines = [line for line in lines if line.startswith("HTTP/2.0 200 / ")]
    assert len(h2_lines) >= 5
    assert any(line.endswith(" 3") for line in h2_lines)  # $connection_requests per stream
    time.sleep(1.2)  # a flush interval
    out = curl("--http2-prior-knowledge", f"http://127.0.0.1:{srv.clear_port}/status")
    doc = json.loads(out.stdout)
    assert doc["http2"]["connections"] >= 3 and doc["http2"]["streams"] >= 5
    assert doc["connections_by_protocol"]["h2"] == doc["http2"]["connections"]
    assert doc["connections_by_protocol"]["http/1.1"] >= 1
    text = curl(f"http://127.0.0.1:{srv.plain_port}/metrics").stdout.decode()
    assert re.search(
        r'^edgeworker_connections_by_protocol_total\{protocol="h2"\} [1-9]', text, re.M
    ), text
    assert re.search(r"^edgeworker_http2_streams_total [1-9]", text, re.M)
    assert "edgeworker_http2_streams_open " in text
    assert "edgeworker_http2_resets_received_total " in text


def test_no_unexpected_error_was_logged(srv):
    assert "unexpected error" not in srv.errors(), srv.errors()[-3000:]
