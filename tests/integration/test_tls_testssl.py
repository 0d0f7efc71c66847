"""testssl.sh against an edgeworker TLS server on loopback: no finding rated HIGH or CRITICAL
(the slow suite; Debian package ``testssl.sh``, installed by ``scripts/system-deps.sh slow``;
``TESTSSL=/path/to/testssl.sh`` runs another copy).

The certificate is made so that it is no finding itself: a year of validity, a CRL
distribution point, the test CA added to testssl's trust stores. The server prefers its own
cipher order (see the config below: testssl 3.0 rates the client's choice HIGH). The checks are a bounded
subset (protocols, cipher categories, forward secrecy, server defaults and preferences,
headers, vulnerabilities; no client simulation), within 3 minutes."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ..support import require_tool
from ..tls_certs import CA

pytestmark = pytest.mark.slow

CHECKS = (
    "--protocols",
    "--std",
    "--fs",
    "--server-defaults",
    "--server-preference",
    "--headers",
    "--vulnerable",
)


def _testssl() -> str:
    return os.environ.get("TESTSSL") or require_tool("testssl", "testssl.sh", "testssl.sh")


@pytest.mark.timeout(240)
def test_testssl_finds_nothing_high_or_critical(server, certs, tmp_path):
    testssl = _testssl()
    ca_long = CA(certs.folder, "testssl", days=400)
    cert = ca_long.server(["localhost"], days=(-1, 365), crl_url="http://127.0.0.1/test.crl")
    srv = server(
        f"""
[[server]]
listen = ["127.0.0.1:{{port}} ssl"]
server_name = "localhost"
ssl_certificate = "{cert.cert}"
ssl_certificate_key = "{cert.key}"
# testssl.sh 3.0 (Debian's) rates "no server cipher order" HIGH, although every suite offered
# is strong (Mozilla's "intermediate" leaves the order to the client, as the default here);
# 3.2 and later no longer do
ssl_prefer_server_ciphers = true
  [[server.location]]
  match = "/"
  return = {{{{ status = 200, body = "ok" }}}}
"""
    )
    pem = tmp_path / "testssl-ca.pem"  # (testssl reads CA files named *.pem)
    pem.write_bytes(ca_long.path.read_bytes())
    report = tmp_path / "testssl.json"
    cmd = [
        testssl,
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        "--nodns",
        "none",
        "--ip",
        "127.0.0.1",
        "--openssl-timeout",
        "10",
        "--add-ca",
        str(pem),
        "--jsonfile",
        str(report),
        *CHECKS,
        f"localhost:{srv.port}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert report.exists(), out.stdout[-3000:] + out.stderr[-3000:]
    findings = json.loads(report.read_text())
    assert not [f for f in findings if f["severity"] == "FATAL"], out.stdout[-3000:]
    bad = [
        f"{f['severity']} {f['id']}: {f['finding']}"
        for f in findings
        if f["severity"] in ("HIGH", "CRITICAL")
    ]
    assert not bad, "\n".join(bad)
    # the run did test the server: the protocols it offers were seen
    by_id = {f["id"]: f for f in findings}
    assert by_id["TLS1_3"]["finding"].startswith("offered"), by_id["TLS1_3"]
    assert by_id["TLS1_2"]["finding"].startswith("offered"), by_id["TLS1_2"]
    assert "not offered" in by_id["TLS1_1"]["finding"], by_id["TLS1_1"]
