"""The status document as Prometheus text exposition format 0.0.4 (``status = "prometheus"``).

Every metric is named ``edgeworker_*`` and has its ``# HELP`` and ``# TYPE`` lines; series of one
metric are written together, histogram buckets in increasing ``le`` order ending with ``+Inf``.
"""

from __future__ import annotations

from typing import Any

from . import usermetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATES = ("reading", "writing", "idle")


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _num(v: float | int | None) -> str:
    if v is None:
        return "NaN"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_: str,
               series: list[tuple[dict[str, object], float | int | None]],
               prefix: str = "edgeworker_") -> None:
        # text format 0.0.4: a counter's family is named with its _total suffix
        full = prefix + name + ("_total" if kind == "counter" else "")
        self.lines.append(f"# HELP {full} {_help(help_)}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in series:
            self.lines.append(f"{full}{_labels(labels)} {_num(value)}")

    def histogram(self, name: str, help_: str,
                  series: list[tuple[dict[str, object], dict[str, Any]]],
                  prefix: str = "edgeworker_") -> None:
        full = prefix + name
        self.lines.append(f"# HELP {full} {_help(help_)}")
        self.lines.append(f"# TYPE {full} histogram")
        for labels, h in series:
            for le, n in h["buckets"].items():
                self.lines.append(f"{full}_bucket{_labels({**labels, 'le': le})} {n}")
            self.lines.append(f"{full}_sum{_labels(labels)} {_num(float(h['sum']))}")
            self.lines.append(f"{full}_count{_labels(labels)} {h['count']}")


def render(doc: dict[str, Any]) -> str:
    """Prometheus text for the status document ``doc`` (see ``collect.document``)."""
    o = _Out()
    ew = doc["edgeworker"]
    o.metric("build_info", "gauge", "edgeworker version (always 1).",
             [({"version": ew["version"]}, 1)])
    o.metric("generation", "gauge", "Configuration generation serving (reloads since start).",
             [({}, ew["generation"])])
    o.metric("reloads", "counter", "Successful reloads (SIGHUP) since start.",
             [({}, ew["reloads"])])
    if ew.get("started"):
        o.metric("start_time_seconds", "gauge", "Start time of the master, epoch seconds.",
                 [({}, float(ew["started"]))])

    c = doc["connections"]
    o.metric("connections_accepted", "counter", "Client connections accepted.",
             [({}, c["accepted"])])
    o.metric("connections_active", "gauge", "Open client connections (reading + writing + idle).",
             [({}, c["active"])])
    o.metric("connections", "gauge",
             "Open client connections by state: reading a request head, writing (processing) "
             "a request, idle keep-alive.",
             [({"state": s}, c[s]) for s in _STATES])

    o.metric("connections_by_protocol", "counter",
             "Client connections accepted, by protocol: http/1.1 (HTTP/1.x), h2 (HTTP/2).",
             [({"protocol": p}, n) for p, n in doc["connections_by_protocol"].items()])
    h2 = doc["http2"]
    o.metric("http2_streams", "counter", "HTTP/2 streams opened by clients.",
             [({}, h2["streams"])])
    o.metric("http2_streams_open", "gauge", "HTTP/2 streams being served.",
             [({}, h2["streams_open"])])
    o.metric("http2_resets_received", "counter",
             "HTTP/2 streams reset by their client before the response ended.",
             [({}, h2["resets_received"])])
    o.metric("http2_enhance_your_calm", "counter",
             "HTTP/2 connections closed for abuse (GOAWAY ENHANCE_YOUR_CALM).",
             [({}, h2["enhance_your_calm"])])

    t = doc["tls"]
    o.metric("tls_handshakes", "counter", "TLS handshakes completed (resumed ones included).",
             [({}, t["handshakes"])])
    o.metric("tls_handshakes_resumed", "counter",
             "TLS handshakes that resumed a session (ticket or session id).",
             [({}, t["resumed"])])
    o.metric("tls_handshake_failures", "counter",
             "TLS handshakes failed, by reason: timeout, plain_http (plain HTTP to a TLS port), "
             "protocol (version refused), certificate (client certificate refused), other.",
             [({"reason": r}, n) for r, n in t["failed"].items()])
    o.metric("tls_connections", "counter",
             "TLS connections established, by protocol version.",
             [({"protocol": p}, n) for p, n in t["protocols"].items()])

    zones = doc["http"]["server_zones"]
    req_series = []
    recv_series = []
    sent_series = []
    hist_series = []
    for zname, sz in zones.items():
        for lname, ld in sz["locations"].items():
            labels = {"zone": zname, "location": lname}
            for code, n in sorted(ld["status"].items()):
                req_series.append(({**labels, "status": code}, n))
            recv_series.append((labels, ld["data"]["received"]))
            sent_series.append((labels, ld["data"]["sent"]))
            hist_series.append((labels, ld["request_time"]))
    o.metric("http_requests", "counter",
             "HTTP requests answered, by server zone, location and response status.", req_series)
    o.metric("http_received_bytes", "counter",
             "Request bytes received (head and declared body), by server zone and location.",
             recv_series)
    o.metric("http_sent_bytes", "counter",
             "Response body bytes sent, by server zone and location.", sent_series)
    o.histogram("http_request_duration_seconds",
                "Time from request start to the end of the response, by server zone and location.",
                hist_series)

    ups = doc["upstreams"]
    peer_labels = [({"upstream": u, "peer": p}, peer) for u, up in ups.items()
                   for p, peer in up["peers"].items()]
    o.metric("upstream_peer_up", "gauge", "1 if the peer is up, else 0.",
             [(lb, 1 if pr["state"] == "up" else 0) for lb, pr in peer_labels])
    o.metric("upstream_peer_state", "gauge", "The peer's state (1 for the current state label).",
             [({**lb, "state": pr["state"]}, 1) for lb, pr in peer_labels])
    o.metric("upstream_peer_weight", "gauge", "Configured weight of the peer.",
             [(lb, pr["weight"]) for lb, pr in peer_labels])
    o.metric("upstream_requests", "counter",
             "Responses received from upstream peers, by status.",
             [({**lb, "status": code}, n) for lb, pr in peer_labels
              for code, n in sorted(pr["status"].items())])
    o.metric("upstream_fails", "counter",
             "Failed attempts (refused, reset, timed out) against upstream peers.",
             [(lb, pr["fails"]) for lb, pr in peer_labels])
    o.metric("upstream_sent_bytes", "counter", "Bytes sent to upstream peers.",
             [(lb, pr["data"]["sent"]) for lb, pr in peer_labels])
    o.metric("upstream_received_bytes", "counter", "Bytes received from upstream peers.",
             [(lb, pr["data"]["received"]) for lb, pr in peer_labels])
    o.metric("upstream_response_time_seconds", "gauge",
             "Mean response time of the peer since start (NaN before the first response).",
             [(lb, pr["response_time"]) for lb, pr in peer_labels])
    o.histogram("upstream_response_duration_seconds",
                "Time from sending the request to an upstream peer to the end of its response "
                "(or the failure of the attempt), by upstream.",
                [({"upstream": u}, up["response_time"]) for u, up in ups.items()])

    sd = doc["shared_dicts"]
    o.metric("shared_dict_capacity_bytes", "gauge", "Size of the shared dict.",
             [({"dict": n}, s["capacity"]) for n, s in sd.items()])
    o.metric("shared_dict_used_bytes", "gauge", "Bytes in allocated chunks of the shared dict.",
             [({"dict": n}, s["used"]) for n, s in sd.items()])
    o.metric("shared_dict_free_bytes", "gauge", "Free bytes of the shared dict.",
             [({"dict": n}, s["free"]) for n, s in sd.items()])
    o.metric("shared_dict_entries", "gauge", "Entries in the shared dict.",
             [({"dict": n}, s["entries"]) for n, s in sd.items()])
    o.metric("shared_dict_evictions", "counter", "Live entries evicted to make room (LRU).",
             [({"dict": n}, s["evictions"]) for n, s in sd.items()])

    t = doc["timers"]
    o.metric("timers", "gauge", "Timers of all workers: pending (armed) or running.",
             [({"state": "pending"}, t["pending"]), ({"state": "running"}, t["running"])])

    ws = doc["workers"]
    o.metric("workers", "gauge", "Worker processes alive (serving and retiring).",
             [({}, len(ws))])
    o.metric("worker_info", "gauge", "One series per worker process (always 1).",
             [({"id": w["id"], "pid": w["pid"], "generation": w["generation"],
                "state": w["state"]}, 1) for w in ws])
    o.metric("worker_restarts", "counter",
             "Times the worker with this id was respawned after dying, since start (a reload "
             "is not a restart).",
             [({"id": w["id"]}, w["restarts"]) for w in ws if w["state"] == "serving"])
    o.metric("worker_connections", "gauge", "Open client connections of each worker.",
             [({"id": w["id"], "pid": w["pid"]}, w["connections"]["active"]) for w in ws])

    counters = dict(doc["counters"])
    for name, help_ in (("limit_rejections", "Requests rejected by rate limiting."),
                        ("jwt_rejections", "Requests rejected by JWT validation.")):
        o.metric(name, "counter", help_, [({}, counters.pop(name, 0))])
    o.metric("events", "counter", "Named event counters (edgeworker.status.metrics.count).",
             [({"name": n}, v) for n, v in sorted(counters.items())])
    o.metric("metric_errors", "counter", "Failed flushes of worker counters into shared memory.",
             [({}, doc["metrics"]["flush_errors"])])
    _user_metrics(o, doc.get("user_metrics") or {})
    return "\n".join(o.lines) + "\n"


def _user_metrics(o: _Out, metrics: dict[str, Any]) -> None:
    """The metrics defined by handler code, under their own names (a family whose names a
    family written before already took is left out: two workers defined clashing metrics)."""
    taken: set[str] = set()
    for name, m in metrics.items():
        kind = m["type"]
        names = usermetrics.sample_names(kind, name)
        if names & taken:
            continue
        taken |= names
        family = usermetrics.family(kind, name)
        if kind == "histogram":
            o.histogram(family, m["help"], [(s["labels"], s) for s in m["series"]], prefix="")
        else:
            o.metric(family, kind, m["help"], [(s["labels"], s["value"]) for s in m["series"]],
                     prefix="")
