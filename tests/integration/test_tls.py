"""TLS termination end to end: real `edgeworker run` processes listening with ``ssl``,
certificates made at test time (tests/tls_certs.py), real clients (Python ``ssl`` and
``http.client``, ``curl``, ``openssl s_client``)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from ..backends import Backend
from ..backends.http_backend import ws_frame
from ..support import read_all, require_tool, wait_until

HANDLERS = """
import json

NAMES = ("scheme", "https", "ssl_protocol", "ssl_cipher", "ssl_server_name",
         "ssl_session_reused", "ssl_client_verify", "server_port", "pid",
         "ssl_client_s_dn", "ssl_client_i_dn", "ssl_client_serial", "ssl_client_fingerprint",
         "ssl_client_raw_cert")

def show(req):
    return {name: req.var.get(name) for name in NAMES}

def big(req):
    return bytes(range(256)) * 8192  # 2 MiB

def upload(req):
    body = req.read_body()
    return f"{len(body)} {sum(body) % 65521}"
"""

LOG_FORMAT = (
    "$scheme|$https|$ssl_protocol|$ssl_cipher|$ssl_server_name|$ssl_session_reused|"
    "$ssl_client_verify|$host|$status|$pid"
)


def _server_block(name: str, issued, body: str, extra: str = "") -> str:
    return f"""
[[server]]
listen = ["127.0.0.1:{{port}} ssl"]
server_name = "{name}"
ssl_certificate = "{issued.cert}"
ssl_certificate_key = "{issued.key}"
{extra}
  [[server.location]]
  match = "/"
  return = {{{{ status = 200, body = "{body} $ssl_server_name" }}}}

  [[server.location]]
  match = "/vars"
  content = "app:show"

  [[server.location]]
  match = "/big"
  content = "app:big"

  [[server.location]]
  match = "/upload"
  content = "app:upload"
  client_max_body_size = "8m"
"""


def _config(*blocks: str, http: str = "") -> str:
    return f"[http]\naccess_log_format = '{LOG_FORMAT}'\n{http}\n" + "".join(blocks)


def client_context(ca, cert=None, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


def https_get(
    port: int,
    path: str = "/",
    ctx: ssl.SSLContext | None = None,
    sni: str | None = "localhost",
    host: str | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes, dict]:
    """GET over TLS with SNI ``sni`` (None: no SNI) and ``Host`` (default: the SNI name);
    (status, body, the server certificate's subject CN)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if sni is None:
        ctx.check_hostname = False
    tls = ctx.wrap_socket(raw, server_hostname=sni)
    try:
        cert = tls.getpeercert()
        subject = dict(x[0] for x in cert["subject"]) if cert else {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.sock = tls
        conn.request("GET", path, headers={"Host": host or sni or "localhost"})
        resp = conn.getresponse()
        return resp.status, resp.read(), subject
    finally:
        tls.close()


@pytest.fixture
def server(server):
    """The ``server`` fixture with the handlers of these tests (``app.py``)."""

    def start(toml: str, **kw):
        return server(toml, {"app.py": HANDLERS}, **kw)

    return start


@pytest.fixture
def tls_server(server, certs):
    """A server with three TLS virtual servers on one address: a.example (the default),
    *.b.example, www.c.* (each its own certificate)."""
    ca = certs.ca()
    a = ca.server(["a.example", "localhost"])
    b = ca.server(["*.b.example"])
    c = ca.server(["www.c.example"], file="c")
    conf = _config(
        _server_block("a.example", a, "A"),
        _server_block("*.b.example", b, "B"),
        _server_block("www.c.*", c, "C"),
    )
    srv = server(conf)
    return srv, ca


def test_handshake_and_request_over_an_ssl_listener(tls_server):
    srv, ca = tls_server
    ctx = client_context(ca)
    status, body, subject = https_get(srv.port, "/", ctx, "a.example")
    assert (status, body) == (200, b"A a.example")
    assert subject["commonName"] == "a.example"
    # keep-alive over TLS: several requests on one connection
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=5)
    for _ in range(3):
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"A localhost"
    conn.close()


def test_big_bodies_both_ways_to_a_slow_reader(tls_server):
    srv, ca = tls_server
    conn = http.client.HTTPSConnection(
        "localhost", srv.port, context=client_context(ca), timeout=10
    )
    conn.request("GET", "/big")
    resp = conn.getresponse()
    time.sleep(0.3)  # the socket buffers fill up: the server waits to write
    assert resp.read() == bytes(range(256)) * 8192
    upload = bytes(range(256)) * 20000
    conn.request("POST", "/upload", body=upload)
    resp = conn.getresponse()
    assert resp.read() == f"{len(upload)} {sum(upload) % 65521}".encode()
    conn.close()


def test_variables_in_req_var_and_in_the_access_log(tls_server):
    srv, ca = tls_server
    status, body, _ = https_get(srv.port, "/vars", client_context(ca), "x.b.example")
    assert status == 200
    doc = json.loads(body)
    assert doc["scheme"] == "https" and doc["https"] == "on"
    assert doc["ssl_protocol"] == "TLSv1.3"
    assert doc["ssl_cipher"].startswith("TLS_")
    assert doc["ssl_server_name"] == "x.b.example"
    assert doc["ssl_session_reused"] == "."
    assert doc["ssl_client_verify"] == "NONE"
    line = srv.access_lines(1)[-1].split("|")
    assert line[:8] == [
        "https",
        "on",
        "TLSv1.3",
        doc["ssl_cipher"],
        "x.b.example",
        ".",
        "NONE",
        "x.b.example",
    ]
    assert line[8] == "200"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_is_refused(tls_server):
    srv, ca = tls_server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="a.example")
    # TLS 1.2 is served
    ctx12 = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    status, body, _ = https_get(srv.port, "/vars", ctx12, "a.example")
    assert status == 200 and json.loads(body)["ssl_protocol"] == "TLSv1.2"
    srv.wait_log("TLS handshake with 127.0.0.1 failed")


@pytest.mark.parametrize(
    ("sni", "cn", "body"),
    [
        ("a.example", "a.example", b"A a.example"),  # exact
        ("deep.x.b.example", "*.b.example", b"B deep.x.b.example"),  # leading wildcard
        ("www.c.org", "www.c.example", b"C www.c.org"),  # trailing wildcard
        ("unknown.example", "a.example", b"A unknown.example"),  # the default server
    ],
)
def test_sni_picks_the_certificate_and_the_server(tls_server, sni, cn, body):
    srv, ca = tls_server
    ctx = client_context(ca)
    ctx.check_hostname = False  # (the default server's certificate is not for every name)
    status, got, subject = https_get(srv.port, "/", ctx, sni)
    assert (status, got, subject["commonName"]) == (200, body, cn)


def test_no_sni_gets_the_default_server(tls_server):
    srv, ca = tls_server
    status, body, subject = https_get(srv.port, "/", client_context(ca), None, host="a.example")
    assert (status, body, subject["commonName"]) == (200, b"A ", "a.example")


def test_curl_with_sni_through_resolve(tls_server):
    curl = require_tool("curl", "curl")
    srv, ca = tls_server
    out = subprocess.run(
        [
            curl,
            "-sS",
            "--cacert",
            str(ca.path),
            "--resolve",
            f"www.b.example:{srv.port}:127.0.0.1",
            f"https://www.b.example:{srv.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout == "B www.b.example", out.stderr


def test_plain_http_to_a_tls_port_gets_400_and_close(tls_server):
    srv, _ca = tls_server
    reply = srv.raw(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in reply
    assert b"The plain HTTP request was sent to HTTPS port" in reply


def test_garbage_and_oversized_client_hellos_close_that_connection_only(tls_server):
    srv, ca = tls_server
    hellos = [
        b"\x16\x03\x01\x00\x10" + b"\xff" * 16,  # a handshake record holding garbage
        b"\x16\x03\x01\x00\x40" + b"\x01\x00\x00\x3c\x03\x03" + b"\x00" * 10,  # truncated
        b"\x16\x03\x01\xff\xff" + b"\x01\xff\xff\xff" + b"\x00" * 4096,  # oversized
    ]
    for hello in hellos:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(hello)
            if hello[5:7] == b"\x01\x00":  # truncated: the client stops there
                s.shutdown(socket.SHUT_WR)
            data = read_all(s, timeout=5)
        assert not data.startswith(b"HTTP/")  # closed (at most a TLS alert)
    status, body, _ = https_get(srv.port, "/", client_context(ca), "a.example")
    assert (status, body) == (200, b"A a.example")
    srv.wait_log("TLS handshake with 127.0.0.1 failed")
    assert "[info]" in [line for line in srv.errors().splitlines() if "TLS handshake" in line][0]


def test_a_silent_client_is_closed_after_the_handshake_timeout(server, certs):
    ca = certs.ca()
    a = ca.server(["localhost"])
    srv = server(_config(_server_block("localhost", a, "A", 'ssl_handshake_timeout = "1s"')))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        start = time.monotonic()
        assert read_all(s, timeout=5) == b""
        took = time.monotonic() - start
    assert 0.8 < took < 3.0
    # also once the handshake has started
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc")  # the start of a ClientHello
        start = time.monotonic()
        assert read_all(s, timeout=5) == b""
        assert time.monotonic() - start < 3.0
    status, body, _ = https_get(srv.port, "/", client_context(ca), "localhost")
    assert status == 200


def test_session_resumes_on_any_worker(server, certs, tmp_path):
    openssl = require_tool("openssl", "openssl")
    ca = certs.ca()
    a = ca.server(["localhost"])
    srv = server(_config(_server_block("localhost", a, "A")), workers=2)
    sess = tmp_path / "session.pem"
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    def s_client(*args: str) -> str:
        return subprocess.run(
            [
                openssl,
                "s_client",
                "-connect",
                f"127.0.0.1:{srv.port}",
                "-servername",
                "localhost",
                "-CAfile",
                str(ca.path),
                "-ign_eof",
                *args,
            ],
            input=request,
            capture_output=True,
            timeout=10,
        ).stdout.decode(errors="replace")

    first = s_client("-sess_out", str(sess))
    assert "New, TLSv1.3" in first and "A localhost" in first
    # the lifetime the ticket announces: ssl_session_timeout's default, nginx's 5m
    assert "lifetime hint: 300 (seconds)" in first
    # new connections with the saved session until both workers served some (at least 8)
    n = 0
    while n < 40:
        out = s_client("-sess_in", str(sess))
        n += 1
        assert "Reused, TLSv1.3" in out and "A localhost" in out
        lines = srv.access_lines(n + 1)
        if n >= 8 and len({line.split("|")[9] for line in lines[1:]}) == 2:
            break
    assert [line.split("|")[5] for line in lines] == ["."] + ["r"] * n
    assert len({line.split("|")[9] for line in lines[1:]}) == 2  # resumed on both workers


def test_client_certificates_on_optional_and_a_wrong_ca(server, certs):
    ca = certs.ca()
    client_ca = certs.ca("clients")
    other_ca = certs.ca("other")
    alice = client_ca.client("alice")
    mallory = other_ca.client("mallory")
    on = ca.server(["on.example"])
    opt = ca.server(["opt.example"])
    verify = f'ssl_client_certificate = "{client_ca.path}"\n'
    srv = server(
        _config(
            _server_block("on.example", on, "ON", verify + 'ssl_verify_client = "on"'),
            _server_block("opt.example", opt, "OPT", verify + 'ssl_verify_client = "optional"'),
        ),
    )
    # on: with a certificate of the CA; its subject, issuer, serial and fingerprint as
    # openssl prints them (nginx's formats)
    status, body, _ = https_get(srv.port, "/vars", client_context(ca, alice), "on.example")
    doc = json.loads(body)
    assert status == 200 and doc["ssl_client_verify"] == "SUCCESS"
    openssl = require_tool("openssl", "openssl")

    def x509(*opts: str) -> str:
        out = subprocess.run([openssl, "x509", "-in", str(alice.cert), "-noout", *opts],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return out.strip().split("=", 1)[1]

    assert doc["ssl_client_s_dn"] == x509("-subject", "-nameopt", "RFC2253")
    assert doc["ssl_client_i_dn"] == x509("-issuer", "-nameopt", "RFC2253")
    assert doc["ssl_client_serial"] == x509("-serial")
    assert doc["ssl_client_fingerprint"] == x509("-fingerprint", "-sha1").replace(":", "").lower()
    assert doc["ssl_client_raw_cert"].strip() == alice.cert.read_text().strip().split(
        "-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----"
    # on: without: 400, nginx's text
    status, body, _ = https_get(srv.port, "/", client_context(ca), "on.example")
    assert status == 400 and b"No required SSL certificate was sent" in body
    # on: a certificate of another CA: the handshake completes, the request is refused (nginx)
    status, body, _ = https_get(srv.port, "/", client_context(ca, mallory), "on.example")
    assert status == 400 and b"The SSL certificate error" in body
    # optional: without a certificate, served
    status, body, _ = https_get(srv.port, "/vars", client_context(ca), "opt.example")
    assert status == 200 and json.loads(body)["ssl_client_verify"] == "NONE"
    status, body, _ = https_get(srv.port, "/vars", client_context(ca, alice), "opt.example")
    assert status == 200 and json.loads(body)["ssl_client_verify"] == "SUCCESS"
    # curl with a client certificate
    curl = require_tool("curl", "curl")
    out = subprocess.run(
        [
            curl,
            "-sS",
            "--cacert",
            str(ca.path),
            "--cert",
            str(alice.cert),
            "--key",
            str(alice.key),
            "--resolve",
            f"on.example:{srv.port}:127.0.0.1",
            f"https://on.example:{srv.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout == "ON on.example", out.stderr


def test_an_rsa_and_an_ecdsa_certificate_side_by_side(server, certs):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ca = certs.ca()
    ec_cert = ca.server(["localhost"], file="ec")
    rsa_cert = ca.server(["localhost"], file="rsa", kind="rsa")
    pair = f"""
[[server]]
listen = ["127.0.0.1:{{port}} ssl"]
ssl_certificate = ["{ec_cert.cert}", "{rsa_cert.cert}"]
ssl_certificate_key = ["{ec_cert.key}", "{rsa_cert.key}"]
  [[server.location]]
  match = "/"
  return = {{{{ status = 204 }}}}
"""
    srv = server(_config(pair))
    for suite, kind in (
        ("ECDHE-ECDSA-AES128-GCM-SHA256", ec.EllipticCurvePublicKey),
        ("ECDHE-RSA-AES128-GCM-SHA256", rsa.RSAPublicKey),
    ):
        ctx = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers(suite)
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            assert tls.cipher()[0] == suite
        assert isinstance(cert.public_key(), kind)


def test_verify_depth_counts_the_intermediate_cas_as_openssl_does(server, certs):
    """``ssl_verify_depth`` N lets a client chain through N intermediate CAs between its
    certificate and a CA of ``ssl_client_certificate`` (OpenSSL's verify depth, as nginx on
    OpenSSL 1.1.0 and later); one more fails verification: 400, ``FAILED:`` and OpenSSL's
    reason (OpenSSL stops building the chain at the depth: the issuer is not found, or the
    chain is too long), logged at info."""
    ca = certs.ca()
    root = certs.ca("root")
    sub = root.intermediate("sub")
    subsub = sub.intermediate("subsub")
    direct = root.client("direct")
    chained = sub.client("chained")
    deeper = subsub.client("deeper")
    one = ca.server(["one.example"])
    two = ca.server(["two.example"])
    verify = f'ssl_client_certificate = "{root.path}"\nssl_verify_client = "on"\n'
    srv = server(
        _config(
            _server_block("one.example", one, "ONE", verify),
            _server_block("two.example", two, "TWO", verify + "ssl_verify_depth = 2"),
        )
    )
    for cert, name in ((direct, "one"), (chained, "one"), (chained, "two"), (deeper, "two")):
        status, body, _ = https_get(srv.port, "/vars", client_context(ca, cert), f"{name}.example")
        assert status == 200 and json.loads(body)["ssl_client_verify"] == "SUCCESS", (cert, name)
    status, body, _ = https_get(srv.port, "/", client_context(ca, deeper), "one.example")
    assert status == 400 and b"The SSL certificate error" in body
    line = srv.access_lines(5)[4].split("|")
    reasons = {
        20: "unable to get local issuer certificate",
        22: "certificate chain too long",
    }
    assert line[8] == "400" and line[6] in {f"FAILED:{r}" for r in reasons.values()}, line
    code = next(c for c, r in reasons.items() if line[6] == f"FAILED:{r}")
    srv.wait_log(
        f"client SSL certificate verify error: ({code}:{reasons[code]}), client: 127.0.0.1"
    )


def test_host_selecting_a_server_with_other_client_certificate_rules_gets_421(server, certs):
    ca = certs.ca()
    client_ca = certs.ca("clients")
    open_ = ca.server(["open.example"])
    locked = ca.server(["locked.example"])
    srv = server(
        _config(
            _server_block("open.example", open_, "OPEN"),
            _server_block(
                "locked.example",
                locked,
                "LOCKED",
                f'ssl_client_certificate = "{client_ca.path}"\nssl_verify_client = "on"',
            ),
            _server_block("other.example", open_, "OTHER"),
        )
    )
    ctx = client_context(ca)
    status, _, _ = https_get(srv.port, "/", ctx, "open.example", host="locked.example")
    assert status == 421
    # SNI selecting the server that verifies: its client-certificate request applies (the
    # default server of the address verifies none)
    alice = client_ca.client("alice")
    status, body, _ = https_get(srv.port, "/vars", client_context(ca, alice), "locked.example")
    assert status == 200 and json.loads(body)["ssl_client_verify"] == "SUCCESS"
    status, body, _ = https_get(srv.port, "/", ctx, "locked.example")
    assert status == 400 and b"No required SSL certificate was sent" in body
    # a request without Host (HTTP/1.0) goes to the server SNI selected, as in nginx
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    with client_context(ca, alice).wrap_socket(raw, server_hostname="locked.example") as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"LOCKED locked.example")
    # a server with the same client-certificate rules may be selected by Host
    status, body, _ = https_get(srv.port, "/", ctx, "open.example", host="other.example")
    assert (status, body) == (200, b"OTHER open.example")


def test_x_forwarded_proto_https_and_websocket_through_the_proxy(server, certs):
    ca = certs.ca()
    a = ca.server(["localhost"])
    backend = Backend("b")
    try:
        srv = server(
            _config(
                f"""
[[server]]
listen = ["127.0.0.1:{{port}} ssl"]
ssl_certificate = "{a.cert}"
ssl_certificate_key = "{a.key}"
  [[server.location]]
  match = "/"
  proxy_pass = "http://{backend.addr}"
"""
            )
        )
        status, body, _ = https_get(srv.port, "/echo", client_context(ca), "localhost")
        assert status == 200
        headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert headers["x-forwarded-proto"] == "https"
        # an upgraded connection (WebSocket) over TLS: the tunnel encrypts both ways
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        with client_context(ca).wrap_socket(raw, server_hostname="localhost") as s:
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(
                f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            head, _, rest = head.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            for msg in (b"hello", b"x" * 70000):
                s.sendall(ws_frame(1, msg, mask=os.urandom(4)))
                want = ws_frame(1, msg)
                while len(rest) < len(want):
                    rest += s.recv(65536)
                assert rest[: len(want)] == want
                rest = rest[len(want) :]
            s.sendall(ws_frame(8, b"", mask=b"abcd"))
            while len(rest) < 2:
                rest += s.recv(65536)
            assert rest.startswith(ws_frame(8, b""))
    finally:
        backend.stop()


def test_reload_serves_a_new_certificate_and_refuses_a_mismatched_key(server, certs):
    ca = certs.ca()
    first = ca.server(["localhost"], file="first")
    srv = server(_config(_server_block("localhost", first, "A")))
    ctx = client_context(ca)
    assert https_get(srv.port, "/", ctx)[2]["commonName"] == "localhost"

    second = ca.server(["localhost", "second.example"], file="second")
    config = srv.config.read_text()
    srv.config.write_text(
        config.replace(str(first.cert), str(second.cert)).replace(str(first.key), str(second.key))
    )
    assert srv.cli("reload").returncode == 0
    srv.wait_log("reloaded: generation 1")

    def served_sans():
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return [v for k, v in tls.getpeercert()["subjectAltName"] if k == "DNS"]

    assert wait_until(served_sans, lambda sans: "second.example" in sans, timeout=10)
    # (the old worker accepts until it notices its TERM: wait until it is gone)
    wait_until(srv.worker_pids, lambda pids: len(pids) == 1, timeout=10)
    assert "second.example" in served_sans()

    # a key that is not the certificate's: refused, the running certificate still served
    stray = certs.stray_key()
    srv.config.write_text(srv.config.read_text().replace(str(second.key), str(stray)))
    out = srv.cli("reload")
    assert out.returncode == 1
    assert "server[0].ssl_certificate_key" in out.stderr and "does not match" in out.stderr
    # SIGHUP itself (past the CLI's check) keeps the running configuration too
    os.kill(srv.master_pid, signal.SIGHUP)
    srv.wait_log("reload failed, keeping the current configuration")
    assert "second.example" in served_sans()


def test_check_reports_file_problems_with_the_config_path(server, certs, tmp_path):
    ca = certs.ca()
    good = ca.server(["good.example"])
    expired = ca.server(["old.example"], days=(-30, -1))
    not_pem = tmp_path / "not-pem.crt"
    not_pem.write_text("this is not a certificate\n")
    stray = certs.stray_key()
    conf = tmp_path / "check.toml"

    def write(block: str) -> subprocess.CompletedProcess:
        conf.write_text(
            '[[server]]\nlisten = ["127.0.0.1:1 ssl"]\n' + block + "\n"
            '  [[server.location]]\n  match = "/"\n  return = { status = 204 }\n'
        )
        return subprocess.run(
            [sys.executable, "-m", "edgeworker", "check", "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    out = write(f'ssl_certificate = "{tmp_path}/missing.crt"\nssl_certificate_key = "{good.key}"')
    assert out.returncode == 1
    assert "server[0].ssl_certificate: cannot read" in out.stderr
    out = write(f'ssl_certificate = "{good.cert}"\nssl_certificate_key = "{stray}"')
    assert out.returncode == 1
    assert "server[0].ssl_certificate_key:" in out.stderr and "does not match" in out.stderr
    out = write(f'ssl_certificate = "{not_pem}"\nssl_certificate_key = "{good.key}"')
    assert out.returncode == 1
    assert "server[0].ssl_certificate:" in out.stderr and "is not a PEM certificate" in out.stderr
    out = write(f'ssl_certificate = "{expired.cert}"\nssl_certificate_key = "{expired.key}"')
    assert out.returncode == 0, out.stderr
    assert "warning: server[0].ssl_certificate:" in out.stderr and "expired on" in out.stderr
    out = write("")
    assert out.returncode == 1
    assert "server[0]: a server listening with ssl needs ssl_certificate" in out.stderr
