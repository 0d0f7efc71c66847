"""``edgeworker.metrics``: definitions and their checks, counting in a process, the bound on
label sets, the flush into a real status zone and what the status document and Prometheus make
of it."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeworker import metrics
from edgeworker.status import prometheus, usermetrics
from edgeworker.status.collect import read_zone


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """A registry of this test's own."""
    monkeypatch.setattr(usermetrics, "_registry", {})
    monkeypatch.setattr(usermetrics, "_unsent", set())
    monkeypatch.setattr(usermetrics, "_gauges_written", False)


def document(zone) -> dict:
    reader = usermetrics.Reader()
    for k, v in read_zone(zone).items():
        parts = k.split(usermetrics.SEP)
        if parts[0] in reader.PREFIXES:
            reader.add(parts, v)
    return reader.document()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.counter("9lives", "h"), "invalid metric name '9lives'"),
        (lambda: metrics.counter("a-b", "h"), "invalid metric name 'a-b'"),
        (lambda: metrics.counter("edgeworker_mine", "h"), "the edgeworker_ prefix"),
        (lambda: metrics.counter("ok", ""), "help must be a non-empty string"),
        (lambda: metrics.counter("ok", "h", labels=("a b",)), "invalid label name 'a b'"),
        (lambda: metrics.counter("ok", "h", labels=("__x",)), "invalid label name '__x'"),
        (lambda: metrics.counter("ok", "h", labels=("a", "a")), "a label is named twice"),
        (lambda: metrics.histogram("ok", "h", labels=("le",)), 'the label "le" is reserved'),
        (lambda: metrics.gauge("ok", "h", labels=("worker",)), 'the label "worker" is reserved'),
        (lambda: metrics.histogram("ok", "h", buckets=()), "at least one finite bucket"),
        (lambda: metrics.histogram("ok", "h", buckets=(1, 1)), "strictly increasing"),
        (lambda: metrics.histogram("ok", "h", buckets=(1, "x")), "a sequence of numbers"),
        (lambda: metrics.histogram("ok", "h", buckets=range(100)), "at most 64 buckets"),
        (lambda: metrics.counter("ok", "h", max_label_sets=0), "max_label_sets must be"),
    ],
)
def test_invalid_definitions_are_refused_with_the_reason(call, message):
    with pytest.raises(ValueError, match=None) as err:
        call()
    assert message in str(err.value)


def test_a_name_has_one_definition():
    c = metrics.counter("jobs_total", "Jobs.", labels=("queue",))
    assert metrics.counter("jobs_total", "Jobs done.", labels=("queue",)) is c
    with pytest.raises(ValueError, match='"jobs_total" is already defined as a counter'):
        metrics.counter("jobs_total", "Jobs.", labels=("kind",))
    with pytest.raises(ValueError, match="already defined"):
        metrics.gauge("jobs_total", "Jobs.", labels=("queue",))
    # names that would expose the same samples: jobs (a counter, jobs_total) and a gauge
    with pytest.raises(ValueError, match='would expose the same names as counter "jobs_total"'):
        metrics.counter("jobs", "Jobs.")
    metrics.histogram("lat", "Latency.")
    with pytest.raises(ValueError, match="lat_count"):
        metrics.gauge("lat_count", "Clash.")


def test_values_count_in_memory_with_labels_in_any_order_and_type():
    c = metrics.counter("hits_total", "Hits.", labels=("method", "status"))
    c.inc(method="GET", status=200)
    c.inc(2, status="200", method="GET")  # same series: label values are strings
    c.inc(0.5, method="POST", status=201)
    assert c._series == {("GET", "200"): [3], ("POST", "201"): [0.5]}
    g = metrics.gauge("temp", "Temperature.")
    g.set(20)
    g.inc(3)
    g.dec(0.5)
    assert g._series == {(): [22.5]}
    h = metrics.histogram("size", "Sizes.", buckets=(1, 10))
    for v in (0.5, 1, 5, 50):
        h.observe(v)
    assert h._series[()] == [56.5, 2, 1, 1]  # sum; le 1, le 10, +Inf
    with pytest.raises(ValueError, match=r"labels method given, expected method, status"):
        c.inc(method="GET")
    with pytest.raises(ValueError, match="labels none given"):
        c.inc()
    with pytest.raises(ValueError, match="labels extra given, expected none"):
        g.set(1, extra="x")
    with pytest.raises(ValueError, match="a counter only goes up, not by -1"):
        c.inc(-1, method="GET", status=200)
    with pytest.raises(TypeError, match="value must be an int or a float, not str"):
        h.observe("3")
    with pytest.raises(TypeError, match="value must be an int or a float, not bool"):
        c.inc(True, method="GET", status=200)
    with pytest.raises(ValueError, match="invalid value nan"):
        c.inc(float("nan"), method="GET", status=200)
    with pytest.raises(ValueError, match="invalid value nan"):
        g.set(float("nan"))
    with pytest.raises(ValueError, match='label "method" is longer than 1024'):
        c.inc(method="x" * 2000, status=1)
    c.inc(method=["un", "hashable"], status=1)  # str() of it, as any value
    assert c._series[("['un', 'hashable']", "1")] == [1]


def test_label_sets_are_bounded_with_one_warning(caplog):
    c = metrics.counter("users_total", "Per user.", labels=("user",), max_label_sets=5)
    with caplog.at_level(logging.WARNING, logger="edgeworker"):
        for i in range(50):
            c.inc(user=i)
            c.inc(user=i)
    assert len(c._series) == 5 and all(cell == [2] for cell in c._series.values())
    assert len(c._cells) <= 10
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert 'metric "users_total": more than 5 label sets' in warnings[0]
    assert "{'user': '5'}" in warnings[0]


def test_flush_sums_processes_and_the_document_and_exposition_show_it(zones):
    z = zones("1m")
    c = metrics.counter("app_jobs_total", "Jobs done.", labels=("queue",))
    h = metrics.histogram(
        "app_wait_seconds", "Wait.\nSecond line \\ backslash.", buckets=(0.1, 1.0)
    )
    g = metrics.gauge("app_queue", "Queue length.", labels=("queue",))
    idle = metrics.counter("app_idle", "Never counted.")
    assert idle.kind == "counter"
    c.inc(queue="mail")
    c.inc(4, queue="sms")
    h.observe(0.05)
    h.observe(3)
    g.set(7, queue="mail")
    usermetrics.flush(z, "ug\x1f100", 0)
    c.inc(queue="mail")  # a second flush adds only the delta
    usermetrics.flush(z, "ug\x1f100", 0)
    # another worker (as after a fork): its own gauge record, counts added to the same keys
    usermetrics.start_worker()
    c.inc(10, queue="mail")
    g.set(3, queue="mail")
    usermetrics.flush(z, "ug\x1f101", 1)
    doc = document(z)
    jobs = doc["app_jobs_total"]
    assert jobs["type"] == "counter" and jobs["labels"] == ["queue"]
    assert {s["labels"]["queue"]: s["value"] for s in jobs["series"]} == {"mail": 12, "sms": 4}
    wait = doc["app_wait_seconds"]["series"]
    assert wait == [
        {"labels": {}, "buckets": {"0.1": 1, "1.0": 1, "+Inf": 2}, "sum": 3.05, "count": 2}
    ]
    assert doc["app_idle"]["series"] == [{"labels": {}, "value": 0}]
    queue = doc["app_queue"]["series"]
    assert sorted((s["labels"]["worker"], s["value"]) for s in queue) == [("0", 7), ("1", 3)]

    text = prometheus.render(_status_document(doc))
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert "# TYPE app_jobs_total counter" in text
    assert {s.labels["queue"]: s.value for s in fams["app_jobs"].samples} == {"mail": 12, "sms": 4}
    assert fams["app_wait_seconds"].type == "histogram"
    assert "# HELP app_wait_seconds Wait.\\nSecond line \\\\ backslash." in text
    buckets = [
        (s.labels["le"], s.value)
        for s in fams["app_wait_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert buckets == [("0.1", 1), ("1.0", 1), ("+Inf", 2)]
    assert {
        (s.labels["queue"], s.labels["worker"]): s.value for s in fams["app_queue"].samples
    } == {("mail", "0"): 7, ("mail", "1"): 3}


def test_a_reload_may_redefine_a_metric_and_old_series_are_ignored(zones, monkeypatch):
    z = zones("1m")
    from edgeworker import runtime

    monkeypatch.setattr(runtime, "config", object())
    old = metrics.counter("app_calls_total", "Calls.", labels=("a",))
    old.inc(a="x")
    usermetrics.flush(z)
    monkeypatch.setattr(runtime, "config", object())  # a reload: another configuration
    new = metrics.counter("app_calls_total", "Calls.", labels=("a", "b"))
    assert new is not old
    new.inc(a="x", b="y")
    usermetrics.flush(z)
    series = document(z)["app_calls_total"]["series"]
    assert series == [{"labels": {"a": "x", "b": "y"}, "value": 1}]


def _status_document(user: dict) -> dict:
    """The smallest status document ``prometheus.render`` takes, with ``user`` metrics."""
    return {
        "edgeworker": {"version": "0", "generation": 0, "reloads": 0, "started": None},
        "connections": {"accepted": 0, "active": 0, "reading": 0, "writing": 0, "idle": 0},
        "connections_by_protocol": {"http/1.1": 0, "h2": 0},
        "http2": {
            "connections": 0,
            "streams": 0,
            "resets_received": 0,
            "enhance_your_calm": 0,
            "streams_open": 0,
        },
        "tls": {"handshakes": 0, "resumed": 0, "failed": {}, "protocols": {}},
        "http": {"server_zones": {}},
        "upstreams": {},
        "shared_dicts": {},
        "timers": {"pending": 0, "running": 0},
        "workers": [],
        "counters": {},
        "metrics": {"flush_errors": 0},
        "user_metrics": user,
    }


def test_odd_label_values_and_a_refused_series_do_not_stop_the_flush(zones, caplog):
    z = zones("1m")
    c = metrics.counter("app_paths_total", "Paths.", labels=("path",))
    c.inc(path="/caf\udce9")  # an undecodable byte of a URI (surrogateescape): escaped
    with pytest.raises(ValueError, match="label values of more than 16384 bytes"):
        metrics.counter("app_wide_total", "Wide.", labels=tuple("abcdef")).inc(
            **dict.fromkeys("abcdef", "\u2603" * 1024)
        )
    big = metrics.counter("app_big_total", "Too big for the zone's 64-bit integers.")
    big.inc(2**70)
    after = metrics.counter("app_after_total", "Flushed after the refused one.")
    after.inc(3)
    with caplog.at_level(logging.ERROR, logger="edgeworker"):
        usermetrics.flush(z)
        usermetrics.flush(z)
    assert [r.getMessage() for r in caplog.records] == [
        'metric "app_big_total": flushing () failed'
    ]
    doc = document(z)
    assert doc["app_paths_total"]["series"] == [{"labels": {"path": "/caf\\udce9"}, "value": 1}]
    assert doc["app_after_total"]["series"] == [{"labels": {}, "value": 3}]
