"""TLS handshake counters in ``/status.json`` and ``/metrics``, counted with real clients:
full and resumed handshakes, TLS 1.2 and 1.3, a plain-HTTP probe, a silent client, garbage,
a protocol refused, a client certificate refused."""

from __future__ import annotations

import socket
import ssl
import warnings

import pytest

from ..support import free_port, read_all, wait_until
from .test_status import get_json
from .test_tls import client_context


def _config(port: int, server_cert, ca_path) -> str:
    return f"""
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  match = "= /status.json"
  status = "json"
  [[server.location]]
  match = "= /metrics"
  status = "prometheus"

[[server]]
listen = ["127.0.0.1:{port} ssl"]
server_name = "localhost"
ssl_certificate = "{server_cert.cert}"
ssl_certificate_key = "{server_cert.key}"
ssl_handshake_timeout = "1s"
  [[server.location]]
  match = "/"
  return = {{{{ status = 200, body = "ok" }}}}

[[server]]
listen = ["127.0.0.1:{port} ssl"]
server_name = "mtls.example"
ssl_certificate = "{server_cert.cert}"
ssl_certificate_key = "{server_cert.key}"
ssl_client_certificate = "{ca_path}"
ssl_verify_client = "on"
  [[server.location]]
  match = "/"
  return = {{{{ status = 200, body = "ok" }}}}
"""


def _get(port: int, ctx: ssl.SSLContext, session=None, sni: str = "localhost"):
    """One request over a new TLS connection; the connection's session (after the reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni, session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert read_all(tls, timeout=5).startswith(b"HTTP/1.1 200")
            return tls.session, tls.session_reused


def test_handshake_counters_in_status_json_and_metrics(server, certs):
    ca = certs.ca()
    other = certs.ca("other")
    cert = ca.server(["localhost", "mtls.example"])
    stranger = other.client("stranger")
    port = free_port()
    srv = server(_config(port, cert, ca.path))
    doc = get_json(srv)
    assert doc["tls"] == {
        "handshakes": 0,
        "resumed": 0,
        "failed": {"timeout": 0, "plain_http": 0, "protocol": 0, "certificate": 0, "other": 0},
        "protocols": {"TLSv1.2": 0, "TLSv1.3": 0},
    }
    # 3 full handshakes (two TLS 1.3, one TLS 1.2), then 2 resumed TLS 1.2 ones
    ctx13 = client_context(ca)
    ctx12 = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    _get(port, ctx13)
    _get(port, ctx13)
    session, reused = _get(port, ctx12)
    assert not reused
    for _ in range(2):
        _, reused = _get(port, ctx12, session)
        assert reused
    # a plain-HTTP probe
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_all(s, timeout=5).startswith(b"HTTP/1.1 400")
    # a silent client (closed after the 1 s handshake timeout)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert read_all(s, timeout=5) == b""
    # garbage after a handshake record's first byte: other
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x08garbage!")
        assert not read_all(s, timeout=5).startswith(b"HTTP/")
    # TLS 1.1: the protocol refused
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # (deprecated versions: the point of this client)
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost")
    # a client certificate of an unknown CA: the handshake completes (nginx), the request is
    # refused 400; counted as a handshake and as refused for its certificate
    bad = client_context(ca, stranger, maximum_version=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with bad.wrap_socket(raw, server_hostname="mtls.example") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: mtls.example\r\n\r\n")
            assert read_all(tls, timeout=5).startswith(b"HTTP/1.1 400")

    want = {
        "handshakes": 6,
        "resumed": 2,
        "failed": {"timeout": 1, "plain_http": 1, "protocol": 1, "certificate": 1, "other": 1},
        "protocols": {"TLSv1.2": 4, "TLSv1.3": 2},
    }
    doc = wait_until(
        lambda: get_json(srv),
        lambda d: d["tls"] == want,
        timeout=10,
        what="the TLS counters",
        show=lambda d: d["tls"],
    )
    assert doc["tls"] == want
    _, _, body = srv.get("/metrics")
    text = body.decode()
    for line in (
        "# TYPE edgeworker_tls_handshakes_total counter",
        "edgeworker_tls_handshakes_total 6",
        "edgeworker_tls_handshakes_resumed_total 2",
        'edgeworker_tls_handshake_failures_total{reason="timeout"} 1',
        'edgeworker_tls_handshake_failures_total{reason="plain_http"} 1',
        'edgeworker_tls_handshake_failures_total{reason="protocol"} 1',
        'edgeworker_tls_handshake_failures_total{reason="certificate"} 1',
        'edgeworker_tls_handshake_failures_total{reason="other"} 1',
        'edgeworker_tls_connections_total{protocol="TLSv1.2"} 4',
        'edgeworker_tls_connections_total{protocol="TLSv1.3"} 2',
    ):
        assert line in text.splitlines(), line
