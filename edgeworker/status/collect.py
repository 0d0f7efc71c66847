"""Build the status document (the ``status = "json"`` answer) from the metrics zone.

Every figure is summed over every worker (the zone holds the flushed deltas of all of them), so
any worker answers the same document. Shared-dict figures are read live from the zones.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .. import __version__, runtime
from ..http2 import STAT_NAMES as H2_NAMES
from ..tls.connection import FAILURE_REASONS, VERSIONS
from . import metrics, usermetrics
from .metrics import BUCKETS, SEP, WELL_KNOWN_COUNTERS

_decode = msgspec.json.decode
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _new_traffic() -> dict[str, Any]:
    return {
        "requests": 0,
        "responses": dict.fromkeys(_CLASSES, 0),
        "status": {},
        "data": {"received": 0, "sent": 0},
    }


def _new_time() -> dict[str, Any]:
    return {"buckets": [0] * (len(BUCKETS) + 1), "sum": 0.0, "count": 0}


def _add_status(t: dict[str, Any], code: int, n: int) -> None:
    t["requests"] += n
    cls = f"{code // 100}xx"
    if cls in t["responses"]:
        t["responses"][cls] += n
    t["status"][str(code)] = t["status"].get(str(code), 0) + n


def _time_doc(h: dict[str, Any]) -> dict[str, Any]:
    """Histogram as cumulative buckets keyed by upper bound (Prometheus ``le``)."""
    cum = 0
    buckets = {}
    for bound, n in zip((*map(_fmt_bound, BUCKETS), "+Inf"), h["buckets"], strict=True):
        cum += n
        buckets[bound] = cum
    return {"buckets": buckets, "sum": round(h["sum"], 6), "count": cum}


def _fmt_bound(b: float) -> str:
    return repr(b)


def read_zone(z: Any) -> dict[str, Any]:
    """Every live key of the zone with its value (JSON values decoded)."""
    out: dict[str, Any] = {}
    for k in z.get_keys(0):
        if isinstance(k, bytes):
            continue
        v = z.get(k)
        if v is None:
            continue
        if isinstance(v, bytes):
            try:
                v = _decode(v)
            except msgspec.DecodeError:
                continue
        out[k] = v
    return out


def document(cfg: Any) -> dict[str, Any]:
    """The status document for the running server whose config is ``cfg``."""
    z = metrics.zone()
    raw = read_zone(z) if z is not None else {}
    master = raw.get("master") or {}
    generation = master.get("generation", runtime.worker.generation)

    zone_names = metrics.server_zone_names(cfg)
    server_zones: dict[str, Any] = {}
    for si, server in enumerate(cfg.server):
        sz = server_zones[zone_names[si]] = _new_traffic()
        sz["request_time"] = _new_time()
        sz["locations"] = {}
        for loc in server.location:
            ld = sz["locations"][loc.match] = _new_traffic()
            ld["request_time"] = _new_time()
    totals = _new_traffic()
    total_time = _new_time()

    upstreams: dict[str, Any] = {}
    for name, up in cfg.upstream.items():
        peers = {}
        for s in up.servers:
            peers[s.address] = _new_peer(s.address, s)
        upstreams[name] = _new_upstream(up.balance, up.keepalive, peers)

    counters = dict.fromkeys(WELL_KNOWN_COUNTERS, 0)
    accepted = 0
    tls: dict[str, Any] = {
        "handshakes": 0,
        "resumed": 0,
        "failed": dict.fromkeys(FAILURE_REASONS, 0),
        "protocols": dict.fromkeys(VERSIONS, 0),
    }
    h2 = dict.fromkeys(H2_NAMES, 0)
    flush_errors = 0
    workers_rec: dict[int, dict[str, Any]] = {}
    gauges: dict[int, dict[str, Any]] = {}
    states: list[tuple[str, str, dict[str, Any]]] = []
    user = usermetrics.Reader()
    user_kinds = usermetrics.Reader.PREFIXES
    for k, v in raw.items():
        parts = k.split(SEP)
        kind = parts[0]
        if kind == "loc" and len(parts) == 4:
            _, zname, lname, field = parts
            sz = server_zones.get(zname)
            if sz is None:  # a server removed by a reload: its figures stay in the totals
                sz = server_zones[zname] = _new_traffic()
                sz["request_time"] = _new_time()
                sz["locations"] = {}
            ld = sz["locations"].get(lname)
            if ld is None:
                ld = sz["locations"][lname] = _new_traffic()
                ld["request_time"] = _new_time()
            _add_location_field(field, v, ld, sz, totals, total_time)
        elif kind == "ups" and len(parts) == 4:
            peer = _peer(upstreams, parts[1], parts[2])
            _add_peer_field(parts[3], v, peer)
        elif kind == "upstate" and len(parts) == 3 and isinstance(v, dict):
            states.append((parts[1], parts[2], v))
        elif kind == "cnt" and len(parts) == 2:
            counters[parts[1]] = counters.get(parts[1], 0) + v
        elif kind == "conn" and parts[1:] == ["accepted"]:
            accepted += v
        elif kind == "tls":
            _add_tls(parts[1:], v, tls)
        elif kind == "h2" and len(parts) == 2 and parts[1] in h2:
            h2[parts[1]] += v
        elif kind == "err" and parts[1:] == ["flush"]:
            flush_errors += v
        elif kind == "w" and len(parts) == 2 and isinstance(v, dict):
            workers_rec[int(parts[1])] = v
        elif kind == "g" and len(parts) == 2 and isinstance(v, dict):
            gauges[int(parts[1])] = v
        elif kind in user_kinds:
            user.add(parts, v)
    for up_name, peer_addr, st in states:
        peer = _peer(upstreams, up_name, peer_addr)
        peer["state"] = st.get("state", "up")
        peer["state_since"] = st.get("since")
    for up in upstreams.values():
        hist = _new_time()
        for peer in up["peers"].values():
            timed = peer.pop("_timed")
            t = peer.pop("_time")
            peer["response_time"] = round(t / timed, 6) if timed else None
            hist["sum"] += t
            for i, n in enumerate(peer.pop("_buckets")):
                hist["buckets"][i] += n
        up["response_time"] = _time_doc(hist)

    conns = {"accepted": accepted, "active": 0, "reading": 0, "writing": 0, "idle": 0}
    timers = {"pending": 0, "running": 0}
    workers = []
    for pid in sorted(set(workers_rec) | set(gauges)):
        rec = workers_rec.get(pid, {})
        g = gauges.get(pid, {})
        wc = g.get("connections") or {}
        wt = g.get("timers") or {}
        for name in ("active", "reading", "writing", "idle"):
            conns[name] += wc.get(name, 0)
        h2["streams_open"] += g.get("h2_streams", 0)
        timers["pending"] += wt.get("pending", 0)
        timers["running"] += wt.get("running", 0)
        wgen = rec.get("generation", g.get("generation"))
        workers.append({
            "id": rec.get("id", g.get("id")),
            "pid": pid,
            "generation": wgen,
            "state": "serving" if wgen == generation else "retiring",
            "restarts": rec.get("restarts", 0),
            "started": rec.get("started"),
            "connections": {n: wc.get(n, 0) for n in ("active", "reading", "writing", "idle")},
            "timers": {"pending": wt.get("pending", 0), "running": wt.get("running", 0)},
        })
    workers.sort(key=lambda w: (w["generation"] is None, w["generation"] or 0, w["id"] or 0))

    shared: dict[str, Any] = {}
    for name, d in sorted(runtime.shared.items()):
        try:
            s = d.stats()
        except Exception:  # a zone freed by a reload while we read
            continue
        shared[name] = {k: s[k] for k in ("capacity", "used", "free", "entries", "evictions")}

    for sz in server_zones.values():
        sz["request_time"] = _time_doc(sz["request_time"])
        for ld in sz["locations"].values():
            ld["request_time"] = _time_doc(ld["request_time"])

    now = time.time()
    zone_stats = z.stats() if z is not None else None
    return {
        "edgeworker": {
            "version": __version__,
            "pid": master.get("pid"),
            "generation": generation,
            "started": master.get("started"),
            "load_time": master.get("load_time"),
            "uptime": round(now - master["started"], 3) if master.get("started") else None,
            "reloads": raw.get("reloads", 0),
            "time": now,
        },
        "connections": conns,
        # connections accepted by protocol: every one is HTTP/1.x unless it became HTTP/2
        "connections_by_protocol": {"http/1.1": max(0, accepted - h2["connections"]),
                                    "h2": h2["connections"]},
        "tls": tls,
        "http2": h2,
        "requests": {"total": totals["requests"], "current": conns["writing"]},
        "responses": totals["responses"],
        "status": totals["status"],
        "data": totals["data"],
        "request_time": _time_doc(total_time),
        "http": {"server_zones": server_zones},
        "upstreams": upstreams,
        "shared_dicts": shared,
        "timers": timers,
        "workers": workers,
        "counters": counters,
        "user_metrics": user.document(),
        "metrics": {
            "enabled": bool(getattr(cfg.main, "metrics", True)),
            "flush_interval": metrics.FLUSH_INTERVAL,
            "flush_errors": flush_errors,
            "zone": None if zone_stats is None else {
                k: zone_stats[k] for k in ("capacity", "used", "entries", "evictions")},
        },
    }


def _add_tls(parts: list[str], v: Any, tls: dict[str, Any]) -> None:
    if parts in (["handshakes"], ["resumed"]):
        tls[parts[0]] += v
    elif len(parts) == 2 and parts[0] == "failed":
        tls["failed"][parts[1]] = tls["failed"].get(parts[1], 0) + v
    elif len(parts) == 2 and parts[0] == "protocol":
        tls["protocols"][parts[1]] = tls["protocols"].get(parts[1], 0) + v


def _add_location_field(field: str, v: Any, ld: dict, sz: dict, totals: dict,
                        total_time: dict) -> None:
    if field.startswith("s") and field[1:].isdigit():
        code = int(field[1:])
        for t in (ld, sz, totals):
            _add_status(t, code, v)
    elif field in ("received", "sent"):
        for t in (ld, sz, totals):
            t["data"][field] += v
    elif field == "time":
        for h in (ld["request_time"], sz["request_time"], total_time):
            h["sum"] += v
    elif field.startswith("b") and field[1:].isdigit():
        i = int(field[1:])
        if i < len(BUCKETS) + 1:
            for h in (ld["request_time"], sz["request_time"], total_time):
                h["buckets"][i] += v


def _new_peer(address: str, conf: Any = None) -> dict[str, Any]:
    return {
        "server": address,
        "state": "up",
        "state_since": None,
        "weight": getattr(conf, "weight", 1),
        "backup": getattr(conf, "backup", False),
        "max_fails": getattr(conf, "max_fails", 1),
        "fail_timeout": getattr(conf, "fail_timeout", 10.0),
        "requests": 0,
        "responses": dict.fromkeys(_CLASSES, 0),
        "status": {},
        "fails": 0,
        "data": {"sent": 0, "received": 0},
        "response_time": None,
        "_time": 0.0,
        "_timed": 0,
        "_buckets": [0] * (len(BUCKETS) + 1),
    }


def _new_upstream(balance: Any, keepalive: Any, peers: dict[str, Any]) -> dict[str, Any]:
    # response_time: the histogram of every peer's response times, set in ``document``
    return {"balance": balance, "keepalive": keepalive, "peers": peers}


def _peer(upstreams: dict[str, Any], upstream: str, address: str) -> dict[str, Any]:
    up = upstreams.get(upstream)
    if up is None:  # proxy_pass to a host:port without an [upstream] table
        up = upstreams[upstream] = _new_upstream(None, None, {})
    peer = up["peers"].get(address)
    if peer is None:
        peer = up["peers"][address] = _new_peer(address)
    return peer


def _add_peer_field(field: str, v: Any, peer: dict[str, Any]) -> None:
    if field.startswith("s") and field[1:].isdigit():
        _add_status(peer, int(field[1:]), v)
    elif field == "fails":
        peer["fails"] += v
        peer["requests"] += v
    elif field in ("sent", "received"):
        peer["data"][field] += v
    elif field == "time":
        peer["_time"] += v
    elif field == "timed":
        peer["_timed"] += v
    elif field.startswith("b") and field[1:].isdigit():
        i = int(field[1:])
        if i < len(BUCKETS) + 1:
            peer["_buckets"][i] += v
