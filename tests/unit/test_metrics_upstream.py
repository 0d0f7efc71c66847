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
    metrics.upstream_event("u", "p", 200, 0.5, sent=10.5, received=20)
    metrics.upstream_event("u", "p", None)
    metrics.upstream_event("u", "p", 404, sent=0, received=0)
    nums, codes = wm.ups[("u", "p")]
    assert codes == {200: 3, 404: 1}
    assert nums[metrics.U_SENT] == 30.5 and nums[metrics.U_RECEIVED] == 60
    assert nums[metrics.U_TIME] == 1.5 and nums[metrics.U_TIMED] == 3
    assert nums[metrics.U_FAILS] == 1
    metrics.upstream_event("api", "[::1]:8080", None, 3)  # another peer: its own slot
    assert wm.ups[("api", "[::1]:8080")][0][metrics.U_FAILS] == 1
    assert wm.ups[("api", "[::1]:8080")][0][metrics.U_TIMED] == 1
    assert wm.ups_last.keys() == wm.ups.keys()
