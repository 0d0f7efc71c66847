"""Rate limiting by IP in Redis, 60 requests/minute, written as an access handler.

OpenResty original (lua-resty-redis, access_by_lua)::

    local red = redis:new(); red:set_timeouts(100, 100, 100)
    local ok, err = red:connect("127.0.0.1", 6379)
    if not ok then return end                                  -- fail open
    local key = "rl:" .. ngx.var.binary_remote_addr
    local n = red:incr(key)
    if n == 1 then red:expire(key, 60) end                     -- not atomic: may leak a key
    red:set_keepalive(10000, 100)
    if n > 60 then ngx.header["Retry-After"] = 60; return ngx.exit(429) end

Here one atomic Lua script (EVALSHA) counts and sets the TTL together, the window resets on
the minute, and Redis errors/timeouts let the request through (``fail="open"``), logged at most
once per 10 s.
"""

from edgeworker.lib import limit

per_ip = limit.FixedWindow("redis:default", limit=60, window=60, prefix="rl:", fail="open")


def access(req):
    res = per_ip.incoming(req.binary_remote_addr)
    if res.error is None:
        req.resp_headers["X-RateLimit-Remaining"] = str(res.remaining)
    if not res.allowed:
        req.exit(429, "too many requests\n", headers={"Retry-After": str(res.retry_after)})
