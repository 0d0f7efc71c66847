"""Client certificates checked as nginx checks them, session lifetimes and ALPN: real
``edgeworker run`` processes, certificates made at test time (tests/tls_certs.py), real clients
(Python ``ssl``, ``curl``, ``openssl s_client``).

A client certificate that does not verify completes the handshake; every request of the
connection gets 400 "The SSL certificate error" (``on``, ``optional``; ``optional_no_ca`` lets an
unknown or self-signed issuer through), ``$ssl_client_verify`` is ``FAILED:`` and OpenSSL's
reason, and the reason is logged at info with the client address."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time

import pytest

from ..support import read_all, require_tool, self_signed_cert
from ..tls_certs import Issued
from .test_tls import HANDLERS, _config, _server_block, client_context, https_get

#: OpenSSL's verification result for a certificate (sent alone) whose issuer the server does
#: not have (X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, 21)
UNKNOWN_ISSUER = "unable to verify the first certificate"


@pytest.fixture
def server(server):
    """The ``server`` fixture with the handlers of test_tls (``app.py``: ``/vars``)."""

    def start(toml: str, **kw):
        return server(toml, {"app.py": HANDLERS}, **kw)

    return start


def _vars(port: int, ctx: ssl.SSLContext, sni: str) -> tuple[int, dict | bytes]:
    status, body, _ = https_get(port, "/vars", ctx, sni)
    return status, (json.loads(body) if status == 200 else body)


def test_verification_failures_per_mode(server, certs, tmp_path):
    ca = certs.ca()
    clients = certs.ca("clients")
    stranger = certs.ca("stranger").client("mallory")  # an issuer the server does not know
    alice = clients.client("alice")
    expired = clients.client("old", days=(-10, -1))
    selfish = Issued(*self_signed_cert(tmp_path, "selfish"), "selfish")
    trusted = f'ssl_client_certificate = "{clients.path}"\n'
    srv = server(
        _config(
            _server_block(
                "noca.example",
                ca.server(["noca.example"]),
                "NOCA",
                'ssl_verify_client = "optional_no_ca"',
            ),
            _server_block(
                "nocaca.example",
                ca.server(["nocaca.example"]),
                "NOCACA",
                trusted + 'ssl_verify_client = "optional_no_ca"',
            ),
            _server_block(
                "opt.example",
                ca.server(["opt.example"]),
                "OPT",
                trusted + 'ssl_verify_client = "optional"',
            ),
        )
    )
    port = srv.port
    # optional_no_ca without a CA: an unknown issuer and a self-signed certificate are served,
    # their verification failure shown; the certificate's variables are there
    status, doc = _vars(port, client_context(ca, stranger), "noca.example")
    assert status == 200, doc
    assert doc["ssl_client_verify"] == f"FAILED:{UNKNOWN_ISSUER}"
    assert doc["ssl_client_s_dn"] == "CN=mallory"
    status, doc = _vars(port, client_context(ca, selfish), "noca.example")
    assert status == 200 and doc["ssl_client_verify"] == "FAILED:self-signed certificate"
    status, doc = _vars(port, client_context(ca), "noca.example")
    assert status == 200 and doc["ssl_client_verify"] == "NONE"
    # optional_no_ca with the CA: a certificate it issued verifies; an expired one is an error
    # no mode lets through
    status, doc = _vars(port, client_context(ca, alice), "nocaca.example")
    assert status == 200 and doc["ssl_client_verify"] == "SUCCESS"
    status, body = _vars(port, client_context(ca, expired), "nocaca.example")
    assert status == 400 and b"The SSL certificate error" in body
    # optional: an unknown issuer is refused, with curl too
    status, body = _vars(port, client_context(ca, stranger), "opt.example")
    assert status == 400 and b"<title>400 The SSL certificate error</title>" in body
    curl = require_tool("curl", "curl")
    client = ("--cert", str(stranger.cert), "--key", str(stranger.key))
    url = f"https://opt.example:{port}/"
    resolve = ("--resolve", f"opt.example:{port}:127.0.0.1", "--cacert", str(ca.path))
    out = subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", *client, *resolve, url],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout == "400", out.stderr
    lines = [line.split("|") for line in srv.access_lines(7)]
    assert [(line[6], line[8]) for line in lines] == [
        (f"FAILED:{UNKNOWN_ISSUER}", "200"),
        ("FAILED:self-signed certificate", "200"),
        ("NONE", "200"),
        ("SUCCESS", "200"),
        ("FAILED:certificate has expired", "400"),
        (f"FAILED:{UNKNOWN_ISSUER}", "400"),
        (f"FAILED:{UNKNOWN_ISSUER}", "400"),
    ]
    srv.wait_log(
        "client SSL certificate verify error: (10:certificate has expired), client: 127.0.0.1"
    )
    srv.wait_log(
        f"client SSL certificate verify error: (21:{UNKNOWN_ISSUER}), client: 127.0.0.1",
        count=2,
    )


def _request(port: int, ctx: ssl.SSLContext, sni: str, session=None) -> tuple[bytes, object, bool]:
    """GET /vars on a new connection offering ``session``: (the reply, the connection's
    session after the reply, whether the session was resumed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni, session=session) as tls:
            tls.sendall(f"GET /vars HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
            reply = read_all(tls, timeout=5)
            return reply, tls.session, tls.session_reused


def test_a_resumed_session_keeps_its_verification_result(server, certs):
    """A session made with a certificate that failed verification resumes (on any worker,
    with its ticket) still failed: its requests are refused again; a verified one resumes
    verified, its certificate's variables there."""
    ca = certs.ca()
    clients = certs.ca("clients")
    alice = clients.client("alice")
    mallory = certs.ca("stranger").client("mallory")
    srv = server(
        _config(
            _server_block(
                "opt.example",
                ca.server(["opt.example"]),
                "OPT",
                f'ssl_client_certificate = "{clients.path}"\nssl_verify_client = "optional"',
            ),
        ),
        workers=2,
    )
    for cert, status, verify in (
        (mallory, b"400", None),
        (alice, b"200", "SUCCESS"),
    ):
        ctx = client_context(ca, cert)
        reply, session, reused = _request(srv.port, ctx, "opt.example")
        assert reply.startswith(b"HTTP/1.1 " + status) and not reused
        for _ in range(3):
            reply, _, reused = _request(srv.port, ctx, "opt.example", session)
            assert reused and reply.startswith(b"HTTP/1.1 " + status), reply[:200]
            if verify is not None:
                doc = json.loads(reply.split(b"\r\n\r\n", 1)[1])
                assert doc["ssl_client_verify"] == verify and doc["ssl_session_reused"] == "r"
                assert doc["ssl_client_s_dn"] == "CN=alice"
    lines = [line.split("|") for line in srv.access_lines(8)]
    assert [line[5] for line in lines] == [".", "r", "r", "r"] * 2
    assert {line[6] for line in lines[:4]} == {f"FAILED:{UNKNOWN_ISSUER}"}


def _s_client(port: int, ca, *args: str) -> str:
    openssl = require_tool("openssl", "openssl")
    return subprocess.run(
        [
            openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "localhost",
            "-CAfile",
            str(ca.path),
            "-ign_eof",
            *args,
        ],
        input=b"GET /vars HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        capture_output=True,
        timeout=10,
    ).stdout.decode(errors="replace")


def test_session_timeout_ends_resumption_and_alpn_chooses_http_1_1(server, certs, tmp_path):
    ca = certs.ca()
    a = ca.server(["localhost"])
    srv = server(_config(_server_block("localhost", a, "A", 'ssl_session_timeout = "2s"')))
    sess = tmp_path / "session.pem"
    first = _s_client(srv.port, ca, "-sess_out", str(sess), "-alpn", "h2,http/1.1")
    assert "New, TLSv1.3" in first and "lifetime hint: 2 (seconds)" in first
    assert "ALPN protocol: http/1.1" in first and "HTTP/1.1 200" in first
    again = _s_client(srv.port, ca, "-sess_in", str(sess))
    assert "Reused, TLSv1.3" in again
    time.sleep(2.5)  # past the session's lifetime: a full handshake
    late = _s_client(srv.port, ca, "-sess_in", str(sess))
    assert "New, TLSv1.3" in late and "Reused" not in late
    # a client offering only protocols the server does not speak goes on without ALPN
    only_h2 = _s_client(srv.port, ca, "-alpn", "h2")
    assert "No ALPN negotiated" in only_h2 and "HTTP/1.1 200" in only_h2
    assert [line.split("|")[5] for line in srv.access_lines(4)] == [".", "r", ".", "."]
