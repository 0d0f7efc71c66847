"""``edgeworker.status.metrics.upstream_event``: the counters of one attempt against an
upstream server, kept by the worker until the next flush."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeworker.status import metrics


def _worker_metrics() -> metrics.WorkerMetrics:
    return metrics.WorkerMetrics(SimpleNamespace(cfg=SimpleNamespace(server=[]), runtimes={}))


def test_upstream_event_counts_each_attempt(monkeypatch):
    """No worker (metrics off, or not a worker): nothing counted; wrong arguments: a
    TypeError; answered and failed attempts, times and byte counts (ints or floats) add up
    per peer."""
    monkeypatch.setattr(metrics, "_worker", None)
    assert metrics.upstream_event("u", "p", 200, 0.1, sent=1) is None
    wm = _worker_metrics()
    monkeypatch.setattr(metrics, "_worker", wm)
    for bad in (
        lambda: metrics.upstream_event("u", "p"),
        lambda: metrics.upstream_event("u", "p", 200, 0.1, 5),
        lambda: metrics.upstream_event("u", "p", 200, bytes_sent=1),
    ):
        with pytest.raises(TypeError):
            bad()
    assert not wm.ups
    metrics.upstream_event("u", "p", 200, 0.5, sent=10, received=20)  # a new peer
    metrics.upstream_event("u", "p", 200, 0.5, sent=10, received=20)
    metrics.upstream_done("u", "p", 200, 0.5, 10, 20)  # the proxy's call
    metrics.upstream_event("u", "p", None)
    metrics.upstream_event("u", "p", 404, sent=0, received=0)
    metrics.upstream_event("u", "p", 999, 0.001)  # outside 100..599: counted apart
    with pytest.raises(TypeError, match="byte counts"):
        metrics.upstream_event("u", "p", 200, 0.5, sent=10.5)
    nums, other = wm.ups[("u", "p")]
    codes = {s: nums[metrics.U_CODE0 + s - 100] for s in range(100, 600)
             if nums[metrics.U_CODE0 + s - 100]}
    assert codes == {200: 3, 404: 1} and other == {999: 1}
    assert nums[metrics.U_SENT] == 30 and nums[metrics.U_RECEIVED] == 60
    assert nums[metrics.U_TIME] == 1_501_000  # microseconds
    buckets = list(nums[metrics.U_BUCKET0 : metrics.U_CODE0])
    assert sum(buckets) == 4 and buckets[metrics.BUCKETS.index(0.5)] == 3
    assert nums[metrics.U_FAILS] == 1
    metrics.upstream_event("api", "[::1]:8080", None, 3)  # another peer: its own slot
    assert wm.ups[("api", "[::1]:8080")][0][metrics.U_FAILS] == 1
    assert sum(wm.ups[("api", "[::1]:8080")][0][metrics.U_BUCKET0 : metrics.U_CODE0]) == 1
    assert wm.ups_last.keys() == wm.ups.keys()


def test_upstream_counters_flush_as_zone_keys(monkeypatch):
    """A flush adds each peer's deltas under ``ups␟upstream␟peer␟field``: the time in
    seconds, ``timed`` as the histogram's count; nothing for a peer unchanged since."""
    wm = _worker_metrics()
    monkeypatch.setattr(metrics, "_worker", wm)
    metrics.upstream_done("u", "p", 200, 0.25, 100, 250)
    metrics.upstream_done("u", "p", 502, 0.75, 100, 0)
    metrics.upstream_done("u", "p", None, None, 0, 0)
    added: dict[str, float] = {}

    def incr(k, d, init=0):
        added[k] = added.get(k, 0) + d

    def flush() -> dict[str, float]:
        added.clear()
        wm.flush_upstreams(incr)
        return {k.split(metrics.SEP)[-1]: v for k, v in added.items()}

    got = flush()
    assert got == {"s200": 1, "s502": 1, "fails": 1, "sent": 200, "received": 250,
                   "time": 1.0, "timed": 2,
                   f"b{metrics.BUCKETS.index(0.25)}": 1, f"b{metrics.BUCKETS.index(1.0)}": 1}
    assert flush() == {}
    metrics.upstream_done("u", "p", 200, 0.25, 1, 2)
    assert flush() == {"s200": 1, "sent": 1, "received": 2, "time": 0.25, "timed": 1,
                       f"b{metrics.BUCKETS.index(0.25)}": 1}
