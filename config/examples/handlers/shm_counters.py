"""Counters across workers in a shared dict.

OpenResty original (lua_shared_dict counters 1m;)::

    local counters = ngx.shared.counters
    local n = counters:incr("hits", 1, 0)              -- atomic across workers
    counters:incr("worker:" .. ngx.worker.id(), 1, 0)
    ngx.say(n)
"""

import edgeworker


def hit(req):
    counters = edgeworker.shared["counters"]
    n = counters.incr("hits", 1, init=0)  # atomic across workers
    counters.incr(f"worker:{edgeworker.worker.id}", 1, init=0)
    return f"{n}\n"


def show(req):
    counters = edgeworker.shared["counters"]
    per_worker = {
        key: counters.get(key)
        for key in counters.get_keys(0)
        if isinstance(key, str) and key.startswith("worker:")
    }
    return {"hits": counters.get("hits") or 0, "per_worker": per_worker}
