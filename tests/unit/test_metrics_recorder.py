"""The C ``Recorder`` (edgeworker/_speedups.c) counts a request exactly as
``WorkerMetrics.on_request`` does, and hands every case it does not take to it."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace

import pytest

from edgeworker.http.fields import accel
from edgeworker.status import metrics

pytestmark = pytest.mark.skipif(accel is None, reason="the C module is not built")


class _Runtime:  # a location's runtime: hashable by identity, as the real one
    def __init__(self, path: str) -> None:
        self.path = path


def _worker_metrics() -> tuple[metrics.WorkerMetrics, list]:
    locs = [SimpleNamespace(match=m) for m in ("= /a", "/b", "~ c$")]
    rts = [_Runtime(loc.match) for loc in locs]
    server = SimpleNamespace(server_name=["edge.test"], listen=["127.0.0.1:1"], location=locs)
    app = SimpleNamespace(
        cfg=SimpleNamespace(server=[server]),
        runtimes={id(loc): rt for loc, rt in zip(locs, rts, strict=True)},
    )
    return metrics.WorkerMetrics(app), rts


def _request(loc, status, size, sent, age) -> SimpleNamespace:
    return SimpleNamespace(
        location=loc,
        server_route=SimpleNamespace(index=0),
        status=status,
        head=SimpleNamespace(size=size),
        body_bytes_sent=sent,
        start_time=time.time() - age,
    )


def _snapshot(wm: metrics.WorkerMetrics) -> tuple[dict, dict]:
    """(every count by location, the time sums by location)"""
    out, times = {}, {}
    for slot in wm.slots.values():
        name = wm._names[id(slot)]
        nums, other = slot
        out[name] = ([v for i, v in enumerate(nums) if i != metrics.TIME], dict(other))
        times[name] = nums[metrics.TIME]
    return out, times


def test_recorder_counts_like_on_request():
    py, rts_py = _worker_metrics()
    c, rts_c = _worker_metrics()
    rec = metrics.recorder(c)
    assert isinstance(rec, accel.Recorder)
    rng = random.Random(5)
    # ages in the middle of histogram buckets, so the few microseconds between the two calls
    # cannot move a request to the next bucket; one past the last bound
    edges = (0.0,) + metrics.BUCKETS
    ages = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)] + [30.0]
    for _ in range(3000):
        i = rng.randrange(len(rts_py) + 1)  # the last: a request that matched no location
        status = rng.choice((200, 200, 404, 500, 302, 499, 100, 599, 999))
        size, sent, age = rng.randrange(10, 9000), rng.randrange(0, 10**7), rng.choice(ages)
        py.on_request(_request(rts_py[i] if i < len(rts_py) else None, status, size, sent, age))
        rec(_request(rts_c[i] if i < len(rts_c) else None, status, size, sent, age))
    (counts_py, times_py), (counts_c, times_c) = _snapshot(py), _snapshot(c)
    assert counts_py == counts_c
    # the time sums differ by the microseconds between the two calls of each request
    assert times_py.keys() == times_c.keys()
    for name, t in times_py.items():  # (in microseconds)
        assert abs(times_c[name] - t) < 10**6 and (t > 10**8) == (times_c[name] > 10**8), name
    assert ("edge.test", metrics.NO_LOCATION) in {c._names[id(s)] for s in c.slots.values()}


def test_recorder_leaves_odd_requests_to_python():
    """What the C code does not count itself (a status outside 100..599, a location without its
    counters yet, a slot that is not what it expects) goes to on_request."""
    wm, rts = _worker_metrics()
    seen = []

    def fallback(req):
        seen.append(req)
        wm.on_request(req)

    layout = (metrics.RECEIVED, metrics.SENT, metrics.TIME, metrics.BUCKET0, metrics.CODE0,
              metrics.SLOT_LEN)
    rec = accel.Recorder(wm.slots, metrics.BUCKETS, layout, fallback)
    rec(_request(rts[0], 200, 100, 5, 0.0001))
    assert not seen
    rec(_request(rts[0], 999, 100, 5, 0.0001))
    rec(_request(None, 200, 100, 5, 0.0001))  # matched no location: its slot is made
    assert len(seen) == 2
    nums, other = wm.slots[rts[0]]
    assert nums[metrics.RECEIVED] == 200 and nums[metrics.SENT] == 10
    assert nums[metrics.CODE0 + 100] == 1 and other == {999: 1}
    wm.slots[rts[1]][0] = [0] * metrics.SLOT_LEN  # not an array("q"): Python counts
    rec(_request(rts[1], 200, 1, 1, 0.0001))
    assert len(seen) == 3 and wm.slots[rts[1]][0][metrics.CODE0 + 100] == 1
    with pytest.raises(ValueError):  # a start time that is not a time: Python's own error
        rec(_request(rts[2], 200, 1, 1, float("nan")))
    assert len(seen) == 4
    with pytest.raises(AttributeError):
        rec(SimpleNamespace(location=rts[0]))  # what on_request itself would raise
    with pytest.raises(TypeError):
        rec()
    with pytest.raises(ValueError):
        accel.Recorder({}, metrics.BUCKETS, (0, 1, 5, 3, 20, 520), fallback)


def test_flush_writes_the_zone_fields():
    """The zone gets what the counters mean: counts as ints, the time in seconds, responses
    under s<status>."""
    wm, rts = _worker_metrics()
    rec = metrics.recorder(wm)
    for status in (200, 200, 404, 999):
        rec(_request(rts[0], status, 100, 7, 0.002))
    written = {}

    class Zone:
        def incr(self, key, d, init=0):
            written[key] = written.get(key, 0) + d

        def set(self, *args, **kw):
            pass

    wm.connections = set()
    wm.timers = None
    wm._flush(Zone(), False)
    prefix = metrics.SEP.join(("loc", "edge.test", "= /a", ""))
    assert written[prefix + "received"] == 400 and written[prefix + "sent"] == 28
    assert written[prefix + "s200"] == 2 and written[prefix + "s404"] == 1
    assert written[prefix + "s999"] == 1
    assert 0.007 < written[prefix + "time"] < 0.5 and isinstance(written[prefix + "time"], float)
    assert written[prefix + "b1"] == 4  # 2 ms: the (0.001, 0.0025] bucket
    written.clear()
    wm._flush(Zone(), False)  # nothing new: nothing written
    assert not any(k.startswith(prefix) for k in written)
