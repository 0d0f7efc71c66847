"""What the TLS termination needs of OpenSSL that pyOpenSSL's API does not give, through the
OpenSSL bindings pyOpenSSL itself is built on (``cryptography.hazmat.bindings``) and the
OpenSSL handles of its objects (``Context._context``, ``Connection._ssl``).

- ``verify_any(ctx)``: request a client certificate and let the handshake complete whatever its
  verification finds, keeping the finding (pyOpenSSL's ``set_verify`` callback clears the
  error when it returns true, so ``SSL_get_verify_result`` would say OK);
- ``verify_result(conn)``: that finding (``SSL_get_verify_result``: also a resumed session's,
  which OpenSSL keeps in the session), and ``verify_error(code)``, OpenSSL's text for it;
- ``session_reused(conn)``: whether the handshake resumed a session.

``check()`` fails (``RuntimeError`` naming what is missing) when an installed pyOpenSSL no
longer has these handles: ``edgeworker check`` and every start run it when a server listens with
``ssl``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check", "session_reused", "verify_any", "verify_error", "verify_result"]

_lib: Any = None
_ffi: Any = None
_accept_any: Any = None


def _load() -> None:
    global _lib, _ffi, _accept_any
    from cryptography.hazmat.bindings.openssl.binding import Binding

    _lib, _ffi = Binding.lib, Binding.ffi
    # the verify callback: every certificate of the chain accepted, the error left in place
    # (one callback for every context; kept here, so never collected)
    _accept_any = _ffi.callback("int (*)(int, X509_STORE_CTX *)", lambda ok, store: 1)


def check() -> None:
    """``RuntimeError`` when pyOpenSSL's objects lack the OpenSSL handles used here."""
    from OpenSSL import SSL

    if _lib is None:
        _load()
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    conn = SSL.Connection(ctx, None)
    missing = [
        name
        for name, obj, attr in (
            ("OpenSSL.SSL.Context._context", ctx, "_context"),
            ("OpenSSL.SSL.Connection._ssl", conn, "_ssl"),
            ("OpenSSL.SSL.Connection._into_ssl", conn, "_into_ssl"),
            ("OpenSSL.SSL.Connection._from_ssl", conn, "_from_ssl"),
        )
        if not hasattr(obj, attr)
    ]
    for name in (
        "SSL_CTX_set_verify",
        "SSL_get_verify_result",
        "SSL_session_reused",
        "X509_verify_cert_error_string",
        "BIO_get_mem_data",
    ):
        if not hasattr(_lib, name):
            missing.append(f"the OpenSSL binding {name}")
    if missing:
        raise RuntimeError(
            "this pyOpenSSL/cryptography lacks " + ", ".join(missing) + ": install the "
            "versions setup.cfg names"
        )


def verify_any(ctx: Any) -> None:
    """Ask clients of ``ctx`` (an ``OpenSSL.SSL.Context``) for a certificate, not requiring
    one; the handshake completes whatever its verification found (``verify_result``)."""
    if _lib is None:
        _load()
    _lib.SSL_CTX_set_verify(ctx._context, _lib.SSL_VERIFY_PEER, _accept_any)


def verify_result(conn: Any) -> int:
    """OpenSSL's verification result of the client certificate of ``conn`` (an
    ``OpenSSL.SSL.Connection``): 0 (``X509_V_OK``) when it verified or none was sent."""
    if _lib is None:
        _load()
    return _lib.SSL_get_verify_result(conn._ssl)


def verify_error(code: int) -> str:
    """OpenSSL's text for the verification result ``code`` (``certificate has expired``)."""
    if _lib is None:
        _load()
    return _ffi.string(_lib.X509_verify_cert_error_string(code)).decode("ascii", "replace")


def session_reused(conn: Any) -> bool:
    """True when the handshake of ``conn`` resumed a session."""
    if _lib is None:
        _load()
    return bool(_lib.SSL_session_reused(conn._ssl))
