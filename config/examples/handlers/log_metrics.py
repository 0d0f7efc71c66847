"""Push per-request metrics after the response, from the log phase, with timer.at(0, …).

OpenResty original (log_by_lua)::

    local function push(premature, uri, status, t)
        if premature then return end
        local red = redis:new(); red:connect("127.0.0.1", 6379)
        red:rpush("edge:metrics", cjson.encode({ uri = uri, status = status, time = t }))
        red:set_keepalive(10000, 100)
    end
    ngx.timer.at(0, push, ngx.var.uri, ngx.status, ngx.var.request_time)

Cosockets are not allowed in log_by_lua, hence the timer. In edgeworker the log phase may do
I/O, but a timer still keeps the worker's log phase short and the push independent of it.
"""

import json

import edgeworker


def push(premature, doc):
    # premature=True means the worker is exiting: the push still runs (it is quick)
    try:
        edgeworker.redis.client("default").rpush("edge:metrics", json.dumps(doc))
    except Exception as exc:  # a metrics outage must not break anything
        edgeworker.log.warning("metrics push failed: %s", exc)


def log(req):
    doc = {"uri": req.uri, "status": req.status, "time": float(req.var["request_time"]),
           "worker": edgeworker.worker.id}
    edgeworker.timer.at(0, push, doc)
