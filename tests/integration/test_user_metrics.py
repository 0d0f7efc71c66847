"""``edgeworker.metrics`` in a real server with 2 workers: defined in ``init`` (the master) and
at import of a handler module, summed over the workers, exported under their own names, bounded
in label sets, kept across a worker restart and a reload."""

from __future__ import annotations

import json
import os
import signal

from prometheus_client.parser import text_string_to_metric_families

from ..support import Server, wait_until

HANDLERS = {
    "app.py": """
        import logging

        import edgeworker
        from edgeworker import metrics

        HITS = metrics.counter("app_hits_total", "Hits by page.", labels=("page",))
        SIZE = metrics.histogram("app_size_bytes", "Body sizes.", labels=("page",),
                                 buckets=(10, 100))
        BUSY = metrics.gauge("app_busy", "Requests in progress in this worker.")
        USERS = metrics.counter("app_users_total", "Per user.", labels=("user",),
                                max_label_sets=3)
        {extra}

        def init():
            # the master: counted once, not once per worker
            metrics.counter("app_boots_total", "Starts and reloads.").inc(5)

        def init_worker():
            metrics.gauge("app_worker_ready", "1 once init_worker ran.").set(1)

        def page(req):
            BUSY.inc()
            try:
                body = req.args.get("body") or ""
                HITS.inc(page=req.uri)
                SIZE.observe(len(body), page=req.uri)
                return "%d:%s" % (edgeworker.worker.id, body)
            finally:
                BUSY.dec()

        def users(req):
            for i in range(10):
                USERS.inc(user="u%d" % i)
            return "ok"

        def bad(req):
            try:
                metrics.counter("edgeworker_http_requests_total", "Mine.")
            except ValueError as exc:
                return "refused: %s" % exc
            return "accepted"
    """,
}

CONFIG = """
[main]
init = "app:init"
init_worker = "app:init_worker"
[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  match = "= /metrics"
  status = "prometheus"
  [[server.location]]
  match = "= /status.json"
  status = "json"
  [[server.location]]
  match = "= /users"
  content = "app:users"
  [[server.location]]
  match = "= /bad"
  content = "app:bad"
  [[server.location]]
  match = "/"
  content = "app:page"
"""


def families(srv) -> dict:
    status, headers, body = srv.get("/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def values(fam, *label_names: str) -> dict:
    return {
        tuple(s.labels[n] for n in label_names): s.value
        for s in fam.samples
        if s.name.endswith(("_total", "_count")) or fam.type == "gauge"
    }


def scraped(srv, until, what: str) -> dict:
    return wait_until(
        lambda: families(srv),
        until,
        timeout=10,
        what=what,
        show=lambda f: {k: v.samples for k, v in f.items() if k.startswith("app_")},
    )


def test_user_metrics_in_a_running_server(server):
    srv = server(CONFIG, files={"app.py": HANDLERS["app.py"].replace("{extra}", "")}, workers=2)
    workers_seen = set()
    n = 0
    while (len(workers_seen) < 2 or n < 20) and n < 300:
        # a new connection each: both workers answer
        status, _, body = srv.get("/a?body=xxxxxxxxxxxx", headers={"Connection": "close"})
        assert status == 200
        workers_seen.add(body.split(b":")[0])
        n += 1
    assert len(workers_seen) == 2, "one worker took every connection"
    for _ in range(3):
        assert srv.get("/b")[0] == 200
    fams = scraped(
        srv,
        lambda f: (
            "app_hits" in f
            and values(f["app_hits"], "page").get(("/a",)) == n
            and values(f["app_hits"], "page").get(("/b",)) == 3
        ),
        "the hits of both workers summed",
    )
    assert fams["app_hits"].type == "counter"
    size = fams["app_size_bytes"]
    assert size.type == "histogram"
    b = {
        (s.labels["page"], s.labels["le"]): s.value
        for s in size.samples
        if s.name == "app_size_bytes_bucket"
    }
    assert b[("/a", "10.0")] == 0 and b[("/a", "100.0")] == n and b[("/a", "+Inf")] == n
    assert b[("/b", "10.0")] == 3  # an empty body
    sums = {s.labels["page"]: s.value for s in size.samples if s.name == "app_size_bytes_sum"}
    assert sums["/a"] == 12 * n
    # init ran in the master: counted once; the workers inherited the definition
    assert values(fams["app_boots"]) == {(): 5}
    # gauges: one series per worker, with a worker label
    assert values(fams["app_worker_ready"], "worker") == {("0",): 1, ("1",): 1}
    assert values(fams["app_busy"], "worker") == {("0",): 0, ("1",): 0}

    # the label-set bound: 3 kept, the others dropped, one warning
    assert srv.get("/users")[0] == 200
    fams = scraped(srv, lambda f: len(f["app_users"].samples) == 3, "3 user label sets")
    assert sorted(s.labels["user"] for s in fams["app_users"].samples) == ["u0", "u1", "u2"]
    srv.wait_log('metric "app_users_total": more than 3 label sets')
    assert srv.errors().count("more than 3 label sets") == 1

    # a name of edgeworker's own is refused, clearly
    body = srv.get("/bad")[2].decode()
    assert body.startswith('refused: invalid metric name "edgeworker_http_requests_total"')
    assert "the edgeworker_ prefix is edgeworker's own" in body

    # the JSON document has them too
    doc = json.loads(srv.get("/status.json")[2])
    hits = doc["user_metrics"]["app_hits_total"]
    assert hits["type"] == "counter" and hits["help"] == "Hits by page."
    assert {s["labels"]["page"]: s["value"] for s in hits["series"]} == {"/a": n, "/b": 3}

    # a worker killed: its counts stay (flushed), its gauges go, its successor reports its own
    victim = max(srv.worker_pids())
    os.kill(victim, signal.SIGKILL)
    wait_until(
        srv.worker_pids,
        lambda pids: len(pids) == 2 and victim not in pids,
        timeout=10,
        what="the worker respawned",
    )
    fams = scraped(srv, lambda f: len(f["app_worker_ready"].samples) == 2, "the new worker's gauge")
    assert values(fams["app_hits"], "page")[("/a",)] == n
    assert values(fams["app_boots"]) == {(): 5}  # not counted again by the new worker

    # a reload: values of metrics still defined are kept, a removed metric keeps its last
    # value, a new one appears, one redefined with other buckets starts afresh; init counts
    # again (once)
    (srv.dir / "app.py").write_text(
        (srv.dir / "app.py")
        .read_text()
        .replace("buckets=(10, 100)", "buckets=(10, 50, 100)")
        .replace(
            'USERS = metrics.counter("app_users_total", "Per user.", labels=("user",),\n'
            "                        max_label_sets=3)",
            'USERS = metrics.counter("app_people_total", "Per person.", labels=("user",))',
        )
    )
    os.kill(srv.master_pid, signal.SIGHUP)
    srv.wait_log("reloaded: generation 1 serving")
    wait_until(
        lambda: json.loads(srv.get("/status.json")[2])["workers"],
        lambda ws: len(ws) == 2 and all(w["generation"] == 1 for w in ws),
        timeout=10,
        what="the old workers gone",
    )  # they would count the old way
    assert srv.get("/users")[0] == 200
    assert srv.get("/a")[0] == 200
    fams = scraped(
        srv,
        lambda f: (
            "app_people" in f
            and len(f["app_people"].samples) == 10
            and values(f["app_hits"], "page")[("/a",)] == n + 1
        ),
        "the reloaded workers' counts",
    )
    assert values(fams["app_boots"]) == {(): 10}
    assert len(fams["app_users"].samples) == 3  # removed by the reload: its last values
    assert values(fams["app_hits"], "page")[("/b",)] == 3
    b = {
        (s.labels["page"], s.labels["le"]): s.value
        for s in fams["app_size_bytes"].samples
        if s.name == "app_size_bytes_bucket"
    }
    assert b == {("/a", "10.0"): 1, ("/a", "50.0"): 1, ("/a", "100.0"): 1, ("/a", "+Inf"): 1}


def test_a_definition_error_in_a_handler_module_stops_the_start(tmp_path):
    extra = 'metrics.gauge("app_hits_total", "Again, as a gauge.")'
    srv = Server(
        tmp_path / "bad",
        CONFIG,
        {"app.py": HANDLERS["app.py"].replace("{extra}", extra)},
        workers=1,
    )
    try:
        srv.start()
    except RuntimeError as exc:
        message = str(exc)
    else:
        srv.stop()
        raise AssertionError("edgeworker started with a clashing metric definition")
    assert 'metric "app_hits_total" is already defined as a counter' in message
