"""The certificate of each TLS handshake from a folder (``ssl_certificate_by``): ``<name>.crt``
and ``<name>.key`` for the SNI name, else the wildcard pair of its parent domain
(``_.example.com.crt`` for ``*.example.com``), else None: the server's configured certificate.

Called in the connection's greenlet before the handshake, with the SNI name (None without
SNI) and the client's address. Returning paths is enough: the worker makes the TLS context
once per (paths, modification times) and keeps a few hundred.

OpenResty original (ssl_certificate_by_lua)::

    local ssl = require "ngx.ssl"
    local name = ssl.server_name()
    local pem = read_file(dir .. name .. ".crt")
    if pem then
        ssl.clear_certs()
        ssl.set_der_cert(ssl.cert_pem_to_der(pem))
        ssl.set_der_priv_key(ssl.priv_key_pem_to_der(read_file(dir .. name .. ".key")))
    end
"""

import os
import re

CERT_DIR = os.environ.get("CERT_DIR", "/etc/edgeworker/certs")
# a host name only: nothing that could name a file elsewhere ("..", "/")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def _pair(stem):
    cert = os.path.join(CERT_DIR, stem + ".crt")
    if os.path.exists(cert):
        return cert, os.path.join(CERT_DIR, stem + ".key")
    return None


def pick(server_name, client):
    if server_name is None or not _NAME.match(server_name):
        return None  # the configured certificate
    found = _pair(server_name)
    if found is None and "." in server_name:
        found = _pair("_." + server_name.split(".", 1)[1])
    return found
