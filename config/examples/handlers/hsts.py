"""HSTS: browsers that saw this header over HTTPS use HTTPS only for the site, for two years
(and its subdomains). Sent on HTTPS responses only: over plain HTTP it means nothing (RFC 6797).

OpenResty original (header_filter_by_lua)::

    if ngx.var.https == "on" then
        ngx.header["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    end
"""

HSTS = "max-age=63072000; includeSubDomains"


def add(req):
    if req.scheme == "https":
        req.resp_headers["Strict-Transport-Security"] = HSTS
