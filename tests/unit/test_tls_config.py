"""TLS configuration: the ``ssl`` listen flag, the ``ssl_*`` keys of ``[http]`` and
``[[server]]``, their inheritance and every error message; the certificate checks of
``edgeworker.tls.context`` on files made here."""

from __future__ import annotations

import ssl

import pytest
from OpenSSL import SSL

from edgeworker.config import loads
from edgeworker.errors import ConfigError
from edgeworker.tls import context, schema
from edgeworker.tls.connection import client_hello_sni

from ..tls_certs import CertFactory

CFG = "/etc/edgeworker/edgeworker.toml"
LOC = '\n  [[server.location]]\n  match = "/"\n  return = { status = 204 }\n'
CERT = 'ssl_certificate = "a.crt"\nssl_certificate_key = "a.key"\n'


def server(body: str) -> str:
    return "[[server]]\n" + body + LOC


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, CFG)
    return info.value.errors


def test_the_ssl_flag_and_the_defaults():
    cfg = loads(server('listen = ["127.0.0.1:8443 ssl", "8080"]\n' + CERT), CFG)
    s = cfg.server[0]
    assert s.listen == ("127.0.0.1:8443", "0.0.0.0:8080")
    assert s.listen_ssl == ("127.0.0.1:8443",)
    assert s.ssl_certificate == ("/etc/edgeworker/a.crt",)
    assert s.ssl_certificate_key == ("/etc/edgeworker/a.key",)
    assert s.ssl_protocols == ("TLSv1.2", "TLSv1.3")
    assert s.ssl_ciphers == schema.INTERMEDIATE_CIPHERS
    assert s.ssl_prefer_server_ciphers is False
    assert s.ssl_session_tickets is True
    assert s.ssl_session_timeout == 300.0  # nginx's 5m
    assert s.ssl_verify_client == "off" and s.ssl_verify_depth == 1
    assert s.ssl_handshake_timeout == 60.0  # the client_header_timeout
    assert cfg.listen_addresses() == [("127.0.0.1", 8443), ("0.0.0.0", 8080)]
    assert schema.tls_addresses(cfg.server) == {("127.0.0.1", 8443)}


def test_servers_inherit_the_http_keys_and_may_override_them():
    text = (
        '[http]\nclient_header_timeout = "7s"\nssl_certificate = "http.crt"\n'
        'ssl_certificate_key = "http.key"\nssl_protocols = ["TLSv1.3"]\n'
        + server('listen = ["1.2.3.4:443 ssl"]')
        + server(
            'listen = ["1.2.3.5:443 ssl"]\nssl_protocols = "TLSv1.2"\n'
            'ssl_handshake_timeout = "3s"\n' + CERT
        )
    )
    a, b = loads(text, CFG).server
    assert a.ssl_certificate == ("/etc/edgeworker/http.crt",)
    assert a.ssl_protocols == ("TLSv1.3",) and a.ssl_handshake_timeout == 7.0
    assert b.ssl_certificate == ("/etc/edgeworker/a.crt",)
    assert b.ssl_protocols == ("TLSv1.2",) and b.ssl_handshake_timeout == 3.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'listen = ["1.2.3.4:443 tls"]',
            'server[0].listen[0]: unknown listen flag "tls" (known: ssl, http2)',
        ),
        (
            'listen = ["1.2.3.4:443 ssl"]',
            "server[0]: a server listening with ssl needs ssl_certificate and ssl_certificate_key",
        ),
        (
            'listen = ["1.2.3.4:443 ssl"]\nssl_certificate = ["a.crt", "b.crt"]\n'
            'ssl_certificate_key = "a.key"',
            "server[0].ssl_certificate_key: 1 key(s) for 2 certificate(s): give one key per "
            "certificate, in the same order",
        ),
        (
            'ssl_protocols = ["TLSv1.1", "TLSv1.2"]',
            'server[0].ssl_protocols: "TLSv1.1" is refused (insecure): use TLSv1.2 and TLSv1.3',
        ),
        (
            'ssl_protocols = ["TLSv1"]',
            'server[0].ssl_protocols: "TLSv1" is refused (insecure): use TLSv1.2 and TLSv1.3',
        ),
        (
            'ssl_verify_client = "on"',
            'server[0].ssl_verify_client: "on" needs ssl_client_certificate',
        ),
        (
            'ssl_verify_client = "yes"',
            'server[0].ssl_verify_client: invalid value "yes": expected one of off, on, '
            "optional, optional_no_ca",
        ),
        (
            'ssl_verify_client = "optional"',
            'server[0].ssl_verify_client: "optional" needs ssl_client_certificate',
        ),
        (
            'ssl_session_timeout = "0s"',
            "server[0].ssl_session_timeout: must be at least 1s",
        ),
    ],
)
def test_errors_name_the_config_path(body, message):
    errors = errors_of(server(body))
    assert any(e.startswith(message) for e in errors), errors


def test_optional_no_ca_needs_no_ca_and_session_timeout_takes_any_duration():
    cfg = loads(
        server(
            'listen = ["127.0.0.1:443 ssl"]\n' + CERT + 'ssl_verify_client = "optional_no_ca"\n'
            'ssl_session_timeout = "1d"\nssl_verify_depth = 3'
        ),
        CFG,
    )
    s = cfg.server[0]
    assert s.ssl_verify_client == "optional_no_ca" and s.ssl_client_certificate is None
    assert s.ssl_session_timeout == 86400.0 and s.ssl_verify_depth == 3


def test_ssl_certificate_by_may_stand_for_the_certificate():
    cfg = loads(
        '[http]\nssl_certificate_by = "certs:pick"\n'
        + server('listen = ["127.0.0.1:443 ssl"]')
        + server('listen = ["127.0.0.1:444 ssl"]\nssl_certificate_by = "other:pick"\n' + CERT),
        CFG,
    )
    a, b = cfg.server
    assert a.ssl_certificate_by == "certs:pick" and a.ssl_certificate == ()
    assert b.ssl_certificate_by == "other:pick"
    errors = errors_of(server('listen = ["127.0.0.1:443 ssl"]\nssl_certificate_by = "no spec"'))
    assert errors == [
        'server[0].ssl_certificate_by: invalid handler "no spec": expected "module:function"'
    ], errors


def test_a_certificate_object_checks_its_files_once(tmp_path):
    ca = CertFactory(tmp_path).ca()
    good = ca.server(["a.example"])
    other = ca.server(["b.example"])
    cert = context.Certificate(good.cert, good.key)
    assert cert.key()[:2] == (str(good.cert), str(good.key))
    with pytest.raises(ValueError, match="does not match the certificate"):
        context.Certificate(good.cert, other.key)
    with pytest.raises(ValueError, match="cannot read"):
        context.Certificate(tmp_path / "missing.crt", good.key)
    with pytest.raises(ValueError, match=r"returned str 'a.crt': expected None, \(cert path"):
        context.Certificate.of("a.crt")


def test_chosen_certificate_contexts_are_cached_by_paths_and_mtimes(tmp_path, monkeypatch):
    ca = CertFactory(tmp_path).ca()
    good = ca.server(["a.example"])
    srv = loads(server('listen = ["127.0.0.1:443 ssl"]\n' + CERT), CFG).server[0]
    contexts = context.Contexts()
    first = contexts.for_certificate(0, srv, (str(good.cert), str(good.key)))
    assert contexts.for_certificate(0, srv, (good.cert, good.key)) is first
    assert contexts.for_certificate(1, srv, (good.cert, good.key)) is not first  # per server
    import os

    st = os.stat(good.cert)
    os.utime(good.cert, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert contexts.for_certificate(0, srv, (good.cert, good.key)) is not first
    monkeypatch.setattr(context, "CERTIFICATE_CACHE_SIZE", 2)
    for i in range(5):
        contexts.for_certificate(10 + i, srv, (good.cert, good.key))
    assert len(contexts.chosen) == 2


def test_one_address_is_either_tls_or_plain():
    errors = errors_of(
        server('listen = ["127.0.0.1:443 ssl"]\n' + CERT)
        + server('listen = ["127.0.0.1:443"]\nserver_name = "b"')
    )
    assert errors == [
        "server[0].listen: 127.0.0.1:443 is ssl in server[0] but plain in server[1]: one "
        "address and port is either TLS or plain HTTP (a wildcard address shares its socket "
        "with the specific addresses of its port)"
    ]
    # a wildcard shares its socket with the specific addresses of its port
    errors = errors_of(
        server('listen = ["443 ssl"]\n' + CERT)
        + server('listen = ["127.0.0.1:443"]\nserver_name = "b"')
    )
    assert errors and "is ssl in server[0] but plain in server[1]" in errors[0]
    # other ports are independent
    loads(server('listen = ["443 ssl"]\n' + CERT) + server('listen = ["127.0.0.1:80"]'), CFG)


def _cfg(tmp_path, body: str):
    path = tmp_path / "edgeworker.toml"
    return loads(server('listen = ["127.0.0.1:8443 ssl"]\n' + body), str(path))


def test_build_makes_one_context_per_tls_server(tmp_path):
    certs = CertFactory(tmp_path)
    ca = certs.ca()
    ec_cert = ca.server(["a.example"], file="ec")
    rsa_cert = ca.server(["a.example"], file="rsa", kind="rsa")
    cfg = _cfg(
        tmp_path,
        f'ssl_certificate = ["{ec_cert.cert}", "{rsa_cert.cert}"]\n'
        f'ssl_certificate_key = ["{ec_cert.key}", "{rsa_cert.key}"]\n'
        "ssl_prefer_server_ciphers = true\nssl_session_tickets = false\n"
        'ssl_protocols = ["TLSv1.2"]',
    )
    built = context.build(cfg)
    assert built.warnings == []
    ctx = built.by_server[0]
    options = ctx.set_options(0)  # (adds nothing: returns the options)
    assert options & SSL.OP_NO_COMPRESSION and options & SSL.OP_NO_RENEGOTIATION
    assert options & SSL.OP_CIPHER_SERVER_PREFERENCE and options & SSL.OP_NO_TICKET
    assert ctx.get_timeout() == 300  # nginx's default ssl_session_timeout
    assert ctx.get_verify_mode() == SSL.VERIFY_NONE
    # idle connections give their buffers back (pyOpenSSL's contexts keep them by default)
    assert ctx.set_mode(0) & SSL.MODE_RELEASE_BUFFERS


def test_a_context_verifying_clients_asks_and_lets_the_handshake_complete(tmp_path):
    certs = CertFactory(tmp_path)
    ca = certs.ca()
    a = ca.server(["a.example"])
    cfg = _cfg(
        tmp_path,
        f'ssl_certificate = "{a.cert}"\nssl_certificate_key = "{a.key}"\n'
        f'ssl_client_certificate = "{ca.path}"\nssl_verify_client = "on"\n'
        'ssl_verify_depth = 3\nssl_session_timeout = "90s"',
    )
    ctx = context.build(cfg).by_server[0]
    # a certificate asked for, not required by the handshake (nginx answers 400 instead)
    assert ctx.get_verify_mode() == SSL.VERIFY_PEER
    assert ctx.get_verify_depth() == 3 and ctx.get_timeout() == 90


def test_build_reports_file_problems_and_warns_of_dates(tmp_path):
    certs = CertFactory(tmp_path)
    ca = certs.ca()
    good = ca.server(["good.example"])
    old = ca.server(["old.example"], days=(-30, -1))
    future = ca.server(["new.example"], days=(2, 30))
    stray = certs.stray_key()
    (tmp_path / "junk.pem").write_text("junk\n")

    def problems(body: str) -> list[str]:
        with pytest.raises(ConfigError) as info:
            context.build(_cfg(tmp_path, body))
        return info.value.errors

    assert problems(f'ssl_certificate = "nope.crt"\nssl_certificate_key = "{good.key}"') == [
        f'server[0].ssl_certificate: cannot read "{tmp_path}/nope.crt": No such file or directory'
    ]
    assert problems(f'ssl_certificate = "{good.cert}"\nssl_certificate_key = "{stray}"') == [
        f'server[0].ssl_certificate_key: "{stray}" does not match the certificate "{good.cert}"'
    ]
    assert problems(f'ssl_certificate = "junk.pem"\nssl_certificate_key = "{good.key}"') == [
        f'server[0].ssl_certificate: "{tmp_path}/junk.pem" is not a PEM certificate'
    ]
    assert problems(f'ssl_certificate = "{good.cert}"\nssl_certificate_key = "junk.pem"') == [
        f'server[0].ssl_certificate_key: "{tmp_path}/junk.pem" is not a PEM private key'
    ]
    built = context.build(
        _cfg(tmp_path, f'ssl_certificate = "{old.cert}"\nssl_certificate_key = "{old.key}"')
    )
    assert len(built.warnings) == 1 and "expired on" in built.warnings[0]
    built = context.build(
        _cfg(tmp_path, f'ssl_certificate = "{future.cert}"\nssl_certificate_key = "{future.key}"')
    )
    assert len(built.warnings) == 1 and "is not valid before" in built.warnings[0]


def _client_hello(server_hostname: str | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_the_sni_name_of_a_client_hello():
    assert client_hello_sni(_client_hello("WWW.Example.COM")) == "www.example.com"
    assert client_hello_sni(_client_hello(None)) is None
    hello = _client_hello("a.example")
    assert client_hello_sni(hello[:60]) is None  # cut before the extensions
    assert client_hello_sni(b"\x16\x03\x01\x00\x05\x01\xff\xff\xff\xff") is None
    assert client_hello_sni(b"GET / HTTP/1.1\r\n\r\n") is None


def test_a_worker_imports_cryptography_only_for_client_certificates():
    """The request path (TLS included) does not import ``cryptography`` (about 10 MiB of every
    worker's memory): certinfo imports it when a client certificate's variable is read."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import edgeworker.worker_process, edgeworker.server, edgeworker.phases\n"
        "import edgeworker.tls.connection\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_openssl_handles_pyopenssl_does_not_wrap(tmp_path, monkeypatch):
    from edgeworker.tls import ossl

    ossl.check()  # the installed pyOpenSSL has them
    assert ossl.verify_error(10) == "certificate has expired"
    assert ossl.verify_error(21) == "unable to verify the first certificate"
    # a pyOpenSSL whose Connection lost its OpenSSL handle: a clear error, at check time
    monkeypatch.delattr(SSL.Connection, "_ssl", raising=False)
    real_init = SSL.Connection.__init__

    def init_without_handle(self, *args, **kw):
        real_init(self, *args, **kw)
        self.__dict__.pop("_ssl", None)

    monkeypatch.setattr(SSL.Connection, "__init__", init_without_handle)
    with pytest.raises(RuntimeError, match=r"lacks OpenSSL\.SSL\.Connection\._ssl"):
        ossl.check()
