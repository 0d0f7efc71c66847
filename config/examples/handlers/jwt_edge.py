"""JWT at the edge, in code: the same check as the declarative ``jwt`` key, by hand.

OpenResty original (lua-resty-jwt, access_by_lua)::

    local jwt = require "resty.jwt"
    local auth = ngx.var.http_authorization
    if not auth then return ngx.exit(401) end
    local token = auth:match("Bearer%s+(.+)")
    local obj = jwt:verify(os.getenv("JWT_SECRET"), token,
                           { require_exp = true, lifetime_grace_period = 30 })
    if not obj.verified then return ngx.exit(401) end
    ngx.req.set_header("X-User-Id", obj.payload.sub)

Here the algorithm is pinned (HS256 only: ``none`` and RS256-as-HS256 are refused), ``exp`` is
required and verified tokens are cached per worker until they expire.
"""

import os

from edgeworker.lib.jwt import InvalidToken, Verifier

SECRET = os.environ.get("JWT_SECRET", "change-me-change-me-change-me-32b")
verifier = Verifier(["HS256"], secret=SECRET, leeway=30)


def access(req):
    scheme, _, token = (req.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        req.exit(401, '{"error":"missing_token"}',
                 headers={"WWW-Authenticate": 'Bearer realm="api"'},
                 content_type="application/json")
    try:
        claims = verifier.verify(token.strip())
    except InvalidToken:
        req.exit(401, '{"error":"invalid_token"}',
                 headers={"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'},
                 content_type="application/json")
    req.ctx["user"] = claims["sub"]
    req.headers["X-User-Id"] = str(claims["sub"])


def whoami(req):
    return {"user": req.ctx["user"]}
