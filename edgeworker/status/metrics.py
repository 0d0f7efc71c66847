"""Server-wide counters in shared memory, batched per worker (the nginx-lua-prometheus model).

Each worker counts into plain Python lists and dicts on the hot path (a dict lookup and a few
increments per request) and a worker timer flushes the deltas into one internal shared-memory
zone every :data:`FLUSH_INTERVAL` seconds with atomic ``incr``. Every reader (the status
endpoints, in whichever worker serves them) sums from that zone, so every worker answers the same
figures, at most about one flush interval stale. The zone is created by the master before it
forks (:func:`create_zone`) and survives reloads, so counters keep counting across them.

Public API for other parts of edgeworker and for handler code (all are no-ops in a process
that is not an edgeworker worker or master, e.g. a unit test importing a handler):

- :func:`count` ``(name, n=1)``: a named event counter (``limit_rejections``, ``jwt_rejections``
  or any ``[a-z_][a-z0-9_]*`` name);
- :func:`upstream_event` ``(upstream, peer, status, response_time=None, *, sent=0, received=0)``:
  one attempt against an upstream peer finished (``status=None``: it failed: refused, reset,
  timed out);
- :func:`upstream_state` ``(upstream, peer, state)``: a peer changed state (``"up"``,
  ``"down"``, ``"unavailable"``...).

Zone layout: keys are fields joined by ``\\x1f``: ``loc␟zone␟location␟field`` (per location:
``s<code>`` responses by status code, ``received``, ``sent``, ``time``, ``b<i>`` histogram
bucket counts), ``ups␟upstream␟peer␟field`` (``s<code>``, ``fails``, ``sent``, ``received``,
``time``, ``timed``, ``b<i>`` response-time histogram bucket counts), ``upstate␟upstream␟peer``
(JSON), ``cnt␟name``,
``conn␟accepted``, ``tls␟handshakes``, ``tls␟resumed``, ``tls␟failed␟<reason>``,
``tls␟protocol␟<version>`` (TLS handshakes, counted by ``edgeworker.tls.connection.STATS``),
``h2␟<name>`` (HTTP/2 connections, streams, resets received, GOAWAY ENHANCE_YOUR_CALM: counted
by ``edgeworker.http2.STATS``),
``err␟flush``, ``g␟pid`` (a worker's gauges, JSON, expiring), ``w␟pid`` (a
worker record written by the master, JSON), ``master`` (JSON), ``reloads``; the user metrics'
``ud␟…``, ``u␟…`` and ``ug␟pid`` (see ``edgeworker.status.usermetrics``).
"""

from __future__ import annotations

import os
import re
import time
from array import array
from bisect import bisect_left
from collections import defaultdict
from typing import Any

import msgspec

from .. import http2 as _h2
from .. import runtime
from ..http.fields import accel as _accel
from ..tls import connection as _tls
from . import usermetrics

#: Name of the internal zone (its POSIX name is ``/edgeworker.<master pid>.@status``). User
#: zone names must match ``[A-Za-z_][A-Za-z0-9_-]*``, so this one can never clash with them.
ZONE_NAME = "@status"
DEFAULT_ZONE_SIZE = 1024 * 1024
#: Seconds between two flushes of a worker's counters into the zone.
FLUSH_INTERVAL = 0.5
#: A worker's gauges (connections, timers) expire from the zone after this long without a flush.
GAUGE_TTL = 3.0
#: Request-time histogram bounds (seconds), ``+Inf`` implied.
BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
SEP = "\x1f"
NO_LOCATION = "-"  # location label of requests that matched no location
#: Event counters always present (0 until counted).
WELL_KNOWN_COUNTERS = ("limit_rejections", "jwt_rejections")

# Slot of a location's counters (see WorkerMetrics.on_request): [nums, other] where nums is an
# array("q"): bytes received, bytes sent, the time in microseconds, the histogram buckets, then
# the responses by status 100..599 (CODE0 + status - 100); other, a dict, counts the responses
# of any other status. Plain 64-bit counters: counting allocates nothing.
RECEIVED, SENT, TIME = 0, 1, 2
BUCKET0 = 3
CODE0 = BUCKET0 + len(BUCKETS) + 1
SLOT_LEN = CODE0 + 500
_SLOT_FIELDS = ("received", "sent", "time") + tuple(f"b{i}" for i in range(len(BUCKETS) + 1))
_ZEROS = bytes(8 * SLOT_LEN)
# Slot of an upstream peer's counters: [nums, other], as a location's: an array("q") of failed
# attempts, bytes sent and received, the response time in microseconds, the histogram buckets
# (BUCKETS, +Inf), then the answers by status 100..599 (U_CODE0 + status - 100); ``other``
# counts any other status. The zone's ``timed`` (attempts with a time) is the buckets' sum.
U_FAILS, U_SENT, U_RECEIVED, U_TIME = 0, 1, 2, 3
U_BUCKET0 = 4
U_CODE0 = U_BUCKET0 + len(BUCKETS) + 1
_UPS_FIELDS = ("fails", "sent", "received", "time") + tuple(
    f"b{i}" for i in range(len(BUCKETS) + 1))
_UPS_ZEROS = bytes(8 * (U_CODE0 + 500))
#: the indices count_request adds at: received, sent, time, first bucket, status 100
_UPS_LAYOUT = (U_RECEIVED, U_SENT, U_TIME, U_BUCKET0, U_CODE0)
#: the same for a location's slot
_LOC_LAYOUT = (RECEIVED, SENT, TIME, BUCKET0, CODE0)

#: the zone key of each of ``edgeworker.tls.connection.STATS``
_TLS_KEYS = (
    SEP.join(("tls", "handshakes")),
    SEP.join(("tls", "resumed")),
    *(SEP.join(("tls", "failed", reason)) for reason in _tls.FAILURE_REASONS),
    *(SEP.join(("tls", "protocol", version)) for version in _tls.VERSIONS),
)
assert len(_TLS_KEYS) == len(_tls.STATS)
#: the zone key of each counter of ``edgeworker.http2.STATS`` (its last, streams open now, is
#: a gauge: in the worker's gauges)
_H2_KEYS = tuple(SEP.join(("h2", name)) for name in _h2.STAT_NAMES[: _h2.STREAMS_OPEN])

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

_zone: Any = None  # the shm.SharedDict, set in the master before fork (inherited)
_worker: WorkerMetrics | None = None  # this worker's counters
_off = False  # [main] metrics = false in this worker: the public API counts nothing


# --------------------------------------------------------------------------------- the zone
def create_zone(master_pid: int, size: int = DEFAULT_ZONE_SIZE) -> Any:
    """Master, at start: create the internal zone (a leftover of a crashed server with the same
    pid is removed first) and make it this process's (and its future workers') zone."""
    from shm import SharedDict

    from ..zones import zone_name

    global _zone
    name = zone_name(ZONE_NAME, master_pid)
    SharedDict.remove(name)
    _zone = SharedDict.create(name, size)
    _flush_master()  # what init defined and counted
    return _zone


def install_zone(zone: Any) -> None:
    """Use ``zone`` (a ``shm.SharedDict``) as the metrics zone of this process (tests, tools)."""
    global _zone
    _zone = zone


def zone() -> Any:
    """The metrics zone of this process, or None outside an edgeworker server."""
    return _zone


def close_zone() -> None:
    """Master, at exit: unlink and close the zone."""
    global _zone
    z, _zone = _zone, None
    if z is not None:
        try:
            z.unlink()
        finally:
            z.close()


def key(*parts: object) -> str:
    """The zone key of a series (its parts joined by ``\\x1f``)."""
    return SEP.join(map(str, parts))


# ------------------------------------------------------------------------ master records
def _set_json(k: str, value: Any, exptime: float = 0) -> None:
    z = _zone
    if z is None:
        return
    try:
        z.set(k, _encode(value), exptime)
    except Exception:  # a full zone must never break the master
        runtime.log.exception("status zone: writing %r failed", k)


def _flush_master() -> None:
    """Master: write the user metrics defined and counted by ``init`` (workers forked later
    inherit them without counting them again)."""
    z = _zone
    if z is None:
        return
    try:
        usermetrics.flush(z)
    except Exception:  # a full zone must never break the master
        runtime.log.exception("status zone: writing the metrics of init failed")


def master_started(pid: int, generation: int) -> None:
    """Master: record the server's start (pid, start time, generation)."""
    now = time.time()
    _set_json("master", {"pid": pid, "started": now, "load_time": now, "generation": generation})


def reloaded(generation: int) -> None:
    """Master: a reload succeeded; count it and record the new generation."""
    z = _zone
    if z is None:
        return
    raw = z.get("master")
    doc = _decode(raw) if raw else {"pid": os.getpid(), "started": time.time()}
    doc["generation"] = generation
    doc["load_time"] = time.time()
    _set_json("master", doc)
    try:
        z.incr("reloads", 1, init=0)
    except Exception:
        runtime.log.exception("status zone: counting the reload failed")
    _flush_master()


def worker_spawned(pid: int, wid: int, generation: int, restarts: int) -> None:
    """Master: a worker was forked (``restarts``: how often worker ``wid`` was respawned)."""
    _set_json(key("w", pid), {"pid": pid, "id": wid, "generation": generation,
                              "restarts": restarts, "started": time.time()})


def worker_exited(pid: int) -> None:
    """Master: a worker was reaped; drop its record and gauges."""
    z = _zone
    if z is None:
        return
    try:
        z.delete(key("w", pid))
        z.delete(key("g", pid))
        z.delete(key("ug", pid))
    except Exception:
        runtime.log.exception("status zone: dropping worker %s failed", pid)


# --------------------------------------------------------------------------- public API
def count(name: str, n: int = 1) -> None:
    """Add ``n`` to the event counter ``name`` (``[a-z_][a-z0-9_]*``; ``ValueError`` else).

    In a worker the count is buffered and flushed with the others (≤ 1 s); in the master it goes
    to the zone at once; elsewhere it is dropped. Shown in the JSON status under ``counters`` and
    in Prometheus as ``edgeworker_<name>_total`` for the well-known names
    (``limit_rejections``, ``jwt_rejections``) and ``edgeworker_events_total{name="…"}`` for
    the others."""
    w = _worker
    if w is None and _off:
        return
    if w is not None:
        counters = w.counters
        if name in counters:
            counters[name] += n
            return
        _check_name(name)
        counters[name] = n
        return
    _check_name(name)
    if _zone is not None:
        _zone.incr(key("cnt", name), n, init=0)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid counter name {name!r}: expected [a-z_][a-z0-9_]*")


def upstream_event(upstream: str, peer: str, status: int | None,
                   response_time: float | None = None, *, sent: int = 0,
                   received: int = 0) -> None:
    """One attempt against ``peer`` (``"host:port"``) of ``upstream`` finished.

    ``status`` is the upstream's HTTP status, or None when the attempt failed (connect refused,
    reset, timeout: counted in ``fails``). ``response_time`` in seconds (None: not measured);
    ``sent``/``received`` bytes (ints) to/from the peer. Cheap: buffered like every counter."""
    upstream_done(upstream, peer, status, response_time, sent, received)


def upstream_done(upstream: str, peer: str, status: int | None, response_time: float | None,
                  sent: int, received: int) -> None:
    """``upstream_event`` with every argument in place (the proxy's call)."""
    w = _worker
    if w is None:
        return
    slot = w.ups.get((upstream, peer))
    if slot is None:
        slot = w.new_peer_slot(upstream, peer)
    elif (status is not None and response_time is not None and _count_request is not None
          and _count_request(slot[0], BUCKETS, _UPS_LAYOUT, status, received, sent,
                             response_time)):
        return
    # what count_request leaves: a failed attempt, an odd status, no time, the first attempt
    if sent.__class__ is not int or received.__class__ is not int:
        if not isinstance(sent, int) or not isinstance(received, int):
            raise TypeError(f"sent and received are byte counts (ints), not {sent!r}, "
                            f"{received!r}")
    if status is None:
        slot[0][U_FAILS] += 1
    _count(slot, _UPS_LAYOUT, status, received, sent, response_time)


def _count(slot: list, layout: tuple[int, ...], status: Any, received: int, sent: int,
           seconds: float | None) -> None:
    """What ``count_request`` adds to a slot (``layout`` as it takes it), in Python and for
    any value: a status in 100..599 at its counter, any other in ``other``, None (an attempt
    that got no answer) nowhere; ``seconds`` None: no time."""
    nums, other = slot
    at_received, at_sent, at_time, at_bucket0, at_code0 = layout
    if status.__class__ is int and 100 <= status <= 599:
        nums[at_code0 - 100 + status] += 1
    elif status is not None:
        other[status] += 1
    nums[at_received] += received
    nums[at_sent] += sent
    if seconds is not None:
        nums[at_time] += round(seconds * 1e6)
        nums[at_bucket0 + bisect_left(BUCKETS, seconds)] += 1


def upstream_state(upstream: str, peer: str, state: str) -> None:
    """``peer`` of ``upstream`` is now in ``state`` (e.g. ``"up"``, ``"down"``,
    ``"unavailable"`` after ``max_fails``). Written to the zone at once (the last report of any
    worker wins); shown until the next report."""
    if _off:
        return
    _set_json(key("upstate", upstream, peer),
              {"state": state, "since": time.time(), "worker": runtime.worker.id})


# ------------------------------------------------------------------------ the worker side
def server_zone_names(cfg: Any) -> list[str]:
    """The status zone name of each ``[[server]]``: its first server_name, else its first
    listen address; a repeated name gets ``#<index>``."""
    names: list[str] = []
    for i, server in enumerate(cfg.server):
        name = next((n for n in server.server_name if n), "") or (
            server.listen[0] if server.listen else f"server[{i}]")
        if name in names:
            name = f"{name}#{i}"
        names.append(name)
    return names


class WorkerMetrics:
    """One worker's counters: hot-path increments, flushed as deltas into the zone."""

    def __init__(self, app: Any, connections: set | None = None, timers: Any = None) -> None:
        self.app = app
        self.connections = connections if connections is not None else set()
        self.timers = timers
        self.accepted = 0
        self.counters: dict[str, int] = {}
        self.ups: dict[tuple[str, str], list] = {}
        self.ups_last: dict[tuple[str, str], list] = {}
        # location runtime (or server route, for requests matching no location) -> slot
        self.slots: dict[Any, list] = {}
        self._names: dict[int, tuple[str, str]] = {}  # id(slot) -> (zone, location)
        self._last: dict[int, list] = {}
        self._last_counters: dict[str, int] = {}
        self._last_accepted = 0
        self._last_tls = [0] * len(_tls.STATS)
        self._last_h2 = [0] * len(_H2_KEYS)
        self.errors = 0
        self.handle: Any = None  # the flush timer
        self.zone_names = server_zone_names(app.cfg)
        for si, server in enumerate(app.cfg.server):
            for loc in server.location:
                rt = app.runtimes.get(id(loc))
                if rt is not None:
                    self._new_slot(rt, self.zone_names[si], loc.match)
        self.pid = os.getpid()

    def new_peer_slot(self, upstream: str, peer: str) -> list:
        """The counters of an upstream peer's first attempt in this worker."""
        slot: list = [array("q", _UPS_ZEROS), defaultdict(int)]
        self.ups[upstream, peer] = slot
        self.ups_last[upstream, peer] = [array("q", _UPS_ZEROS), {}]
        return slot

    def _new_slot(self, owner: Any, zone_: str, location: str) -> list:
        slot: list = [array("q", _ZEROS), defaultdict(int)]
        self.slots[owner] = slot
        self._names[id(slot)] = (zone_, location)
        self._last[id(slot)] = [array("q", _ZEROS), {}]  # as flushed last
        return slot

    # -- hot path --------------------------------------------------------------------------
    def on_request(self, req: Any, _time=time.time) -> None:
        """Count one finished request (called by the App after the log phase)."""
        slot = self.slots.get(req.location)
        if slot is None:
            slot = self._route_slot(req)
        # bytes received: the request as received (the protocol's count; not a request id
        # we added); bytes sent: the body
        _count(slot, _LOC_LAYOUT, req.status, req.head.size, req.body_bytes_sent,
               _time() - req.start_time)

    def _route_slot(self, req: Any) -> list:
        route = req.server_route
        owner = ("route", getattr(route, "index", -1))
        slot = self.slots.get(owner)
        if slot is None:
            idx = owner[1]
            zone_ = self.zone_names[idx] if 0 <= idx < len(self.zone_names) else "-"
            slot = self._new_slot(owner, zone_, NO_LOCATION)
        return slot

    # -- flush -----------------------------------------------------------------------------
    def flush_timer(self, premature: bool) -> None:
        """The worker timer's callback (``edgeworker.timer.every``)."""
        self.flush(in_timer=True)

    def flush(self, in_timer: bool = False) -> None:
        """Add every delta since the last flush to the zone, and refresh this worker's gauges."""
        z = _zone
        if z is None:
            return
        try:
            self._flush(z, in_timer)
        except Exception:
            self.errors += 1
            try:
                z.incr("err" + SEP + "flush", 1, init=0)
            except Exception:
                pass
            if self.errors == 1 or self.errors % 1000 == 0:
                runtime.log.exception("status: flushing the metrics failed (%d times)", self.errors)

    def _flush(self, z: Any, in_timer: bool) -> None:
        incr = z.incr
        if self.accepted != self._last_accepted:
            acc = self.accepted
            incr("conn" + SEP + "accepted", acc - self._last_accepted, init=0)
            self._last_accepted = acc
        _flush_stats(incr, _tls.STATS, self._last_tls, _TLS_KEYS)
        _flush_stats(incr, _h2.STATS, self._last_h2, _H2_KEYS)
        for name, value in self.counters.items():
            last = self._last_counters.get(name, 0)
            if value != last:
                incr("cnt" + SEP + name, value - last, init=0)
                self._last_counters[name] = value
        for slot in self.slots.values():
            last = self._last[id(slot)]
            if slot != last:
                zone_, location = self._names[id(slot)]
                prefix = SEP.join(("loc", zone_, location, ""))
                _flush_slot(incr, prefix, slot, last, _SLOT_FIELDS, TIME)
        self.flush_upstreams(incr)
        self._flush_gauges(z, in_timer)
        usermetrics.flush(z, key("ug", self.pid), runtime.worker.id)


    def flush_upstreams(self, incr: Any) -> None:
        """Add each upstream peer's deltas since the last flush with ``incr`` (the zone's):
        ``ups␟upstream␟peer␟field``, ``timed`` being the histogram's count."""
        for (upstream, peer), slot in list(self.ups.items()):
            last = self.ups_last[upstream, peer]
            if slot != last:
                prefix = SEP.join(("ups", upstream, peer, ""))
                nums, lnums = slot[0], last[0]
                timed = sum(nums[U_BUCKET0:U_CODE0]) - sum(lnums[U_BUCKET0:U_CODE0])
                if timed:
                    incr(prefix + "timed", timed, init=0)
                _flush_slot(incr, prefix, slot, last, _UPS_FIELDS, U_TIME)

    def _flush_gauges(self, z: Any, in_timer: bool) -> None:
        reading = writing = idle = 0
        for conn in list(self.connections):
            if conn.busy:
                writing += 1
            elif conn.proto.in_head:
                reading += 1
            else:
                idle += 1
        pending = running = 0
        t = self.timers
        if t is not None:  # the flush timer itself is left out (a periodic timer stays pending)
            pending = t.pending_count() - (1 if self.handle is not None else 0)
            running = t.running_count() - (1 if in_timer else 0)
        doc = {
            "pid": self.pid,
            "id": runtime.worker.id,
            "generation": runtime.worker.generation,
            "connections": {"active": reading + writing + idle, "reading": reading,
                            "writing": writing, "idle": idle},
            "timers": {"pending": max(0, pending), "running": max(0, running)},
            "h2_streams": _h2.STATS[_h2.STREAMS_OPEN],
            "time": time.time(),
        }
        z.set(key("g", self.pid), _encode(doc), GAUGE_TTL)


def _flush_stats(incr: Any, stats: list[int], last: list[int], keys: tuple[str, ...]) -> None:
    """Add to the zone what the counters ``stats`` (a module's plain list, ``keys`` naming
    each of the first ``len(keys)``) counted since ``last`` (updated)."""
    for i, k in enumerate(keys):
        d = stats[i] - last[i]
        if d:
            incr(k, d, init=0)
            last[i] += d


def start_worker(app: Any, connections: set, timers: Any) -> WorkerMetrics | None:
    """Worker, at boot: create its counters, hook them into ``app`` (``app.record``) and start
    the flush timer. Returns None (and counts nothing) when ``[main] metrics = false`` or no
    zone exists."""
    global _worker, _off
    _off = not getattr(app.cfg.main, "metrics", True)
    if _zone is None or _off:
        _worker = None
        return None
    wm = WorkerMetrics(app, connections, timers)
    _worker = wm
    usermetrics.start_worker()
    app.record = recorder(wm)
    wm.handle = timers.every(FLUSH_INTERVAL, wm.flush_timer)
    wm.flush()  # the gauges show up at once
    return wm


#: one request counted in C (``count_request`` in edgeworker/_speedups.c), or None: then
#: WorkerMetrics.on_request counts every request
_count_request = _accel.count_request if _accel is not None else None


def _flush_slot(incr: Any, prefix: str, slot: list, last: list, fields: tuple[str, ...],
                time_index: int) -> None:
    """Add the deltas of a slot (a location's or a peer's: ``[nums, other]``) since ``last``
    to the zone and make ``last`` equal to it. ``fields`` names the counters before the
    statuses (the status 100 counter follows them); the one at ``time_index`` holds
    microseconds, added as seconds."""
    nums, other = slot
    lnums, lother = last
    if nums != lnums:
        code0 = len(fields)
        for i in range(code0):
            d = nums[i] - lnums[i]
            if d:
                incr(prefix + fields[i], d / 1e6 if i == time_index else d, init=0)
        for lo in range(code0, code0 + 500, 100):  # by hundreds: most stay unchanged
            if nums[lo : lo + 100] == lnums[lo : lo + 100]:
                continue
            for i in range(lo, lo + 100):
                d = nums[i] - lnums[i]
                if d:
                    incr(f"{prefix}s{i - code0 + 100}", d, init=0)
        lnums[:] = nums
    if other != lother:
        for code, value in list(other.items()):
            d = value - lother.get(code, 0)
            if d:
                incr(f"{prefix}s{code}", d, init=0)
                lother[code] = value


def recorder(wm: WorkerMetrics) -> Any:
    """``wm.on_request``, or a function that counts the requests of locations that have their
    slot in C (``count_request``) and leaves every other one (no slot yet, a status outside
    100..599, an odd value) to ``wm.on_request``. The time is taken as on_request takes it."""
    count = _count_request
    if count is None:
        return wm.on_request
    get = wm.slots.get
    on_request = wm.on_request
    layout = _LOC_LAYOUT

    def record(req: Any, _time: Any = time.time, _b: tuple = BUCKETS) -> None:
        slot = get(req.location)
        if slot is not None:
            t = _time() - req.start_time
            if count(slot[0], _b, layout, req.status, req.head.size, req.body_bytes_sent, t):
                return
        on_request(req)

    return record


def current() -> WorkerMetrics | None:
    """This worker's counters (None outside a worker or with metrics off)."""
    return _worker
