"""Every recipe in config/examples runs as shipped (only ports and addresses rewritten)."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import jwt as pyjwt
import pytest

from ..backends import Backend
from ..support import EDGEWORKER, ROOT, Server, free_port
from ..tls_certs import CertFactory

EXAMPLES = ROOT / "config" / "examples"
JWT_SECRET = "example-secret-example-secret-32"


def start_example(tmp_path: Path, name: str, *, workers: int | None = None,
                  replace: dict[str, str] | None = None, env: dict[str, str] | None = None,
                  files: dict[str, str] | None = None) -> Server:
    """Copy the example's config and handlers into tmp, point it at test ports, start it.
    ``files``: more modules (name -> source) beside the handlers."""
    text = (EXAMPLES / f"{name}.toml").read_text()
    # the support.Server writes its own pid_file/error_log/workers/python_path
    text = re.sub(r"^(pid_file|error_log|python_path|workers) = .*\n", "", text, flags=re.M)
    text = re.sub(r"^access_log = .*\n", "", text, flags=re.M)
    text = text.replace("127.0.0.1:8080", "127.0.0.1:{port}")
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("{", "{{").replace("}", "}}").replace("{{port}}", "{port}")
    srv = Server(tmp_path, text, files, workers=workers or 1, env=env)
    # the test server's python_path is the config's folder: put the handler modules there
    for module in (EXAMPLES / "handlers").glob("*.py"):
        shutil.copy(module, srv.dir / module.name)
    return srv.start()


@pytest.fixture
def example(tmp_path):
    started: list[Server] = []

    def run(name: str, **kw) -> Server:
        srv = start_example(tmp_path / f"{name}{len(started)}", name, **kw)
        started.append(srv)
        return srv

    yield run
    for srv in started:
        srv.stop()


_CERT_PATH = re.compile(r'"certs/([^"]+)\.(crt|key)"')


def tls_certificates(text: str, folder: Path) -> tuple[dict[str, str], CertFactory]:
    """Make the certificates a TLS example names (``"certs/NAME.crt"``, ``"certs/NAME.key"``)
    in ``folder``: a server certificate for NAME where both are named, a CA where only the
    certificate is. Returns the ``replace`` of ``start_example`` pointing the example at
    them, and the factory (its CA ``ca()`` issued the server certificates)."""
    factory = CertFactory(folder)
    ca = factory.ca()
    named: dict[str, set[str]] = {}
    for name, ext in _CERT_PATH.findall(text):
        named.setdefault(name, set()).add(ext)
    replace = {}
    for name, exts in named.items():
        if exts == {"crt", "key"}:
            issued = ca.server([name, "localhost"], file=name)
            replace[f'"certs/{name}.crt"'] = f'"{issued.cert}"'
            replace[f'"certs/{name}.key"'] = f'"{issued.key}"'
        else:  # a CA of client certificates
            replace[f'"certs/{name}.crt"'] = f'"{factory.ca(name).path}"'
    return replace, factory


def test_every_example_passes_check(tmp_path):
    # as each example's header says to run it (jwt_edge reads its secret from JWT_SECRET);
    # a TLS example with certificates made now, next to a copy of it
    env = dict(os.environ, JWT_SECRET="change-me-change-me-change-me-32b")
    for conf in sorted(EXAMPLES.glob("*.toml")):
        text = conf.read_text()
        if '"certs/' in text:
            for old, new in tls_certificates(text, tmp_path / conf.stem)[0].items():
                text = text.replace(old, new)
            text = text.replace('python_path = ["handlers"]', f'python_path = ["{EXAMPLES}/handlers"]')
            conf = tmp_path / conf.name
            conf.write_text(text)
        out = subprocess.run([*EDGEWORKER, "check", "-c", str(conf)], capture_output=True,
                             text=True, timeout=60, env=env)
        assert out.returncode == 0, (conf.name, out.stdout, out.stderr)
        assert "test is successful" in out.stdout + out.stderr


def test_hello(example):
    srv = example("hello", workers=2)
    status, _, body = srv.get("/")
    assert status == 200 and body == b"hello, world\n"
    status, h, body = srv.get("/hello?name=edge")
    assert status == 200 and body == b"hello, edge\n" and h["x-greeting"] == "1"


def test_redis_rate_limit_60_per_minute(example, redis_server):
    srv = example("redis_rate_limit", workers=2,
                  replace={"redis://127.0.0.1:6379/0": redis_server.url})
    for path in ("/api/", "/handler/"):
        for _attempt in range(3):  # retry if the run straddled a minute boundary
            minute = int(time.time() // 60)
            redis_server.command("FLUSHALL")
            statuses, last = [], None
            for _ in range(62):
                status, h, _ = srv.get(path)
                statuses.append(status)
                last = h
            if int(time.time() // 60) == minute:
                break
        assert statuses == [200] * 60 + [429] * 2, path
        assert 1 <= int(last["retry-after"]) <= 60
    # fail open: Redis down, requests go through
    redis_server.stop()
    assert [srv.get("/api/")[0] for _ in range(3)] == [200] * 3
    assert [srv.get("/handler/")[0] for _ in range(3)] == [200] * 3


@pytest.fixture
def backend():
    b = Backend("users")
    yield b
    b.stop()


def test_jwt_edge_forwards_user_headers_to_backend(example, backend):
    srv = example("jwt_edge", replace={"http://127.0.0.1:9001": f"http://{backend.addr}"},
                  env={"JWT_SECRET": JWT_SECRET})
    now = int(time.time())
    tok = pyjwt.encode({"sub": "u7", "role": "editor", "exp": now + 60}, JWT_SECRET,
                       algorithm="HS256")
    status, _, body = srv.get("/api/me", headers={"Authorization": f"Bearer {tok}",
                                                  "X-User-Id": "admin"})
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["x-user-id"] == "u7" and seen["x-user-role"] == "editor"
    assert srv.get("/api/me")[0] == 401
    expired = pyjwt.encode({"sub": "u7", "exp": now - 120}, JWT_SECRET, algorithm="HS256")
    status, h, body = srv.get("/api/me", headers={"Authorization": f"Bearer {expired}"})
    assert status == 401 and json.loads(body) == {"error": "invalid_token"}
    # the hand-written handler version
    status, _, body = srv.get("/whoami", headers={"Authorization": f"Bearer {tok}"})
    assert status == 200 and json.loads(body) == {"user": "u7"}
    assert srv.get("/whoami")[0] == 401


def test_gzip_api_compresses_proxied_json(example, backend):
    srv = example("gzip_api", replace={"127.0.0.1:9001": backend.addr})
    path = "/api/items?" + "x" * 1200  # the backend echoes the request: a JSON body over 1k
    status, h, body = srv.get(path, headers={"Accept-Encoding": "gzip"})
    assert status == 200 and h["content-encoding"] == "gzip" and h["vary"] == "Accept-Encoding"
    doc = json.loads(gzip.decompress(body))
    assert doc["target"] == path
    status, h, body = srv.get(path)
    assert "content-encoding" not in h and json.loads(body)["target"] == path
    # through another proxy (Via): only when the answer may not be cached as it is
    status, h, body = srv.get(path, headers={"Accept-Encoding": "gzip", "Via": "1.1 cdn"})
    assert "content-encoding" not in h
    status, h, body = srv.get(path, headers={"Accept-Encoding": "gzip", "Via": "1.1 cdn",
                                             "Authorization": "Bearer x"})
    assert h["content-encoding"] == "gzip"
    assert srv.get("/health")[2] == b"ok\n"


def test_lru_user_cache_hit_miss_and_502(example, backend):
    srv = example("lru_user_cache", env={"USER_SERVICE": f"http://{backend.addr}"})
    status, h, body = srv.get("/users/42")
    assert status == 200 and h["x-cache"] == "MISS"
    assert json.loads(body)["target"] == "/users/42"
    status, h, body2 = srv.get("/users/42")
    assert status == 200 and h["x-cache"] == "HIT" and body2 == body
    assert srv.get("/users/43")[1]["x-cache"] == "MISS"
    backend.stop()
    assert srv.get("/users/42")[1]["x-cache"] == "HIT"  # cached: no upstream needed
    status, h, _ = srv.get("/users/44")
    assert status == 502 and "x-cache" not in h


def test_shm_counters_across_workers(example):
    srv = example("shm_counters", workers=4)
    for _ in range(100):
        assert srv.get("/hit")[0] == 200
    doc = json.loads(srv.get("/counters")[2])
    assert doc["hits"] == 100
    assert sum(doc["per_worker"].values()) == 100


def test_log_phase_metrics_pushed_by_timer(example, redis_server):
    srv = example("log_metrics", workers=2,
                  replace={"redis://127.0.0.1:6379/0": redis_server.url})
    for i in range(5):
        assert srv.get(f"/page/{i}")[0] == 200
    import redis

    r = redis.Redis.from_url(redis_server.url)
    deadline = time.monotonic() + 5
    while r.llen("edge:metrics") < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    docs = [json.loads(x) for x in r.lrange("edge:metrics", 0, -1)]
    assert sorted(d["uri"] for d in docs) == [f"/page/{i}" for i in range(5)]
    assert all(d["status"] == 200 and d["time"] >= 0 for d in docs)
    # the push happens after the response: a stalled Redis does not delay responses
    redis_server.pause()
    try:
        t0 = time.monotonic()
        for _ in range(3):
            assert srv.get("/x")[0] == 200
        assert time.monotonic() - t0 < 0.5 * 3  # the push timeout is 500 ms each
    finally:
        redis_server.resume()


# ---------------------------------------------------------------------------- TLS recipes
def _https(port: int, ca_path: Path, sni: str, path: str = "/", cert=None, host=None):
    """GET over TLS (the server certificate verified for ``sni``): (status, headers, body,
    the certificate's subject CN)."""
    ctx = ssl.create_default_context(cafile=str(ca_path))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=sni) as tls:
        subject = dict(x[0] for x in tls.getpeercert()["subject"])
        conn = http.client.HTTPConnection(sni, port, timeout=5)
        conn.sock = tls
        conn.request("GET", path, headers={"Host": host or sni})
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, resp.read(), subject.get("commonName")


def test_https_hsts_and_the_redirect_from_http(example, tmp_path):
    text = (EXAMPLES / "https_hsts.toml").read_text()
    tls_port = free_port()
    replace, factory = tls_certificates(text, tmp_path / "certs")
    replace["127.0.0.1:8443"] = f"127.0.0.1:{tls_port}"
    srv = example("https_hsts", replace=replace)
    ca = factory.ca().path
    status, headers, body, cn = _https(tls_port, ca, "example.com", "/x")
    assert (status, body, cn) == (200, b"hello over HTTPS\n", "example.com")
    assert headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    # plain HTTP: 301 to the same host, path and query over HTTPS; no HSTS there
    status, headers, _ = srv.get("/path/a?q=1&r=2", headers={"Host": "example.com"})
    assert status == 301
    assert headers["location"] == "https://example.com/path/a?q=1&r=2"
    assert "strict-transport-security" not in headers


def test_mtls_internal_api_refuses_unknown_subjects(example, tmp_path):
    text = (EXAMPLES / "mtls_internal_api.toml").read_text()
    replace, factory = tls_certificates(text, tmp_path / "certs")
    replace["127.0.0.1:8443"] = "127.0.0.1:{port}"
    tls_port = example("mtls_internal_api", replace=replace).port
    clients = factory.ca("clients-ca")
    ca = factory.ca().path
    billing = clients.client("billing")
    status, _, body, _ = _https(tls_port, ca, "api.internal", "/api/whoami", billing)
    assert (status, json.loads(body)) == (200, {"client": "CN=billing"})
    # a certificate of the right CA with an unknown subject: 403
    status, _, body, _ = _https(tls_port, ca, "api.internal", "/api/whoami",
                                clients.client("stranger"))
    assert (status, json.loads(body)) == (403, {"error": "unknown client"})
    # no certificate: 400
    status, _, body, _ = _https(tls_port, ca, "api.internal", "/api/whoami")
    assert status == 400 and b"No required SSL certificate was sent" in body
    # a certificate of another CA: the handshake completes, the request is refused (nginx)
    status, _, body, _ = _https(
        tls_port, ca, "api.internal", "/api/whoami", factory.ca("other").client("billing")
    )
    assert status == 400 and b"The SSL certificate error" in body


def test_certificates_chosen_from_a_folder(example, tmp_path):
    text = (EXAMPLES / "tls_certificate_dir.toml").read_text()
    replace, factory = tls_certificates(text, tmp_path / "certs")
    replace["127.0.0.1:8443"] = "127.0.0.1:{port}"
    by_name = tmp_path / "certs" / "by-name"
    by_name.mkdir()
    ca = factory.ca()
    ca_path = ca.path
    for name in ("shop.example.com", "blog.example.com"):
        issued = ca.server([name])
        issued.cert.rename(by_name / f"{name}.crt")
        issued.key.rename(by_name / f"{name}.key")
    wild = ca.server(["*.example.org"])
    wild.cert.rename(by_name / "_.example.org.crt")
    wild.key.rename(by_name / "_.example.org.key")
    srv = example("tls_certificate_dir", replace=replace, env={"CERT_DIR": str(by_name)})
    tls_port = srv.port
    for sni, cn in (
        ("shop.example.com", "shop.example.com"),
        ("blog.example.com", "blog.example.com"),
        ("www.example.org", "*.example.org"),  # the wildcard file of the parent domain
        ("localhost", "default"),  # no file: the configured certificate
    ):
        status, _, body, got = _https(tls_port, ca_path, sni)
        assert (status, body, got) == (200, f"served for {sni}\n".encode(), cn), sni
    # a new name: its files written, served at once (no reload)
    issued = ca.server(["new.example.com"])
    issued.cert.rename(by_name / "new.example.com.crt")
    issued.key.rename(by_name / "new.example.com.key")
    assert _https(tls_port, ca_path, "new.example.com")[3] == "new.example.com"


def test_app_metrics_counts_by_route_and_status_across_workers(example):
    from prometheus_client.parser import text_string_to_metric_families

    srv = example("app_metrics", workers=2)
    paths = ["/api/items/1"] * 5 + ["/api/users/7"] * 2 + ["/api/nope/x", "/api/items/missing"]
    for path in paths:
        status, _, body = srv.get(path, headers={"Connection": "close"})
        assert status == (404 if path.endswith(("/x", "/missing")) else 200), (path, body)
    assert srv.get("/api/items/1")[2] == b"items 1\n"
    want = {("items", "200"): 6, ("users", "200"): 2, ("other", "404"): 1, ("items", "404"): 1}

    def scrape() -> dict:
        text = srv.get("/metrics")[2].decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    deadline = time.monotonic() + 10
    while True:
        fams = scrape()
        got = {(s.labels["route"], s.labels["status"]): s.value
               for s in fams["app_requests"].samples} if "app_requests" in fams else {}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == want
    assert fams["app_requests"].type == "counter"
    hist = fams["app_request_duration_seconds"]
    assert hist.type == "histogram"
    counts = {s.labels["route"]: s.value for s in hist.samples if s.name.endswith("_count")}
    assert counts == {"items": 7, "users": 2, "other": 1}
    inf = {s.labels["route"]: s.value for s in hist.samples
           if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"}
    assert inf == counts
