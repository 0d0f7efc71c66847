"""Mutual TLS: the client certificate's subject (``$ssl_client_s_dn``, nginx's RFC 2253 form,
e.g. ``CN=billing`` or ``CN=billing,O=internal``) decides who may call the API.

OpenResty original (access_by_lua)::

    local allowed = { ["CN=billing"] = true, ["CN=reports"] = true }
    if not allowed[ngx.var.ssl_client_s_dn] then return ngx.exit(403) end
"""

import os

#: the subjects allowed to call the API (``MTLS_ALLOWED``: subjects separated by "|")
ALLOWED = frozenset(os.environ.get("MTLS_ALLOWED", "CN=billing|CN=reports").split("|"))


def allow(req):
    # (the TLS layer verified the certificate against ssl_client_certificate already)
    subject = req.var.get("ssl_client_s_dn")
    if subject not in ALLOWED:
        req.exit(403, '{"error":"unknown client"}', content_type="application/json")
    req.ctx["client"] = subject


def whoami(req):
    return {"client": req.ctx["client"]}
