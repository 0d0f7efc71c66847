"""A worker's side of one TLS connection: the probe for plain HTTP, the handshake within its
deadline, the server SNI selects, and the ``ssl_*`` variables.

``accept(...)`` runs in the connection's greenlet, never blocking the worker: the first record
is read (a TLS record starts with 0x16; anything else is plain HTTP sent to the TLS port,
answered 400 as nginx does), its SNI name selects the server (the name table of the
connection's address: the rule of ``Host``), then TLS runs over memory buffers (a pyOpenSSL
``Connection`` with that server's context) and ``TLSTransport`` drives the handshake on the
hub, all within ``ssl_handshake_timeout``. A handshake that fails (garbage, a truncated or
oversized ClientHello, a protocol refused) closes that connection and is logged at info, as
nginx does. A client certificate that does not verify does not fail the handshake (nginx's
rule): ``TLSInfo`` keeps OpenSSL's finding and the requests get 400.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from ..http.responses import SERVER, error_response
from ..io import BIOTLS, TLSTransport
from . import ossl, schema
from .context import openssl_reason

__all__ = [
    "FAILURE_REASONS",
    "PLAIN_HTTP_BODY",
    "STATS",
    "TLSClient",
    "TLSInfo",
    "VERSIONS",
    "accept",
    "plain_http_response",
    "refusal_response",
]

#: the body nginx answers plain HTTP sent to a TLS port with (status 400)
PLAIN_HTTP_BODY = "The plain HTTP request was sent to HTTPS port"
#: ``ssl_verify_client = "on"`` and the client sent no certificate (status 400)
NO_CERT_BODY = "No required SSL certificate was sent"
#: the client's certificate did not verify (status 400)
CERT_ERROR_BODY = "The SSL certificate error"

#: OpenSSL's verification results ``ssl_verify_client = "optional_no_ca"`` lets through
#: (nginx's ``ngx_ssl_verify_error_optional``): a self-signed certificate or chain, an issuer
#: not found or not trusted
OPTIONAL_NO_CA_ERRORS = frozenset(
    (
        18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        27,  # X509_V_ERR_CERT_UNTRUSTED
        21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    )
)

_TLS_HANDSHAKE = 0x16  # the content type of the first record of a TLS client


def _page(title: str, detail: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        "<center><h1>400 Bad Request</h1></center>\r\n"
        f"<center>{detail}</center>\r\n"
        f"<hr><center>{SERVER}</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def refusal_response(detail: str) -> bytes:
    """The body of a 400 about TLS (nginx's page with ``detail``)."""
    return _page(f"400 {detail}", detail)


def plain_http_response() -> bytes:
    """The whole response to plain HTTP on a TLS port: 400 with nginx's text, then close."""
    return error_response(400, keep_alive=False, body=refusal_response(PLAIN_HTTP_BODY))


class TLSInfo:
    """The TLS side of one established connection (``Connection.tls``).

    ``sock``: the connection's pyOpenSSL ``Connection``; ``route``: the server SNI selected
    (the address's default without SNI). ``refusal``: None, or the detail of the 400 every
    request of the connection gets, as nginx checks each request: the client certificate did
    not verify (``ssl_verify_client`` ``on`` or ``optional``; with ``optional_no_ca`` an
    unknown or self-signed issuer is let through), or ``on`` and none was sent; ``reason``:
    what the info log says of it. ``var(name)``: the ``ssl_*`` variables.
    """

    __slots__ = (
        "sock",
        "route",
        "server_name",
        "reused",
        "verify",
        "refusal",
        "reason",
        "_der",
        "_cert_vars",
    )

    def __init__(self, sock: Any, route: Any, server_name: str | None) -> None:
        self.sock = sock
        self.route = route
        self.server_name = server_name
        self.reused = ossl.session_reused(sock)
        self._der: bytes | None = None
        self._cert_vars: dict[str, str] | None = None
        self.refusal: str | None = None
        self.reason = ""
        mode = route.server.ssl_verify_client
        if mode == "off":
            self.verify = "NONE"
            return
        # nginx's order: the verification result first (a resumed session keeps its
        # certificate's), then a certificate required and not sent
        code = ossl.verify_result(sock)
        if code:
            error = ossl.verify_error(code)
            self.verify = f"FAILED:{error}"
            if mode != "optional_no_ca" or code not in OPTIONAL_NO_CA_ERRORS:
                self.refusal = CERT_ERROR_BODY
                self.reason = f"client SSL certificate verify error: ({code}:{error})"
        elif self.peer_der() is None:
            self.verify = "NONE"
            if mode == "on":
                self.refusal = NO_CERT_BODY
                self.reason = "client sent no required SSL certificate"
        else:
            self.verify = "SUCCESS"

    def peer_der(self) -> bytes | None:
        """The client's certificate (DER), or None."""
        if self._der is None:
            cert = self.sock.get_peer_certificate()
            if cert is None:
                self._der = b""
            else:
                from OpenSSL import crypto

                self._der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
        return self._der or None

    def alpn_protocol(self) -> str | None:
        """The protocol ALPN chose (``http/1.1``), or None (the client offered none of the
        server's, or no ALPN)."""
        chosen = self.sock.get_alpn_proto_negotiated()
        return chosen.decode("ascii", "replace") if chosen else None

    def misdirected(self, route: Any) -> bool:
        """True when ``route`` (what ``Host`` selected) accepts other client certificates than
        the server SNI selected: the request must not be served there (421)."""
        return route is not self.route and schema.client_settings(
            route.server
        ) != schema.client_settings(self.route.server)

    def var(self, name: str) -> str | None:
        """``ssl_protocol``, ``ssl_cipher``, ``ssl_server_name``, ``ssl_session_reused``,
        ``ssl_alpn_protocol``, ``ssl_client_verify`` and the client certificate's
        ``ssl_client_*``; None otherwise."""
        sock = self.sock
        if name == "ssl_protocol":
            return sock.get_protocol_version_name() or ""
        if name == "ssl_cipher":
            return sock.get_cipher_name() or ""
        if name == "ssl_server_name":
            return self.server_name or ""
        if name == "ssl_session_reused":
            return "r" if self.reused else "."
        if name == "ssl_alpn_protocol":
            return self.alpn_protocol() or ""
        if name == "ssl_client_verify":
            return self.verify
        if name.startswith("ssl_client_"):
            # the client certificate's subject, issuer, serial, fingerprint, PEM and dates
            # (nginx's formats), read once per connection; certinfo (and the cryptography
            # package it reads certificates with, about 10 MiB per worker) imported only then
            values = self._cert_vars
            if values is None:
                der = self.peer_der()
                if der is None:
                    values = self._cert_vars = {}
                else:
                    from .certinfo import cert_vars

                    values = self._cert_vars = cert_vars(der)
            return values.get(name, "")
        return None


class TLSClient:
    """What an ``ssl_certificate_by`` function learns of the connection besides the server
    name: the client's address and port, and the local address and port it connected to."""

    __slots__ = ("remote_addr", "remote_port", "server_addr", "server_port")

    def __init__(self, remote_addr: str, remote_port: int, server_addr: str, server_port: int):
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.server_addr = server_addr
        self.server_port = server_port

    def __repr__(self) -> str:
        return f"TLSClient({self.remote_addr}:{self.remote_port} -> {self.server_addr}:{self.server_port})"


# -- the handshake counters of this process (a worker's; flushed by edgeworker.status) --------
#: indexes into ``STATS``: handshakes completed, resumed; failed by reason; by protocol
HANDSHAKES, RESUMED, FAILED_TIMEOUT, FAILED_PLAIN, FAILED_PROTOCOL, FAILED_CERT = range(6)
FAILED_OTHER, PROTO_TLS12, PROTO_TLS13 = 6, 7, 8
#: the failure reasons, in index order from ``FAILED_TIMEOUT``
FAILURE_REASONS = ("timeout", "plain_http", "protocol", "certificate", "other")
#: the protocol versions counted, in index order from ``PROTO_TLS12``
VERSIONS = ("TLSv1.2", "TLSv1.3")
#: the counters, bumped once per handshake (plain ints: nothing allocated, no lock)
STATS = [0] * 9
_VERSION_INDEX = {"TLSv1.2": PROTO_TLS12, "TLSv1.3": PROTO_TLS13}


def accept(
    io: Any,
    names: Any,
    contexts: Any,
    log: logging.Logger,
    peer: str,
    send_timeout: float,
    certificate_by: dict[int, Any] | None = None,
    client: TLSClient | None = None,
) -> tuple[Any, TLSInfo] | None:
    """Establish TLS on an accepted connection (``io``: its plain ``Transport``; ``names``:
    the servers of its address; ``contexts``: ``edgeworker.tls.context.Contexts``;
    ``certificate_by``: server index -> its ``ssl_certificate_by`` function, called with
    (the SNI name or None, ``client``)). Returns (the ``TLSTransport``, the ``TLSInfo``), or
    None when the connection is to be closed: it closed, stayed silent past the handshake
    timeout, sent plain HTTP (answered 400 here) or failed the handshake (logged at info; a
    failing ``ssl_certificate_by`` at error). Each outcome is counted in ``STATS``.

    The first TLS record (the ClientHello) is read before TLS starts: its SNI name selects
    the server, whose context the connection starts with, so that everything of that server
    applies from the first message (a context switched to in the SNI callback keeps the
    client-certificate request of the first one: OpenSSL copies only the certificate). The
    SNI callback remains for a ClientHello this cannot read (split over several records)."""
    stats = STATS
    default = names.default
    deadline = time.monotonic() + default.server.ssl_handshake_timeout
    try:
        hello = _first_record(io, deadline)
    except TimeoutError:
        log.info("client %s timed out before the TLS handshake", peer)
        stats[FAILED_TIMEOUT] += 1
        return None
    except OSError:
        return None
    if not hello:
        return None
    if hello[0] != _TLS_HANDSHAKE:
        stats[FAILED_PLAIN] += 1
        _refuse_plain(io, send_timeout)
        return None
    by_server = contexts.by_server
    sni: list[str | None] = [client_hello_sni(hello)]
    route = names.lookup(sni[0]) if sni[0] else default
    ctx = by_server.get(route.index) or by_server[default.index]
    chosen_ctx = None
    if certificate_by:
        fn = certificate_by.get(route.index)
        if fn is not None:
            try:
                chosen_ctx = _certificate_by(fn, route, sni[0], client, contexts, deadline)
            except TimeoutError:
                log.info("client %s timed out in the TLS handshake (ssl_certificate_by)", peer)
                stats[FAILED_TIMEOUT] += 1
                return None
            except _CertificateByError as exc:
                log.error(
                    "%s.ssl_certificate_by failed for server name %s from %s: %s",
                    route.server.path,
                    sni[0],
                    peer,
                    exc,
                )
                stats[FAILED_OTHER] += 1
                return None
    from OpenSSL import SSL

    # (with a chosen certificate the connection still starts with the server's own context,
    # then switches: sessions and tickets stay those of the server's context, made in the
    # master and shared by every worker)
    sock = SSL.Connection(ctx, None)
    sock.set_accept_state()
    sock.bio_write(hello)
    if chosen_ctx is not None:
        sock.set_context(chosen_ctx)
    sock.route = route
    selected = route

    def choose(server_name: str | None) -> Any:
        chosen = names.lookup(server_name) if server_name else default
        sni[0] = server_name
        sock.route = chosen
        if chosen is selected and chosen_ctx is not None:
            return chosen_ctx
        return by_server.get(chosen.index)

    sock.choose = choose
    tio = TLSTransport(io.sock, io.watchdog, True, BIOTLS(sock, io.raw))
    try:
        tio.handshake(max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        log.info("client %s timed out in the TLS handshake", peer)
        stats[FAILED_TIMEOUT] += 1
        tio.close()
        return None
    except OSError as exc:  # edgeworker.io.TLSError included
        log.info("TLS handshake with %s failed: %s", peer, _reason(exc))
        stats[_failure(exc)] += 1
        tio.close()
        return None
    sock.choose = None
    info = TLSInfo(sock, sock.route, sni[0])
    if info.reason:
        # (nginx logs it with the request it refuses: here once, for the connection's
        # requests all get the same answer)
        log.info("%s, client: %s", info.reason, peer)
        if info.refusal == CERT_ERROR_BODY:
            stats[FAILED_CERT] += 1
    stats[HANDSHAKES] += 1
    if info.reused:
        stats[RESUMED] += 1
    proto = _VERSION_INDEX.get(sock.get_protocol_version_name())
    if proto is not None:
        stats[proto] += 1
    return tio, info


class _CertificateByError(Exception):
    """An ``ssl_certificate_by`` function raised or returned what is no certificate."""


def _certificate_by(
    fn: Any, route: Any, server_name: str | None, client: Any, contexts: Any, deadline: float
) -> Any:
    """Call ``fn`` in this greenlet (it may wait cooperatively) until ``deadline``; the
    context of the certificate it chose, or None for the server's configured one.
    ``TimeoutError`` past the deadline, ``_CertificateByError`` with the reason otherwise."""
    import gevent

    timer = gevent.Timeout(max(0.0, deadline - time.monotonic()))
    timer.start()
    try:
        chosen = fn(server_name, client)
    except gevent.Timeout as exc:
        if exc is not timer:
            raise _CertificateByError(f"raised {exc!r}") from None
        raise TimeoutError from None
    except Exception as exc:  # noqa: BLE001 - the user's code: fail this handshake only
        raise _CertificateByError(f"raised {type(exc).__name__}: {exc}") from None
    finally:
        timer.close()
    server = route.server
    if chosen is None:
        if not server.ssl_certificate:
            raise _CertificateByError("returned None and the server has no ssl_certificate")
        return None
    try:
        return contexts.for_certificate(route.index, server, chosen)
    except ValueError as exc:
        raise _CertificateByError(str(exc)) from None
    except OSError as exc:  # a file missing
        raise _CertificateByError(f"{chosen!r}: {_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - OpenSSL.SSL.Error: not PEM, a wrong key
        raise _CertificateByError(f"{chosen!r}: {openssl_reason(exc)}") from None


def _failure(exc: OSError) -> int:
    """The ``STATS`` index of a failed handshake's reason (OpenSSL's reason code): a
    protocol version refused, a client certificate refused, anything else."""
    reason = str(getattr(exc, "reason", "") or "")
    if reason in _PROTOCOL_REASONS:
        return FAILED_PROTOCOL
    if reason in _CLIENT_CERT_REASONS:
        return FAILED_CERT
    return FAILED_OTHER


#: OpenSSL's reasons for a protocol version refused (by us, or by the client: its alert)
_PROTOCOL_REASONS = frozenset(
    (
        "UNSUPPORTED_PROTOCOL",
        "VERSION_TOO_LOW",
        "VERSION_TOO_HIGH",
        "NO_PROTOCOLS_AVAILABLE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
    )
)


#: OpenSSL's reasons for a client certificate refused by the server
_CLIENT_CERT_REASONS = frozenset(
    (
        "CERTIFICATE_VERIFY_FAILED",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "NO_CERTIFICATE_RETURNED",
        "CERT_CB_ERROR",
    )
)


#: the largest TLS record (2^14 bytes of plaintext, plus what compression or a cipher may add)
_MAX_RECORD = 16384 + 2048
RECV_HELLO = 5 + _MAX_RECORD


def _first_record(io: Any, deadline: float) -> bytes:
    """The bytes of the client's first TLS record, read within ``deadline`` (``Expired``);
    less when the connection ends or the record claims more than a record holds (TLS then
    refuses it); what was read when it is not TLS (the first byte tells)."""
    raw = io.raw
    data = b""
    while True:
        io.wait_readable(max(0.0, deadline - time.monotonic()))
        try:
            chunk = raw.recv(RECV_HELLO)
        except BlockingIOError:
            continue
        if not chunk:
            return data
        data += chunk
        if data[0] != _TLS_HANDSHAKE:
            return data
        if len(data) >= 5:
            need = 5 + int.from_bytes(data[3:5], "big")
            if len(data) >= need or need > 5 + _MAX_RECORD:
                return data


def client_hello_sni(record: bytes) -> str | None:
    """The host name of the SNI extension of a ClientHello record, or None (no SNI, or not a
    whole ClientHello in this record)."""
    try:
        if record[0] != _TLS_HANDSHAKE or record[5] != 1:  # handshake record, ClientHello
            return None
        end = min(len(record), 5 + int.from_bytes(record[3:5], "big"))
        pos = 9 + 2 + 32  # record and handshake headers, client version, random
        pos += 1 + record[pos]  # session id
        pos += 2 + int.from_bytes(record[pos : pos + 2], "big")  # cipher suites
        pos += 1 + record[pos]  # compression methods
        ext_end = min(end, pos + 2 + int.from_bytes(record[pos : pos + 2], "big"))
        pos += 2
        while pos + 4 <= ext_end:
            kind = int.from_bytes(record[pos : pos + 2], "big")
            size = int.from_bytes(record[pos + 2 : pos + 4], "big")
            pos += 4
            if kind == 0:  # server_name: list length, then (type 0 = host_name, length, name)
                if pos + 5 > ext_end or record[pos + 2] != 0:
                    return None
                n = int.from_bytes(record[pos + 3 : pos + 5], "big")
                name = record[pos + 5 : pos + 5 + n]
                if len(name) != n or pos + 5 + n > ext_end:
                    return None
                return name.decode("ascii").lower().rstrip(".") or None
            pos += size
    except (IndexError, UnicodeDecodeError):
        return None
    return None


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else (exc.strerror or str(exc) or type(exc).__name__)


def _refuse_plain(io: Any, send_timeout: float) -> None:
    """Answer plain HTTP on a TLS port: 400, nginx's text, close. The request already sent
    is read first (what is there), so that closing does not reset the connection before the
    client read the answer."""
    try:
        io.raw.recv(65536)
    except OSError:
        pass
    try:
        io.sendall(plain_http_response(), send_timeout)
        io.raw.shutdown(socket.SHUT_WR)
    except OSError:
        pass
