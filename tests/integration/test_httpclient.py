"""`edgeworker.httpclient.request` (edgeworker.http.request) against a real backend process:
called directly from the test process, and from a handler inside a real worker."""

from __future__ import annotations

import json
import time

import pytest

from edgeworker.httpclient import RequestError, RequestTimeout, request

from ..backends import Backend
from ..support import free_port


@pytest.fixture(scope="module")
def backend():
    be = Backend("api")
    yield be
    be.stop()


def url(be, path):
    return f"http://127.0.0.1:{be.port}{path}"


def test_get_status_headers_body_json(backend):
    r = request("GET", url(backend, "/echo/x?y=1"), headers={"X-Test": "1"})
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["target"] == "/echo/x?y=1" and doc["method"] == "GET"
    heads = {k.lower(): v for k, v in doc["headers"]}
    assert heads["x-test"] == "1"
    assert heads["host"] == f"127.0.0.1:{backend.port}"
    assert r.text.startswith("{")


def test_post_json_body(backend):
    r = request("POST", url(backend, "/echo"), body={"name": "x", "n": [1, 2]})
    doc = r.json()
    assert json.loads(doc["body"]) == {"name": "x", "n": [1, 2]}
    heads = {k.lower(): v for k, v in doc["headers"]}
    assert heads["content-type"] == "application/json"
    assert heads["content-length"] == str(doc["body_len"])
    r = request("PUT", url(backend, "/echo"), body="texte é")
    assert r.json()["body_len"] == len("texte é".encode())


def test_keep_alive_reuses_the_connection(backend):
    ports = {request("GET", url(backend, "/echo")).json()["conn"] for _ in range(5)}
    assert len(ports) == 1


def test_streaming_response(backend):
    n = 3_000_000
    with request("GET", url(backend, f"/big?n={n}&chunked=1"), stream=True) as r:
        assert r.status == 200
        sizes = [len(piece) for piece in r]
    assert sum(sizes) == n and len(sizes) > 1
    assert request("GET", url(backend, "/name")).body == b"api"  # the pool still works


def test_status_codes_are_returned_not_raised(backend):
    r = request("GET", url(backend, "/status/404"))
    assert r.status == 404 and r.body == b"status 404"
    r = request("HEAD", url(backend, "/big?n=100"))
    assert r.status == 200 and r.body == b"" and r.headers["content-length"] == "100"


def test_timeout(backend):
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout):
        request("GET", url(backend, "/slow?delay=3"), timeout=0.3)
    assert time.monotonic() - t0 < 2
    with pytest.raises(TimeoutError):  # RequestTimeout is a TimeoutError too
        request("GET", url(backend, "/slow?delay=3"), timeout=0.2)


def test_refused_reset_and_bad_urls():
    with pytest.raises(RequestError, match="connect"):
        request("GET", f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(RequestError):
        request("GET", "ftp://example.com/")
    with pytest.raises(RequestError):
        request("GET", "http://nonexistent-host.invalid/")


def test_reset_and_cut(backend):
    with pytest.raises(RequestError):
        request("GET", url(backend, "/reset"))
    with pytest.raises(RequestError, match="prematurely"):
        request("GET", url(backend, "/cut?after=100"))


APP = '''
import edgeworker
from edgeworker.httpclient import request

def content(req):
    port = req.args.get("port")
    docs = [request("GET", f"http://localhost:{port}/echo/from-worker").json() for _ in range(3)]
    return {"conns": sorted({d["conn"] for d in docs}), "target": docs[0]["target"]}

def slow(req):
    port = req.args.get("port")
    r = request("GET", f"http://127.0.0.1:{port}/slow?delay=0.5")
    return r.body
'''


def test_inside_a_worker_pooled_and_cooperative(server, backend):
    srv = server('''
    [[server]]
    listen = ["127.0.0.1:{port}"]
      [[server.location]]
      match = "/call"
      content = "app:content"
      [[server.location]]
      match = "/slow"
      content = "app:slow"
    ''', {"app.py": APP}, workers=1)
    status, _, body = srv.get(f"/call?port={backend.port}")
    assert status == 200, body
    doc = json.loads(body)
    assert doc["target"] == "/echo/from-worker"
    assert len(doc["conns"]) == 1  # three calls, one pooled connection

    # cooperative: 5 calls of 0.5 s each at once on one worker take ~0.5 s, not 2.5 s
    import threading

    results = []

    def call():
        results.append(srv.get(f"/slow?port={backend.port}")[2])

    threads = [threading.Thread(target=call) for _ in range(5)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [b"slow"] * 5
    assert time.monotonic() - t0 < 2.0
