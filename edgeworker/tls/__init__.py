"""``edgeworker.tls``: TLS termination (HTTPS to clients).

- ``schema``: the ``ssl_*`` keys of ``[http]`` and ``[[server]]``, the ``ssl`` listen flag,
  their checks (composed by ``edgeworker.config``);
- ``context``: the certificate files read and checked, one pyOpenSSL context per TLS server,
  made in the master before the workers fork (so they share the session-ticket keys);
- ``ossl``: what the TLS termination needs of OpenSSL beyond pyOpenSSL's API (the verify
  result kept, session reuse);
- ``connection``: a worker's side of one TLS connection: the plain-HTTP probe, the handshake
  within its deadline, SNI, ``ssl_certificate_by``, and the ``ssl_*`` variables.

``Certificate(cert, key)``: a certificate an ``ssl_certificate_by`` function may return.
"""

from .context import Certificate

__all__ = ["Certificate"]
