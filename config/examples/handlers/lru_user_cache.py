"""An in-memory LRU cache of a user service, per worker.

OpenResty original (lua-resty-lrucache + lua-resty-http, content_by_lua)::

    local lrucache = require "resty.lrucache"
    local cache = lrucache.new(10000)                 -- module level: one per worker
    local id = ngx.var[1]
    local user = cache:get(id)
    if user then ngx.header["X-Cache"] = "HIT"; return ngx.say(user) end
    local res, err = httpc:request_uri(USER_SERVICE .. "/users/" .. id, { timeout = 2000 })
    if not res or res.status >= 500 then return ngx.exit(502) end
    cache:set(id, res.body, 30)
    ngx.header["X-Cache"] = "MISS"; ngx.say(res.body)
"""

import os

from edgeworker import httpclient
from edgeworker.lib.lrucache import LRUCache

USER_SERVICE = os.environ.get("USER_SERVICE", "http://127.0.0.1:9002")
users = LRUCache(10_000)  # module level: one cache per worker process


def user(req):
    uid = req.var["1"]
    body = users.get(uid)
    if body is not None:
        req.resp_headers["X-Cache"] = "HIT"
    else:
        try:
            resp = httpclient.request("GET", f"{USER_SERVICE}/users/{uid}", timeout=2.0)
        except httpclient.RequestError as exc:
            req.exit(502, f"user service unavailable: {type(exc).__name__}\n")
        if resp.status == 404:
            req.exit(404, "no such user\n")
        if resp.status != 200:
            req.exit(502, f"user service answered {resp.status}\n")
        body = resp.body
        users.set(uid, body, ttl=30)
        req.resp_headers["X-Cache"] = "MISS"
    req.resp_headers["Content-Type"] = "application/json"
    return body
