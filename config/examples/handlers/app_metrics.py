"""Application metrics: requests by route and status, and their time by route.

OpenResty original (nginx-lua-prometheus)::

    init_worker_by_lua_block {
        prometheus = require("prometheus").init("prometheus_metrics")
        requests = prometheus:counter("app_requests_total", "Requests", {"route", "status"})
        latency = prometheus:histogram("app_request_duration_seconds", "Time", {"route"})
    }
    log_by_lua_block {
        requests:inc(1, {route, ngx.var.status})
        latency:observe(tonumber(ngx.var.request_time), {route})
    }

Here the metrics are defined at import; counting is a dict lookup and an addition, flushed into
shared memory by the worker every 0.5 s. Labels take bounded values: the route, never the raw
URI (each label set is a series kept until restart).
"""

import edgeworker
from edgeworker import metrics

REQUESTS = metrics.counter(
    "app_requests_total", "Requests answered, by route and status.", labels=("route", "status")
)
DURATION = metrics.histogram(
    "app_request_duration_seconds",
    "Time from the start of the request to the log phase, by route.",
    labels=("route",),
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
)
ROUTES = frozenset({"items", "users"})


def route_of(req):
    """``/api/items/7`` → ``items``; anything unknown → ``other``."""
    part = req.uri.split("/")[2]
    return part if part in ROUTES else "other"


def api(req):
    name = route_of(req)
    if name == "other" or req.uri.endswith("/missing"):
        req.exit(404)
    return f"{name} {req.uri.rsplit('/', 1)[1]}\n"


def log(req):
    name = route_of(req)
    REQUESTS.inc(route=name, status=req.status)
    DURATION.observe(edgeworker.now() - req.start_time, route=name)
