"""Status API (JSON), Prometheus exposition and the shared-memory counters behind them.

Real `edgeworker run` servers with 2 workers; counters are checked exactly after a known request
mix spread over both workers (each worker flushes its counts into shared memory every 0.5 s, so
the tests poll the document until the counts arrive).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..support import read_all, wait_until

FLUSH_WAIT = 1.5  # counters are at most ~1 s stale: waited out where a poll cannot tell

HANDLERS = {
    "app.py": """
        import edgeworker
        from edgeworker.status import metrics

        def hello(req):
            return "hello from %d\\n" % edgeworker.worker.id

        def boom(req):
            raise RuntimeError("boom")

        def echo(req):
            return req.read_body()

        def events(req):
            metrics.count("limit_rejections")
            metrics.count("jwt_rejections", 2)
            metrics.count("my_event", 3)
            return "ok"

        def bad_event(req):
            try:
                metrics.count("Bad Name")
            except ValueError as exc:
                return "refused: %s" % exc
            return "accepted"

        def upstream(req):
            metrics.upstream_event("backend", "127.0.0.1:9001", 200, 0.010, sent=100, received=250)
            metrics.upstream_event("backend", "127.0.0.1:9001", 502, 0.030)
            metrics.upstream_event("backend", "127.0.0.1:9002", None, None)
            metrics.upstream_event("other", "10.0.0.1:80", 204, 0.5)
            metrics.upstream_state("backend", "127.0.0.1:9002", "unavailable")
            return "ok"

        def fill(req):
            d = edgeworker.shared["counters"]
            for i in range(int(req.args.get("n"))):
                d.set("k%d" % i, i)
            return "ok"

        def slow(req):
            edgeworker.sleep(float(req.args.get("s", "2")))
            return "slow"

        def arm(req):
            edgeworker.timer.at(30, lambda premature: None)
            return "armed"
    """,
}

CONFIG = """
[main]
[shared_dict]
counters = "1m"

[upstream.backend]
servers = ["127.0.0.1:9001", {{ address = "127.0.0.1:9002", weight = 3, backup = true }}]

[[server]]
listen = ["127.0.0.1:{port}"]
server_name = ["edge.test"]

  [[server.location]]
  match = "= /status.json"
  status = "json"

  [[server.location]]
  match = "= /metrics"
  status = "prometheus"

  [[server.location]]
  match = "= /hello"
  content = "app:hello"

  [[server.location]]
  match = "= /boom"
  content = "app:boom"

  [[server.location]]
  match = "= /echo"
  content = "app:echo"

  [[server.location]]
  match = "= /old"
  return = {{ status = 301, location = "/new" }}

  [[server.location]]
  match = "= /events"
  content = "app:events"

  [[server.location]]
  match = "= /bad-event"
  content = "app:bad_event"

  [[server.location]]
  match = "= /upstream"
  content = "app:upstream"

  [[server.location]]
  match = "= /fill"
  content = "app:fill"

  [[server.location]]
  match = "= /slow"
  content = "app:slow"

  [[server.location]]
  match = "= /arm"
  content = "app:arm"

  [[server.location]]
  match = "/"
  return = {{ status = 404 }}
"""


def raw_request(srv, data: bytes) -> bytes:
    """One request on a new connection (``Connection: close``); the whole response."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(data)
        return read_all(s, 10)


def get_json(srv, path: str = "/status.json") -> dict:
    status, headers, body = srv.get(path)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    return json.loads(body)


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


@pytest.fixture
def srv(server):
    return server(CONFIG, files=HANDLERS, workers=2)


def loc(doc: dict, match: str, zone: str = "edge.test") -> dict:
    return doc["http"]["server_zones"][zone]["locations"][match]


def counted(srv, until, what: str, path: str = "/status.json", show=None) -> dict:
    """The status document at ``path`` once ``until(doc)`` holds (polled; fails after 10 s)."""
    return wait_until(lambda: get_json(srv, path), until, timeout=10, what=what, show=show)


def counted_with_fetches(srv, until, base: int, what: str) -> tuple[dict, int]:
    """Poll ``/status.json`` until ``until(doc)`` holds and its own location counts ``base`` plus
    every fetch of this poll but the one being answered (so no fetch is still on its way).

    Returns the document and the number of fetches the poll made.
    """
    fetches = 0

    def fetch() -> dict:
        nonlocal fetches
        fetches += 1
        return get_json(srv)

    def done(doc: dict) -> bool:
        return loc(doc, "= /status.json")["requests"] == base + fetches - 1 and until(doc)

    doc = wait_until(fetch, done, timeout=10, what=what, show=lambda d: d["http"]["server_zones"])
    return doc, fetches


# ------------------------------------------------------------------------------ the document
def test_json_document_has_the_spec_minimum_and_angie_sections(srv):
    doc = get_json(srv)
    for key in ("edgeworker", "connections", "requests", "responses", "data", "http",
                "upstreams", "shared_dicts", "workers", "timers", "counters", "request_time"):
        assert key in doc, key
    assert set(doc["connections"]) == {"accepted", "active", "reading", "writing", "idle"}
    assert all(isinstance(v, int) and v >= 0 for v in doc["connections"].values())
    assert isinstance(doc["requests"]["total"], int)
    assert set(doc["responses"]) == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    sd = doc["shared_dicts"]["counters"]
    assert sd["capacity"] == 1024 * 1024
    assert {"capacity", "used", "entries", "free", "evictions"} <= set(sd)
    assert "@status" not in doc["shared_dicts"]  # the internal zone is not a user dict
    ew = doc["edgeworker"]
    assert ew["pid"] == srv.master_pid
    assert ew["generation"] == 0 and ew["reloads"] == 0
    assert ew["version"]
    # configured upstream peers are listed before any traffic
    peers = doc["upstreams"]["backend"]["peers"]
    assert set(peers) == {"127.0.0.1:9001", "127.0.0.1:9002"}
    assert peers["127.0.0.1:9002"]["weight"] == 3 and peers["127.0.0.1:9002"]["backup"] is True
    assert peers["127.0.0.1:9001"]["requests"] == 0 and peers["127.0.0.1:9001"]["state"] == "up"
    # every location of the config is a zone, with an empty histogram
    hello = loc(doc, "= /hello")
    assert hello["requests"] == 0
    assert hello["request_time"]["buckets"]["+Inf"] == 0
    assert doc["metrics"]["enabled"] is True
    assert doc["counters"] == {"limit_rejections": 0, "jwt_rejections": 0}


def test_workers_are_listed_with_pid_id_generation(srv):
    pids = sorted(srv.worker_pids())
    deadline = time.monotonic() + 5
    while True:
        doc = get_json(srv)
        if sorted(w["pid"] for w in doc["workers"]) == pids or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(w["pid"] for w in doc["workers"]) == pids
    assert sorted(w["id"] for w in doc["workers"]) == [0, 1]
    for w in doc["workers"]:
        assert w["generation"] == 0 and w["state"] == "serving" and w["restarts"] == 0
        assert w["started"] <= time.time()


# ------------------------------------------------------------------------ exact counters
def test_counters_are_exact_after_a_known_mix_across_two_workers(srv):
    hello = b"GET /hello HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"
    missing = b"GET /nowhere?x=1 HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"
    boom = b"GET /boom HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"
    old = b"GET /old HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"
    payload = b"x" * 1000
    echo = (b"POST /echo HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 1000\r\n"
            b"Connection: close\r\n\r\n" + payload)
    before = get_json(srv)
    # the baseline: every connection so far counted (the start-up probes too), and `before` a
    # fetch at no particular point of a flush, so its own connection is not in it
    time.sleep(FLUSH_WAIT)
    before = get_json(srv)
    workers_seen = set()
    hello_bytes = 0
    n_hello = 0
    # hello on new connections until both workers answered (bounded), then a fixed mix
    while (len(workers_seen) < 2 or n_hello < 20) and n_hello < 400:
        resp = raw_request(srv, hello)
        assert resp.startswith(b"HTTP/1.1 200")
        body = body_of(resp)
        workers_seen.add(body.strip())
        hello_bytes += len(body)
        n_hello += 1
    assert len(workers_seen) == 2, "one worker took every connection"
    for _ in range(7):
        assert raw_request(srv, missing).startswith(b"HTTP/1.1 404")
    for _ in range(3):
        assert raw_request(srv, boom).startswith(b"HTTP/1.1 500")
    for _ in range(4):
        assert raw_request(srv, old).startswith(b"HTTP/1.1 301")
    for _ in range(5):
        r = raw_request(srv, echo)
        assert r.startswith(b"HTTP/1.1 200") and body_of(r) == payload
    mix_status = {"= /hello": {"200": n_hello}, "/": {"404": 7}, "= /boom": {"500": 3},
                  "= /old": {"301": 4}, "= /echo": {"200": 5}}
    doc, status_reqs = counted_with_fetches(
        srv, lambda doc: all(loc(doc, m)["status"] == st for m, st in mix_status.items()),
        loc(before, "= /status.json")["requests"] + 1, "the request mix counted")

    h = loc(doc, "= /hello")
    assert h["requests"] == n_hello
    assert h["status"] == {"200": n_hello}
    assert h["responses"]["2xx"] == n_hello
    assert h["data"]["sent"] == hello_bytes
    assert h["data"]["received"] == n_hello * len(hello)
    assert h["request_time"]["count"] == n_hello
    assert h["request_time"]["buckets"]["+Inf"] == n_hello
    assert h["request_time"]["sum"] > 0
    bounds = list(h["request_time"]["buckets"].values())
    assert bounds == sorted(bounds)  # cumulative

    m = loc(doc, "/")
    assert m["status"] == {"404": 7} and m["responses"]["4xx"] == 7
    assert m["data"]["received"] == 7 * len(missing)
    b = loc(doc, "= /boom")
    assert b["status"] == {"500": 3} and b["responses"]["5xx"] == 3
    o = loc(doc, "= /old")
    assert o["status"] == {"301": 4} and o["responses"]["3xx"] == 4
    e = loc(doc, "= /echo")
    assert e["status"] == {"200": 5}
    assert e["data"]["received"] == 5 * len(echo)  # head and body
    assert e["data"]["sent"] == 5 * len(payload)

    mix = n_hello + 7 + 3 + 4 + 5
    # status_reqs: the `before` fetch and the poll's fetches but the last (all counted by now)
    assert doc["requests"]["total"] == before["requests"]["total"] + mix + status_reqs
    zone = doc["http"]["server_zones"]["edge.test"]
    assert zone["requests"] == doc["requests"]["total"]
    assert (doc["responses"]["5xx"] - before["responses"]["5xx"]) == 3
    assert (doc["responses"]["3xx"] - before["responses"]["3xx"]) == 4
    assert (doc["responses"]["4xx"] - before["responses"]["4xx"]) == 7
    # connections: one per request; the fetch being answered may or may not be flushed yet
    accepted = doc["connections"]["accepted"] - before["connections"]["accepted"]
    assert mix + status_reqs <= accepted <= mix + status_reqs + 1
    # every worker answers the same figures (they are read from shared memory)
    for _ in range(6):
        again = get_json(srv)
        assert loc(again, "= /hello")["requests"] == n_hello
        assert loc(again, "= /boom")["status"] == {"500": 3}


def test_requests_matching_no_location_are_counted_under_dash(server):
    srv = server("""
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          match = "/api/"
          return = {{ status = 204 }}
          [[server.location]]
          match = "= /s"
          status = "json"
        """, workers=1)
    for _ in range(3):
        assert srv.get("/elsewhere")[0] == 404
    assert srv.get("/api/x")[0] == 204
    name = f"127.0.0.1:{srv.port}"

    def reached(doc: dict) -> bool:
        locations = doc["http"]["server_zones"][name]["locations"]
        return (locations.get("-", {}).get("requests", 0) >= 3
                and locations["/api/"]["requests"] >= 1)

    doc = counted(srv, reached, "the 404s and the 204 counted", path="/s", show=lambda d: d["http"])
    zone = doc["http"]["server_zones"][name]
    assert zone["locations"]["-"]["status"] == {"404": 3}
    assert zone["locations"]["/api/"]["status"] == {"204": 1}


# --------------------------------------------------------------------- APIs for other parts
def test_event_counters_api(srv):
    for _ in range(2):
        assert srv.get("/events")[0] == 200
    status, _, body = srv.get("/bad-event")
    assert body.startswith(b"refused: invalid counter name")
    doc = counted(srv, lambda doc: doc["counters"].get("my_event", 0) >= 6, "my_event counted 6",
                  show=lambda d: d["counters"])
    assert doc["counters"] == {"limit_rejections": 2, "jwt_rejections": 4, "my_event": 6}
    text = srv.get("/metrics")[2].decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["edgeworker_limit_rejections"].samples[0].value == 2
    assert fams["edgeworker_jwt_rejections"].samples[0].value == 4
    ev = fams["edgeworker_events"].samples
    assert [(s.labels, s.value) for s in ev] == [({"name": "my_event"}, 6)]


def test_upstream_api_reports_peers(srv):
    assert srv.get("/upstream")[0] == 200
    assert srv.get("/upstream")[0] == 200

    def reported(doc: dict) -> bool:
        peers = doc["upstreams"]["backend"]["peers"]
        other = doc["upstreams"].get("other", {}).get("peers", {}).get("10.0.0.1:80", {})
        return (peers["127.0.0.1:9001"]["requests"] >= 4 and peers["127.0.0.1:9002"]["fails"] >= 2
                and sum(other.get("status", {}).values()) >= 2)

    doc = counted(srv, reported, "both upstream calls reported", show=lambda d: d["upstreams"])
    p1 = doc["upstreams"]["backend"]["peers"]["127.0.0.1:9001"]
    assert p1["requests"] == 4 and p1["status"] == {"200": 2, "502": 2}
    assert p1["responses"]["2xx"] == 2 and p1["responses"]["5xx"] == 2
    assert p1["fails"] == 0
    assert p1["data"] == {"sent": 200, "received": 500}
    assert p1["response_time"] == pytest.approx(0.020)
    assert p1["state"] == "up"
    p2 = doc["upstreams"]["backend"]["peers"]["127.0.0.1:9002"]
    assert p2["fails"] == 2 and p2["requests"] == 2 and p2["response_time"] is None
    assert p2["state"] == "unavailable"
    # an upstream that is not an [upstream] table (proxy_pass to host:port) shows up too
    other = doc["upstreams"]["other"]["peers"]["10.0.0.1:80"]
    assert other["status"] == {"204": 2}
    text = srv.get("/metrics")[2].decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    up = {(s.labels["upstream"], s.labels["peer"]): s.value
          for s in fams["edgeworker_upstream_peer_up"].samples}
    assert up[("backend", "127.0.0.1:9001")] == 1 and up[("backend", "127.0.0.1:9002")] == 0
    reqs = {(s.labels["peer"], s.labels["status"]): s.value
            for s in fams["edgeworker_upstream_requests"].samples}
    assert reqs[("127.0.0.1:9001", "502")] == 2
    fails = {s.labels["peer"]: s.value for s in fams["edgeworker_upstream_fails"].samples}
    assert fails["127.0.0.1:9002"] == 2
    # response times in a histogram by upstream: 0.010 and 0.030 twice each for backend (the
    # failed attempts had no time), 0.5 twice for other
    hist = doc["upstreams"]["backend"]["response_time"]
    assert hist["count"] == 4 and hist["sum"] == pytest.approx(0.08)
    assert hist["buckets"]["0.005"] == 0 and hist["buckets"]["0.01"] == 2
    assert hist["buckets"]["0.025"] == 2 and hist["buckets"]["0.05"] == 4
    fam = fams["edgeworker_upstream_response_duration_seconds"]
    assert fam.type == "histogram"
    buckets = {(s.labels["upstream"], s.labels["le"]): s.value for s in fam.samples
               if s.name.endswith("_bucket")}
    assert buckets[("backend", "0.01")] == 2 and buckets[("backend", "+Inf")] == 4
    assert buckets[("other", "0.25")] == 0 and buckets[("other", "0.5")] == 2
    counts = {s.labels["upstream"]: s.value for s in fam.samples if s.name.endswith("_count")}
    assert counts == {"backend": 4, "other": 2}


def test_shared_dicts_and_timers_are_reported(srv):
    assert srv.get("/fill?n=50")[0] == 200
    doc = get_json(srv)  # shared dict figures are live, not flushed
    sd = doc["shared_dicts"]["counters"]
    assert sd["entries"] == 50
    assert 0 < sd["used"] <= sd["capacity"]
    assert doc["timers"] == {"pending": 0, "running": 0}  # the flush timer is not counted
    assert srv.get("/arm")[0] == 200
    doc = counted(srv, lambda doc: doc["timers"]["pending"] >= 1, "the armed timer reported",
                  show=lambda d: (d["timers"], d["workers"]))
    assert doc["timers"]["pending"] == 1
    assert sum(w["timers"]["pending"] for w in doc["workers"]) == 1


def test_connection_gauges(srv):
    idle = socket.create_connection(("127.0.0.1", srv.port))
    idle.sendall(b"GET /hello HTTP/1.1\r\nHost: edge.test\r\n\r\n")
    idle.recv(65536)  # answered; the connection stays open, idle
    reading = socket.create_connection(("127.0.0.1", srv.port))
    reading.sendall(b"GET /hello HTTP/1.1\r\nHost: ed")  # an incomplete head
    slow = socket.create_connection(("127.0.0.1", srv.port))
    slow.sendall(b"GET /slow?s=3 HTTP/1.1\r\nHost: edge.test\r\n\r\n")  # being processed
    try:
        c = counted(srv, lambda doc: min(doc["connections"][k] for k in ("idle", "reading",
                                                                         "writing")) >= 1,
                    "an idle, a reading and a writing connection reported",
                    show=lambda d: d["connections"])["connections"]
        assert c["idle"] >= 1 and c["reading"] >= 1 and c["writing"] >= 1
        assert c["active"] == c["idle"] + c["reading"] + c["writing"]
        assert c["active"] >= 3
    finally:
        for s in (idle, reading, slow):
            s.close()
    c = counted(srv, lambda doc: doc["connections"]["reading"] == doc["connections"]["idle"] == 0,
                "the closed connections gone from the gauges",
                show=lambda d: d["connections"])["connections"]
    assert c["reading"] == 0 and c["idle"] == 0  # only the status fetch itself may show


# ------------------------------------------------------------------------ lifecycle
def test_restart_and_reload_are_recorded_and_counters_survive(srv):
    for _ in range(10):
        assert srv.get("/hello")[0] == 200
    doc = counted(srv, lambda doc: loc(doc, "= /hello")["requests"] >= 10, "10 requests counted",
                  show=lambda d: loc(d, "= /hello"))
    n_before = loc(doc, "= /hello")["requests"]
    assert n_before == 10
    victim = next(w for w in doc["workers"] if w["id"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        doc = get_json(srv)
        ws = {w["id"]: w for w in doc["workers"]}
        if set(ws) == {0, 1} and ws[1]["pid"] != victim["pid"] and len(doc["workers"]) == 2:
            break
        time.sleep(0.2)
    ws = {w["id"]: w for w in doc["workers"]}
    assert ws[1]["pid"] != victim["pid"] and ws[1]["restarts"] == 1
    assert ws[0]["restarts"] == 0
    fams = {f.name: f for f in text_string_to_metric_families(srv.get("/metrics")[2].decode())}
    restarts = fams["edgeworker_worker_restarts"]
    assert restarts.type == "counter"
    assert {s.name for s in restarts.samples} == {"edgeworker_worker_restarts_total"}
    assert {s.labels["id"]: s.value for s in restarts.samples} == {"0": 0, "1": 1}
    assert victim["pid"] not in [w["pid"] for w in doc["workers"]]

    os.kill(srv.master_pid, signal.SIGHUP)
    srv.wait_log("reloaded: generation 1 serving")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        doc = get_json(srv)
        if all(w["generation"] == 1 for w in doc["workers"]) and len(doc["workers"]) == 2:
            break
        time.sleep(0.2)
    assert doc["edgeworker"]["generation"] == 1
    assert doc["edgeworker"]["reloads"] == 1
    assert doc["edgeworker"]["load_time"] > doc["edgeworker"]["started"]
    assert sorted(w["id"] for w in doc["workers"]) == [0, 1]
    assert all(w["generation"] == 1 and w["state"] == "serving" for w in doc["workers"])
    # restarts count deaths per worker id since start; a reload is not a restart
    assert {w["id"]: w["restarts"] for w in doc["workers"]} == {0: 0, 1: 1}
    assert loc(doc, "= /hello")["requests"] == n_before  # the zone survived the reload
    assert srv.get("/hello")[0] == 200
    doc = counted(srv, lambda doc: loc(doc, "= /hello")["requests"] >= n_before + 1,
                  "the request after the reload counted", show=lambda d: loc(d, "= /hello"))
    assert loc(doc, "= /hello")["requests"] == n_before + 1


def test_metrics_off_counts_nothing(server):
    srv = server("""
        [main]
        metrics = false
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          match = "= /s"
          status = "json"
          [[server.location]]
          match = "= /events"
          content = "app:events"
          [[server.location]]
          match = "/"
          return = {{ status = 200, body = "ok" }}
        """, files=HANDLERS, workers=1)
    for _ in range(5):
        assert srv.get("/x")[0] == 200
    assert srv.get("/events")[0] == 200
    time.sleep(FLUSH_WAIT)  # nothing may be counted: the flushes it would take are waited out
    doc = get_json(srv, "/s")
    assert doc["requests"]["total"] == 0
    assert doc["counters"] == {"limit_rejections": 0, "jwt_rejections": 0}
    assert doc["connections"]["accepted"] == 0
    assert doc["metrics"]["enabled"] is False
    assert len(doc["workers"]) == 1  # the master still records its workers


# -------------------------------------------------------------------------- prometheus
def test_prometheus_exposition_parses_and_matches_the_json(srv):
    for _ in range(3):
        assert srv.get("/hello")[0] == 200
    assert srv.get("/boom")[0] == 500
    assert srv.get("/fill?n=5")[0] == 200
    counted(srv, lambda doc: loc(doc, "= /hello")["requests"] + loc(doc, "= /boom")["requests"]
            + loc(doc, "= /fill")["requests"] >= 5, "5 requests counted",
            show=lambda d: d["http"])
    status, headers, body = srv.get("/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    doc = get_json(srv)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    # every metric has HELP and TYPE, and every name is edgeworker_*
    for name, fam in fams.items():
        assert name.startswith("edgeworker_"), name
        assert fam.documentation, name
        suffix = "_total" if fam.type == "counter" else ""
        assert f"# TYPE {name}{suffix} {fam.type}" in text
    assert fams["edgeworker_http_requests"].type == "counter"
    reqs = {(s.labels["zone"], s.labels["location"], s.labels["status"]): s.value
            for s in fams["edgeworker_http_requests"].samples}
    assert all(s.name == "edgeworker_http_requests_total"
               for s in fams["edgeworker_http_requests"].samples)
    assert reqs[("edge.test", "= /hello", "200")] == 3
    assert reqs[("edge.test", "= /boom", "500")] == 1
    hello = loc(doc, "= /hello")
    sent = {(s.labels["zone"], s.labels["location"]): s.value
            for s in fams["edgeworker_http_sent_bytes"].samples}
    assert sent[("edge.test", "= /hello")] == hello["data"]["sent"]
    hist = fams["edgeworker_http_request_duration_seconds"]
    assert hist.type == "histogram"
    buckets = [s for s in hist.samples if s.name.endswith("_bucket")
               and s.labels["location"] == "= /hello"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 3
    les = [float(s.labels["le"]) for s in buckets]
    assert les == sorted(les)
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)
    dicts = {s.labels["dict"]: s.value for s in fams["edgeworker_shared_dict_entries"].samples}
    assert dicts == {"counters": 5}
    cap = fams["edgeworker_shared_dict_capacity_bytes"].samples[0]
    assert cap.value == doc["shared_dicts"]["counters"]["capacity"]
    assert fams["edgeworker_connections_accepted"].type == "counter"
    states = {s.labels["state"] for s in fams["edgeworker_connections"].samples}
    assert states == {"reading", "writing", "idle"}
    workers = fams["edgeworker_worker_info"].samples
    assert sorted(int(s.labels["pid"]) for s in workers) == sorted(srv.worker_pids())
    assert fams["edgeworker_reloads"].samples[0].value == 0
    peers = {s.labels["peer"] for s in fams["edgeworker_upstream_peer_weight"].samples}
    assert peers == {"127.0.0.1:9001", "127.0.0.1:9002"}


def test_prometheus_label_values_are_escaped(server):
    srv = server(r"""
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          match = '~ ^/q"uote\d+$'
          return = {{ status = 200, body = "ok" }}
          [[server.location]]
          match = "= /metrics"
          status = "prometheus"
        """, workers=1)
    assert srv.get("/q%22uote12")[0] == 200
    # waited out rather than polled: a poll's own fetches would be counted on /metrics
    time.sleep(FLUSH_WAIT)
    text = srv.get("/metrics")[2].decode()
    assert 'location="~ ^/q\\"uote\\\\d+$"' in text  # \" and \\ escapes
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    reqs = {s.labels["location"]: s.value for s in fams["edgeworker_http_requests"].samples}
    assert reqs == {'~ ^/q"uote\\d+$': 1}


def test_status_locations_answer_get_and_head_only_and_formats(srv):
    assert srv.request("HEAD", "/status.json")[0] == 200
    status, headers, _ = srv.request("POST", "/status.json", body=b"")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = srv.get("/status.json?format=prometheus")
    assert status == 200 and body.startswith(b"# HELP edgeworker_")
    status, _, body = srv.get("/metrics?format=json")
    assert status == 200 and "connections" in json.loads(body)
    assert srv.get("/metrics?format=xml")[0] == 400


def test_internal_zone_name_cannot_clash_and_is_freed_at_stop(server, tmp_path):
    srv = server("""
        [shared_dict]
        status = "64k"
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          match = "= /s"
          status = "json"
        """, workers=1)
    doc = get_json(srv, "/s")
    assert list(doc["shared_dicts"]) == ["status"]
    shm_file = f"/dev/shm/edgeworker.{srv.master_pid}.@status"
    assert os.path.exists(shm_file)
    srv.stop()
    assert not os.path.exists(shm_file)


def test_status_zone_size_is_configurable_and_validated(server, tmp_path):
    from edgeworker.config import ConfigError, loads

    with pytest.raises(ConfigError) as err:
        loads('[main]\nstatus_zone_size = "8k"\n[[server]]\n', str(tmp_path / "x.toml"))
    assert "main.status_zone_size: too small" in str(err.value)
    srv = server("""
        [main]
        status_zone_size = "256k"
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          match = "= /s"
          status = "json"
        """, workers=1)
    assert get_json(srv, "/s")["metrics"]["zone"]["capacity"] == 256 * 1024
    # the zone survives reloads: a new size waits for a restart (and says so)
    srv.config.write_text(srv.config.read_text().replace('"256k"', '"512k"'))
    os.kill(srv.master_pid, signal.SIGHUP)
    srv.wait_log("reloaded: generation 1 serving")
    assert "status zone keeps its size until the next restart" in srv.errors()
    assert get_json(srv, "/s")["metrics"]["zone"]["capacity"] == 256 * 1024


def test_default_config_serves_status_on_loopback():
    from edgeworker.config import load
    from edgeworker.status import DASHBOARD_FILE

    path = os.path.join(os.path.dirname(__import__("edgeworker").__file__), "default",
                        "edgeworker.toml")
    cfg = load(path)
    kinds = {loc.match: loc.status for s in cfg.server for loc in s.location if loc.status}
    assert kinds == {"= /status": "dashboard", "= /status.json": "json",
                     "= /metrics": "prometheus"}
    assert all(a.startswith("127.0.0.1:") for s in cfg.server for a in s.listen)
    page = DASHBOARD_FILE.read_text()
    assert "?format=json" in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing external
