"""``metrics.recorder``, which counts a request in C (``count_request`` in
edgeworker/_speedups.c), counts it exactly as ``WorkerMetrics.on_request`` does, and hands every
case the C declines to it."""

from __future__ import annotations

import functools
import random
import time
from array import array
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


def _request(loc, status, size, sent, age, now=None) -> SimpleNamespace:
    return SimpleNamespace(
        location=loc,
        server_route=SimpleNamespace(index=0),
        status=status,
        head=SimpleNamespace(size=size),
        body_bytes_sent=sent,
        start_time=(time.time() if now is None else now) - age,
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


def _counting(monkeypatch) -> list:
    """What each call of count_request returned (the recorder made next uses it)."""
    results: list = []

    def count(*args):
        results.append(accel.count_request(*args))
        return results[-1]

    monkeypatch.setattr(metrics, "_count_request", count)
    return results


def test_recorder_counts_like_on_request(monkeypatch):
    py, rts_py = _worker_metrics()
    c, rts_c = _worker_metrics()
    taken = _counting(monkeypatch)
    # both ways (and what the C leaves to on_request) read one fixed instant: equal counts
    now = time.time()

    def clock() -> float:
        return now

    monkeypatch.setattr(c, "on_request", functools.partial(c.on_request, _time=clock))
    rec = metrics.recorder(c)
    rng = random.Random(5)
    # ages in the middle of every histogram bucket, and one past the last bound
    edges = (0.0,) + metrics.BUCKETS
    ages = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)] + [30.0]
    for _ in range(3000):
        i = rng.randrange(len(rts_py) + 1)  # the last: a request that matched no location
        status = rng.choice((200, 200, 404, 500, 302, 499, 100, 599, 999))
        size, sent, age = rng.randrange(10, 9000), rng.randrange(0, 10**7), rng.choice(ages)
        loc_py = rts_py[i] if i < len(rts_py) else None
        py.on_request(_request(loc_py, status, size, sent, age, now), _time=clock)
        rec(_request(rts_c[i] if i < len(rts_c) else None, status, size, sent, age, now), clock)
    assert _snapshot(py) == _snapshot(c)
    assert ("edge.test", metrics.NO_LOCATION) in {c._names[id(s)] for s in c.slots.values()}
    assert 2000 <= taken.count(True) < len(taken)  # both ways, many times


def test_recorder_leaves_odd_requests_to_python(monkeypatch):
    """What the C code does not count itself (a status outside 100..599, a location without its
    counters yet, a slot that is not what it expects) goes to on_request."""
    wm, rts = _worker_metrics()
    seen = []
    on_request = wm.on_request

    def fallback(req):
        seen.append(req)
        on_request(req)

    wm.on_request = fallback
    taken = _counting(monkeypatch)
    rec = metrics.recorder(wm)
    rec(_request(rts[0], 200, 100, 5, 0.0001))
    assert not seen and taken == [True]
    rec(_request(rts[0], 999, 100, 5, 0.0001))
    rec(_request(None, 200, 100, 5, 0.0001))  # matched no location: its slot is made
    assert len(seen) == 2
    nums, other = wm.slots[rts[0]]
    assert nums[metrics.RECEIVED] == 200 and nums[metrics.SENT] == 10
    assert nums[metrics.CODE0 + 100] == 1 and other == {999: 1}
    wm.slots[rts[1]][0] = [0] * metrics.SLOT_LEN  # not an array("q"): Python counts
    rec(_request(rts[1], 200, 1, 1, 0.0001))
    assert len(seen) == 3 and wm.slots[rts[1]][0][metrics.CODE0 + 100] == 1
    rec(_request(rts[2], True, 1, 1, 0.0001))  # a bool is no status code: counted apart
    assert wm.slots[rts[2]][1] == {True: 1}
    with pytest.raises(TypeError):  # a float size: what on_request does with it
        rec(_request(rts[2], 200, 1.5, 1, 0.0001))
    assert len(seen) == 5
    with pytest.raises(ValueError):  # a start time that is not a time: Python's own error
        rec(_request(rts[2], 200, 1, 1, float("nan")))
    assert len(seen) == 6
    with pytest.raises(AttributeError):
        rec(SimpleNamespace(location=rts[0]))  # what on_request itself would raise
    with pytest.raises(TypeError):
        rec()
    assert taken.count(True) == 1


def test_count_request_declines_odd_values():
    """count_request counts only into an array("q") its layout fits, with exact ints, a float
    time and float bounds; anything else is False and leaves every counter as it was."""
    layout = (metrics.RECEIVED, metrics.SENT, metrics.TIME, metrics.BUCKET0, metrics.CODE0)
    b = metrics.BUCKETS
    nums = array("q", bytes(8 * metrics.SLOT_LEN))
    good = (200, 10, 20, 0.003)
    assert accel.count_request(nums, b, layout, *good) is True
    before = nums.tolist()
    assert before[metrics.CODE0 + 100] == 1 and before[metrics.BUCKET0 + 2] == 1
    assert before[metrics.TIME] == 3000
    short = array("q", bytes(8 * (metrics.SLOT_LEN - 1)))
    for args in [
        (nums, b, layout, 99, 10, 20, 0.003),
        (nums, b, layout, 600, 10, 20, 0.003),
        (nums, b, layout, 200, 10, 2**63, 0.003),
        (nums, b, layout, 200, 10, 20, 3),
        (nums, b, layout, 200, 10, 20, float("inf")),
        (nums, b, layout, 200, 10, 20, -1e10),
        (nums, (0.001, 1, 2.0), layout, *good),  # an int bound (probed)
        (nums, b, layout[:4], *good),
        (nums, b, (0, 1, 2, 3, -1), *good),
        (nums, b, (0, 1, 2, 3, metrics.CODE0 + 1), *good),  # past the end
        (nums, b, (metrics.SLOT_LEN, 1, 2, 3, metrics.CODE0), *good),
        (nums, b, (0, 1, 2, 3, 2**63 - 1), *good),
        (nums, b, (0, 1, 2, 3.0, metrics.CODE0), *good),
        (nums, b + (20.0,), layout, 200, 10, 20, 30.0),  # a bucket more than the layout has
        (short, b, layout, *good),
        (array("d", bytes(8 * metrics.SLOT_LEN)), b, layout, *good),
        (bytes(8 * metrics.SLOT_LEN), b, layout, *good),  # not writable
        ([0] * metrics.SLOT_LEN, b, layout, *good),
    ]:
        assert accel.count_request(*args) is False, args[1:]
    assert nums.tolist() == before and not any(short)
    with pytest.raises(TypeError):
        accel.count_request(nums, b, layout, *good[:3])
    with pytest.raises(TypeError):
        accel.count_request(nums, list(b), layout, *good)


def test_flush_writes_the_zone_fields():
    """The zone gets what the counters mean: counts as ints, the time in seconds, responses
    under s<status>."""
    wm, rts = _worker_metrics()
    rec = metrics.recorder(wm)
    for status in (200, 200, 404, 999):
        rec(_request(rts[0], status, 100, 7, 0.00175))  # mid-bucket: a slow machine stays in
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
    assert 0.007 <= written[prefix + "time"] < 0.5 and isinstance(written[prefix + "time"], float)
    assert written[prefix + "b1"] == 4  # 1.75 ms: the (0.001, 0.0025] bucket
    written.clear()
    wm._flush(Zone(), False)  # nothing new: nothing written
    assert not any(k.startswith(prefix) for k in written)
