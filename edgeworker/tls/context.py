"""The TLS contexts of a config: certificate files read and checked, one pyOpenSSL
``OpenSSL.SSL.Context`` per server that listens with ``ssl``.

``build(cfg)`` runs in the master (at start and on each reload, before the workers fork) and in
``edgeworker check``. Every worker inherits the contexts through ``fork``, so they share the
session-ticket keys (OpenSSL makes them with the context): a session resumes on any worker.
A reload makes new contexts, hence new ticket keys (the rotation: tickets of the previous
generation no longer resume).

pyOpenSSL rather than the stdlib ``ssl``: it sets what ``ssl`` cannot (a verify callback that
lets the handshake complete whatever a client certificate's verification found, as nginx's,
the verify depth, the session lifetime). It is imported when the first context is made, so a
process without a TLS server never loads it. A worker runs TLS over memory buffers (a
``Connection`` made without a socket), fed from the non-blocking socket by
``edgeworker.io.BIOTLS`` and driven on the hub by ``edgeworker.io.TLSTransport``
(``edgeworker.tls.connection``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from . import ossl

__all__ = [
    "ALPN",
    "ALPN_H2",
    "CERTIFICATE_CACHE_SIZE",
    "Certificate",
    "Contexts",
    "build",
    "check_files",
    "offered_alpn",
    "server_context",
]

#: how many contexts a worker keeps for the certificates ``ssl_certificate_by`` chose (LRU)
CERTIFICATE_CACHE_SIZE = 256

#: the longest session id context OpenSSL takes
SSL_MAX_SID_CTX_LENGTH = 32


def _sni_callback(conn: Any) -> None:
    """The SNI callback: the server named by SNI presents its own certificate. ``conn.choose``
    (set by ``edgeworker.tls.connection`` before the handshake), called with the SNI name,
    returns the context of the server that name selects."""
    choose = getattr(conn, "choose", None)
    if choose is None:
        return
    name = conn.get_servername()
    ctx = choose(name.decode("ascii", "replace").lower().rstrip(".") or None if name else None)
    if ctx is not None and ctx is not conn.get_context():
        conn.set_context(ctx)


@dataclass
class Contexts:
    """The TLS contexts of one config generation: ``by_server[i]`` for ``cfg.server[i]``
    (servers that listen with ``ssl``); ``warnings``: what ``build`` found worth saying
    (certificates expired or not yet valid)."""

    by_server: dict[int, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: a worker's contexts for the certificates ``ssl_certificate_by`` chose, by (server
    #: index, cert path, key path, their mtimes), the least recently used dropped first
    chosen: OrderedDict[tuple[Any, ...], Any] = field(default_factory=OrderedDict)

    def for_certificate(self, index: int, server: Any, chosen: Any) -> Any:
        """The context of server ``index`` (``server``) with the certificate ``chosen``
        (a ``Certificate``, or a (cert path, key path) pair) instead of its configured one,
        made once per (paths, mtimes) in this worker (``CERTIFICATE_CACHE_SIZE`` kept).
        Raises ``ValueError`` with the reason for a value that is not a certificate,
        ``OSError`` or ``OpenSSL.SSL.Error`` for files OpenSSL refuses."""
        cert = chosen if isinstance(chosen, Certificate) else Certificate.of(chosen)
        key = (index, *cert.key())
        cache = self.chosen
        ctx = cache.get(key)
        if ctx is not None:
            cache.move_to_end(key)
            return ctx
        ctx = server_context(server, ((cert.cert, cert.key_path),))
        cache[key] = ctx
        while len(cache) > CERTIFICATE_CACHE_SIZE:
            cache.popitem(last=False)
        return ctx


class Certificate:
    """A certificate and its private key (PEM files; the certificate file may hold the
    chain after it), read and checked once: what an ``ssl_certificate_by`` function may
    return instead of a (cert path, key path) pair, made once (at import, or cached by the
    function) and returned for many handshakes.

    ``Certificate(cert, key)`` raises ``ValueError`` with the reason when a file cannot be
    read, is not PEM, or the key is not the certificate's. A worker makes the TLS context
    of a certificate once and makes it again when a file's modification time changed.
    """

    __slots__ = ("cert", "key_path", "_mtimes")

    def __init__(self, cert: Any, key: Any) -> None:
        self.cert = os.path.abspath(os.fspath(cert))
        self.key_path = os.path.abspath(os.fspath(key))
        errors: list[str] = []
        check_pair(self.cert, self.key_path, "certificate", "key", errors)
        if errors:
            raise ValueError("; ".join(errors))
        self._mtimes = self._stat()

    @classmethod
    def of(cls, value: Any) -> Certificate:
        """A (cert path, key path) pair as a ``Certificate`` (files not checked: OpenSSL
        reads them); ``ValueError`` for anything else."""
        if (
            not isinstance(value, tuple | list)
            or len(value) != 2
            or not all(isinstance(v, str | os.PathLike) for v in value)
        ):
            raise ValueError(
                f"returned {_shown(value)}: expected None, (cert path, key path) or "
                "edgeworker.tls.Certificate"
            )
        obj = cls.__new__(cls)
        obj.cert = os.path.abspath(os.fspath(value[0]))
        obj.key_path = os.path.abspath(os.fspath(value[1]))
        obj._mtimes = None
        return obj

    def _stat(self) -> tuple[int, int]:
        return os.stat(self.cert).st_mtime_ns, os.stat(self.key_path).st_mtime_ns

    def key(self) -> tuple[Any, ...]:
        """(cert path, key path, their modification times): what a context is cached by
        (``OSError`` when a file is gone)."""
        return (self.cert, self.key_path, *self._stat())

    def __repr__(self) -> str:
        return f"Certificate({self.cert!r}, {self.key_path!r})"


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def check_pair(
    cert_path: str,
    key_path: str,
    cp: str,
    kp: str,
    errors: list[str],
    warnings: list[str] | None = None,
) -> None:
    """Check one certificate and its key (``cp``, ``kp``: how messages name them): each
    readable and PEM, the key the certificate's (errors); expired or not yet valid (a
    warning)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    now = datetime.datetime.now(datetime.UTC)
    cert = key = None
    try:
        chain = x509.load_pem_x509_certificates(_read(cert_path))
        cert = chain[0]
    except OSError as e:
        errors.append(f'{cp}: cannot read "{cert_path}": {e.strerror or e}')
    except ValueError:
        errors.append(f'{cp}: "{cert_path}" is not a PEM certificate')
    try:
        key = serialization.load_pem_private_key(_read(key_path), password=None)
    except OSError as e:
        errors.append(f'{kp}: cannot read "{key_path}": {e.strerror or e}')
    except TypeError:
        errors.append(f'{kp}: "{key_path}" is encrypted: give the key without a passphrase')
    except (ValueError, Exception):  # noqa: BLE001 - any parse failure of the key
        errors.append(f'{kp}: "{key_path}" is not a PEM private key')
    if cert is None:
        return
    if key is not None:
        pem = serialization.Encoding.PEM
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(pem, spki) != key.public_key().public_bytes(pem, spki):
            errors.append(f'{kp}: "{key_path}" does not match the certificate "{cert_path}"')
    if warnings is None:
        return
    if cert.not_valid_after_utc < now:
        warnings.append(
            f'{cp}: the certificate "{cert_path}" expired on '
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    elif cert.not_valid_before_utc > now:
        warnings.append(
            f'{cp}: the certificate "{cert_path}" is not valid before '
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )


def check_files(server: Any, errors: list[str], warnings: list[str]) -> None:
    """Read ``server``'s certificate and key files and check them: each readable and PEM,
    each key the one of its certificate, its ``ssl_client_certificate`` (when it verifies
    clients) readable and PEM (errors); a certificate expired or not yet valid (a warning).
    Messages name the config path."""
    from cryptography import x509

    sp = server.path
    for i, (cert_path, key_path) in enumerate(
        zip(server.ssl_certificate, server.ssl_certificate_key, strict=False)
    ):
        n = f"[{i}]" if len(server.ssl_certificate) > 1 else ""
        cp, kp = f"{sp}.ssl_certificate{n}", f"{sp}.ssl_certificate_key{n}"
        check_pair(cert_path, key_path, cp, kp, errors, warnings)
    ca = server.ssl_client_certificate
    if ca is not None and server.ssl_verify_client != "off":
        try:
            x509.load_pem_x509_certificates(_read(ca))
        except OSError as e:
            errors.append(f'{sp}.ssl_client_certificate: cannot read "{ca}": {e.strerror or e}')
        except ValueError:
            errors.append(f'{sp}.ssl_client_certificate: "{ca}" is not a PEM certificate')


#: what ``ALPN`` offers by default: HTTP/1.1 (a client offering ALPN without it goes on
#: without ALPN)
ALPN = (b"http/1.1",)
#: what a server whose TLS addresses serve HTTP/2 (``listen … ssl http2``) offers: ``h2``
#: first, so a client offering both speaks HTTP/2
ALPN_H2 = (b"h2", b"http/1.1")


def offered_alpn(server: Any) -> tuple[bytes, ...]:
    """The ALPN protocols ``server``'s contexts offer (``ALPN_H2`` when its TLS addresses
    serve HTTP/2, else ``ALPN``): the one place the choice is made, so ``ssl_certificate_by``
    contexts offer the same. The connection reads the outcome with ``alpn_protocol()``."""
    if set(server.listen_ssl).intersection(getattr(server, "listen_http2", ())):
        return ALPN_H2
    return ALPN


def _alpn_select(alpn: tuple[bytes, ...]) -> Callable[[Any, list[bytes]], bytes]:
    """The ALPN choice: the first of ``alpn`` the client offers (the server's order)."""

    def select(conn: Any, offered: list[bytes]) -> bytes:
        for proto in alpn:
            if proto in offered:
                return proto
        from OpenSSL import SSL

        return SSL.NO_OVERLAPPING_PROTOCOLS

    return select


def _session_id_context(server: Any) -> bytes:
    """The session id context of ``server``'s contexts (a session resumes only where it has
    the one it was made with): the server's config path and its client-certificate rules."""
    from .schema import client_settings

    text = repr((server.path, client_settings(server))).encode()
    return hashlib.sha256(text).digest()[:SSL_MAX_SID_CTX_LENGTH]


def server_context(
    server: Any, certificates: Any = None, alpn: tuple[bytes, ...] | None = None
) -> Any:
    """The server's context (an ``OpenSSL.SSL.Context``; ``OpenSSL.SSL.Error``, ``OSError``
    when OpenSSL refuses a setting): its protocols, ciphers, tickets, session lifetime and
    client-certificate settings, with its configured certificates, or ``certificates``
    ((cert path, key path) pairs) instead; ``alpn``: the ALPN protocols offered, the
    server's preference first (default: ``offered_alpn(server)``)."""
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    known = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}
    versions = sorted(known[p] for p in server.ssl_protocols)
    ctx.set_min_proto_version(versions[0])
    ctx.set_max_proto_version(versions[-1])
    # no TLS compression (CRIME), no renegotiation, no 0-RTT (early data is never enabled);
    # a peer closing without close_notify is an EOF, as Python's ssl does
    options = SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_IGNORE_UNEXPECTED_EOF
    if server.ssl_prefer_server_ciphers:
        options |= SSL.OP_CIPHER_SERVER_PREFERENCE
    if not server.ssl_session_tickets:
        options |= SSL.OP_NO_TICKET
    ctx.set_options(options)
    # an idle connection gives its read and write buffers back (about 35 KiB each), as nginx
    # and Python's ssl do
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(server.ssl_ciphers.encode())
    ctx.set_session_id(_session_id_context(server))
    # how long a session resumes; also the lifetime TLS 1.3 tickets announce
    ctx.set_timeout(max(1, round(server.ssl_session_timeout)))
    if certificates is None:
        certificates = zip(server.ssl_certificate, server.ssl_certificate_key, strict=True)
    for cert, key in certificates:
        ctx.use_certificate_chain_file(os.fsencode(cert))
        ctx.use_privatekey_file(os.fsencode(key))
        ctx.check_privatekey()
    if server.ssl_verify_client != "off":
        ca = server.ssl_client_certificate
        if ca is not None:
            ctx.load_verify_locations(os.fsencode(ca))
            ctx.load_client_ca(os.fsencode(ca))  # the CA names the certificate request shows
        ctx.set_verify_depth(server.ssl_verify_depth)
        # as nginx: the handshake completes whatever the verification found; its result is
        # checked with each request (edgeworker.tls.connection)
        ossl.verify_any(ctx)
    ctx.set_tlsext_servername_callback(_sni_callback)
    if alpn is None:
        alpn = offered_alpn(server)
    if alpn:
        ctx.set_alpn_select_callback(_alpn_select(alpn))
    return ctx


def openssl_reason(exc: Exception) -> str:
    """The reasons of a pyOpenSSL ``Error`` (OpenSSL's error queue: (library, function,
    reason) triples), joined: ``no cipher match``."""
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list) and errors:
        reasons = [str(e[2]) for e in errors if isinstance(e, tuple) and len(e) == 3 and e[2]]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
    return str(exc) or type(exc).__name__


def build(cfg: Any) -> Contexts:
    """The contexts of every server of ``cfg`` that listens with ``ssl``, their files checked
    first (``check_files``). Raises ``ConfigError(cfg.file, messages)`` on any error; the
    warnings are in the result."""
    out = Contexts()
    errors: list[str] = []
    if any(server.listen_ssl for server in cfg.server):
        try:
            ossl.check()
        except (ImportError, RuntimeError) as e:
            raise ConfigError(cfg.file, [f"TLS cannot run: {e}"]) from None
    for i, server in enumerate(cfg.server):
        if not server.listen_ssl:
            continue
        found: list[str] = []
        check_files(server, found, out.warnings)
        errors.extend(found)
        if found:
            continue
        try:
            out.by_server[i] = server_context(server)
        except (OSError, ValueError) as e:
            errors.append(f"{server.path}: TLS settings refused: {e}")
        except Exception as e:  # noqa: BLE001 - OpenSSL.SSL.Error: its reasons
            errors.append(f"{server.path}: TLS settings refused: {openssl_reason(e)}")
    if errors:
        raise ConfigError(cfg.file, errors)
    return out
