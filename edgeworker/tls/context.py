"""The TLS contexts of a config: certificate files read and checked, one ``ssl.SSLContext`` per
server that listens with ``ssl``.

``build(cfg)`` runs in the master (at start and on each reload, before the workers fork) and in
``edgeworker check``. Every worker inherits the contexts through ``fork``, so they share the
session-ticket keys (OpenSSL makes them with the context): a session resumes on any worker.
A reload makes new contexts, hence new ticket keys (the rotation: tickets of the previous
generation no longer resume).

Only the stdlib ``ssl`` module is used here (no gevent, nothing patched). A worker runs TLS
over memory buffers (``SSLContext.wrap_bio``, which makes a ``ServerTLS``: each context's
documented ``sslobject_class``), fed from the non-blocking socket by ``edgeworker.io.BIOTLS``
and driven on the hub by ``edgeworker.io.TLSTransport``. (Not ``wrap_socket``: once gevent
patched ``ssl``, the stdlib ``SSLSocket`` can no longer be made.)
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = [
    "CERTIFICATE_CACHE_SIZE",
    "Certificate",
    "Contexts",
    "ServerTLS",
    "build",
    "check_files",
    "server_context",
]

#: how many contexts a worker keeps for the certificates ``ssl_certificate_by`` chose (LRU)
CERTIFICATE_CACHE_SIZE = 256

_PROTOCOL_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class ServerTLS(ssl.SSLObject):
    """The server side of one TLS connection in a worker (made by ``SSLContext.wrap_bio``).

    ``choose``: set by the connection before the handshake; called with the SNI name, it
    returns the context of the server that name selects (the SNI callback switches to it).
    ``route``: what ``choose`` selected last (the connection's own business).
    """

    choose: Callable[[str | None], ssl.SSLContext | None] | None = None
    route: Any = None


def _sni_callback(tls: Any, server_name: str | None, initial: ssl.SSLContext) -> None:
    """``SSLContext.sni_callback``: the server named by SNI presents its own certificate."""
    choose = getattr(tls, "choose", None)
    if choose is None:
        return None
    ctx = choose(server_name)
    if ctx is not None and ctx is not tls.context:
        tls.context = ctx
    return None


@dataclass
class Contexts:
    """The TLS contexts of one config generation: ``by_server[i]`` for ``cfg.server[i]``
    (servers that listen with ``ssl``); ``warnings``: what ``build`` found worth saying
    (certificates expired or not yet valid)."""

    by_server: dict[int, ssl.SSLContext] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: ``cfg.server[i]``'s ``ssl_client_certificate`` certificates (``cryptography``), for the
    #: servers that verify clients with ``ssl_verify_depth = 1`` (see ``directly_issued``)
    client_cas: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    #: a worker's contexts for the certificates ``ssl_certificate_by`` chose, by (server
    #: index, cert path, key path, their mtimes), the least recently used dropped first
    chosen: OrderedDict[tuple[Any, ...], ssl.SSLContext] = field(default_factory=OrderedDict)

    def for_certificate(self, index: int, server: Any, chosen: Any) -> ssl.SSLContext:
        """The context of server ``index`` (``server``) with the certificate ``chosen``
        (a ``Certificate``, or a (cert path, key path) pair) instead of its configured one,
        made once per (paths, mtimes) in this worker (``CERTIFICATE_CACHE_SIZE`` kept).
        Raises ``ValueError`` with the reason for a value that is not a certificate,
        ``OSError`` (``ssl.SSLError`` included) for files OpenSSL refuses."""
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

    def directly_issued(self, index: int, der: bytes) -> bool:
        """True when the client certificate ``der`` (verified by OpenSSL) was issued by one of
        the certificates of server ``index``'s ``ssl_client_certificate`` itself: a chain of
        depth 1, nginx's default ``ssl_verify_depth``. (Python's ssl sets no verify depth and,
        before 3.13, does not show the verified chain: a depth of 1 is checked here, after the
        handshake; a larger depth lets any chain through.)"""
        cas = self.client_cas.get(index)
        if cas is None:
            return True
        from cryptography import x509

        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return False
        for ca in cas:
            if ca.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except Exception:  # noqa: BLE001 - any failure: not this one
                continue
            return True
        return False


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


def check_files(server: Any, errors: list[str], warnings: list[str]) -> tuple[Any, ...]:
    """Read ``server``'s certificate and key files and check them: each readable and PEM,
    each key the one of its certificate (errors); a certificate expired or not yet valid
    (a warning). Messages name the config path. Returns the certificates of its
    ``ssl_client_certificate`` (when it verifies clients)."""
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
            return tuple(x509.load_pem_x509_certificates(_read(ca)))
        except OSError as e:
            errors.append(f'{sp}.ssl_client_certificate: cannot read "{ca}": {e.strerror or e}')
        except ValueError:
            errors.append(f'{sp}.ssl_client_certificate: "{ca}" is not a PEM certificate')
    return ()


def _stdlib_context() -> type[ssl.SSLContext]:
    """The stdlib's ``SSLContext`` class: in a worker (made by ``ssl_certificate_by``),
    gevent has patched ``ssl.SSLContext``, whose ``sni_callback`` expects its own sockets."""
    cls = ssl.SSLContext
    if cls.__module__ != "ssl":
        from gevent import monkey

        cls = monkey.get_original("ssl", "SSLContext")
    return cls


def server_context(server: Any, certificates: Any = None) -> ssl.SSLContext:
    """The server's context (``ssl.SSLError``, ``OSError`` when OpenSSL refuses a setting):
    its protocols, ciphers, tickets and client-certificate settings, with its configured
    certificates, or ``certificates`` ((cert path, key path) pairs) instead."""
    cls = _stdlib_context()
    ctx = cls(ssl.PROTOCOL_TLS_SERVER)
    # the settings go through the C type's own descriptors: the stdlib's Python setters
    # look ``ssl.SSLContext`` up at call time, which is gevent's class once it patched ssl
    # (in a worker), and recurse
    c_type = super(cls, cls)

    def put(name: str, value: Any) -> None:
        getattr(c_type, name).__set__(ctx, value)

    versions = sorted(_PROTOCOL_VERSIONS[p] for p in server.ssl_protocols)
    put("minimum_version", versions[0])
    put("maximum_version", versions[-1])
    # no TLS compression (CRIME), no renegotiation; no 0-RTT: Python's ssl never enables
    # early data
    options = ctx.options | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if server.ssl_prefer_server_ciphers:
        options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if not server.ssl_session_tickets:
        options |= ssl.OP_NO_TICKET
    put("options", options)
    ctx.set_ciphers(server.ssl_ciphers)
    if certificates is None:
        certificates = zip(server.ssl_certificate, server.ssl_certificate_key, strict=True)
    for cert, key in certificates:
        ctx.load_cert_chain(cert, key)
    if server.ssl_verify_client != "off":
        ctx.load_verify_locations(cafile=server.ssl_client_certificate)
        # "on" too: a client without a certificate completes the handshake and is answered
        # 400 (as nginx); a certificate that does not verify fails the handshake (Python's
        # ssl cannot let it through)
        put("verify_mode", ssl.CERT_OPTIONAL)
    ctx.sni_callback = _sni_callback
    ctx.sslobject_class = ServerTLS
    return ctx


def build(cfg: Any) -> Contexts:
    """The contexts of every server of ``cfg`` that listens with ``ssl``, their files checked
    first (``check_files``). Raises ``ConfigError(cfg.file, messages)`` on any error; the
    warnings are in the result."""
    out = Contexts()
    errors: list[str] = []
    for i, server in enumerate(cfg.server):
        if not server.listen_ssl:
            continue
        found: list[str] = []
        cas = check_files(server, found, out.warnings)
        errors.extend(found)
        if found:
            continue
        if cas and server.ssl_verify_depth == 1:
            out.client_cas[i] = cas
        try:
            out.by_server[i] = server_context(server)
        except ssl.SSLError as e:
            errors.append(f"{server.path}: TLS settings refused: {e.reason or e}")
        except (OSError, ValueError) as e:
            errors.append(f"{server.path}: TLS settings refused: {e}")
    if errors:
        raise ConfigError(cfg.file, errors)
    return out
