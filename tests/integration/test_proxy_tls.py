"""https:// upstreams end to end: a real `edgeworker run` proxying to a real HTTPS backend
(tests/backends/http_backend.py with a self-signed certificate made here), and
``edgeworker.http.request`` to the same backend from a handler."""

from __future__ import annotations

import json

import pytest

from ..backends import Backend
from ..support import Server, self_signed_cert

APP = '''
import json
import edgeworker

CA = {ca!r}

def fetch(req):
    resp = edgeworker.http.request("GET", "https://localhost:{port}/name", verify=CA)
    return f"{{resp.status}} {{resp.body.decode()}}"

def fetch_system(req):
    # the system's CAs: the pooled connection checked against CA must not be taken
    try:
        edgeworker.http.request("GET", "https://localhost:{port}/name")
    except edgeworker.http.RequestError as exc:
        return f"refused: {{exc}}"
    return "accepted"
'''

CONFIG = '''
[[server]]
listen = ["127.0.0.1:{{port}}"]

  [[server.location]]
  match = "/trusted/"
  proxy_pass = "https://localhost:{port}/"
  proxy_ssl_trusted_certificate = "{ca}"

  [[server.location]]
  match = "/system/"
  proxy_pass = "https://localhost:{port}/"

  [[server.location]]
  match = "/noverify/"
  proxy_pass = "https://127.0.0.1:{port}/"
  proxy_ssl_verify = false

  [[server.location]]
  match = "/wrongname/"
  proxy_pass = "https://localhost:{port}/"
  proxy_ssl_trusted_certificate = "{ca}"
  proxy_ssl_name = "other.example"

  [[server.location]]
  match = "/plain/"
  proxy_pass = "http://127.0.0.1:{port}/"

  [[server.location]]
  match = "/mtls/"
  proxy_pass = "https://localhost:{mport}/"
  proxy_ssl_trusted_certificate = "{ca}"
  proxy_ssl_certificate = "{client_cert}"
  proxy_ssl_certificate_key = "{client_key}"

  [[server.location]]
  match = "/nocert/"
  proxy_pass = "https://localhost:{mport}/"
  proxy_ssl_trusted_certificate = "{ca}"

  [[server.location]]
  match = "= /fetch"
  content = "app:fetch"

  [[server.location]]
  match = "= /fetch_system"
  content = "app:fetch_system"
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_cert(tmp)
    client_cert, client_key = self_signed_cert(tmp, "edge-client")
    backend = Backend("secure", tls=(cert, key))
    mutual = Backend("mutual", tls=(cert, key, client_cert))  # wants our client certificate
    srv = Server(tmp / "srv", CONFIG.format(port=backend.port, ca=cert, mport=mutual.port,
                                             client_cert=client_cert, client_key=client_key),
                 {"app.py": APP.format(ca=str(cert), port=backend.port)}).start()
    yield {"srv": srv, "backend": backend}
    srv.stop()
    backend.stop()
    mutual.stop()


def test_https_upstream_with_a_trusted_ca(env):
    status, _, body = env["srv"].request("GET", "/trusted/echo")
    assert status == 200
    doc = json.loads(body)
    assert doc["name"] == "secure" and doc["target"] == "/echo"
    hdrs = {k.lower(): v for k, v in doc["headers"]}
    assert hdrs["host"] == f"localhost:{env['backend'].port}"
    # keep-alive to the upstream: the next request comes over the same TLS connection
    again = json.loads(env["srv"].request("GET", "/trusted/echo")[2])
    assert again["conn"] == doc["conn"]


def test_an_unverifiable_certificate_is_a_502(env):
    assert env["srv"].request("GET", "/system/echo")[0] == 502  # not in the system's CAs
    assert env["srv"].request("GET", "/wrongname/echo")[0] == 502  # name does not match
    errors = env["srv"].errors()
    assert "TLS handshake failed" in errors and "certificate verify failed" in errors


def test_verification_off_accepts_any_certificate(env):
    status, _, body = env["srv"].request("GET", "/noverify/echo")
    assert status == 200 and json.loads(body)["name"] == "secure"


def test_plain_http_to_a_tls_port_is_a_502(env):
    assert env["srv"].request("GET", "/plain/echo")[0] == 502


def test_http_request_from_a_handler_over_tls(env):
    status, _, body = env["srv"].request("GET", "/fetch")
    assert (status, body) == (200, b"200 secure")
    status, _, body = env["srv"].request("GET", "/fetch_system")
    assert status == 200 and body.startswith(b"refused: ") and b"certificate verify failed" in body


def test_mutual_tls_with_a_client_certificate(env):
    status, _, body = env["srv"].request("GET", "/mtls/echo")
    assert status == 200 and json.loads(body)["name"] == "mutual"
    assert env["srv"].request("GET", "/nocert/echo")[0] == 502  # the upstream wants one
