"""HTTP/2 configuration: the ``http2`` listen flag (an address's, as nginx's listen options),
``http2_max_concurrent_streams`` in ``[http]`` and ``[[server]]``, their errors; the HPACK
bound derived from the ``[http]`` head limits."""

from __future__ import annotations

import pytest

from edgeworker.config import loads
from edgeworker.http2.schema import http2_addresses
from edgeworker.server_h2 import header_list_size

from .test_tls_config import CERT, CFG, errors_of, server


def test_the_http2_flag_with_ssl_and_in_cleartext():
    cfg = loads(
        server('listen = ["127.0.0.1:8443 ssl http2", "127.0.0.1:8080 http2", "8081"]\n' + CERT),
        CFG,
    )
    s = cfg.server[0]
    assert s.listen == ("127.0.0.1:8443", "127.0.0.1:8080", "0.0.0.0:8081")
    assert s.listen_ssl == ("127.0.0.1:8443",)
    assert s.listen_http2 == ("127.0.0.1:8443", "127.0.0.1:8080")
    assert s.http2_max_concurrent_streams == 128
    assert http2_addresses(cfg.server) == {("127.0.0.1", 8443), ("127.0.0.1", 8080)}


def test_without_the_flag_nothing_is_http2():
    cfg = loads(server('listen = ["127.0.0.1:8443 ssl"]\n' + CERT), CFG)
    assert cfg.server[0].listen_http2 == ()
    assert http2_addresses(cfg.server) == set()


def test_the_flag_belongs_to_the_address_for_every_server_on_it():
    cfg = loads(
        server('listen = ["127.0.0.1:8080 http2"]\nserver_name = "a"')
        + server('listen = ["127.0.0.1:8080", "127.0.0.1:9090"]\nserver_name = "b"'),
        CFG,
    )
    assert cfg.server[1].listen_http2 == ("127.0.0.1:8080",)


def test_max_concurrent_streams_from_http_and_per_server():
    cfg = loads(
        "[http]\nhttp2_max_concurrent_streams = 16\n"
        + server('listen = ["127.0.0.1:8080 http2"]')
        + server('listen = ["127.0.0.1:8081 http2"]\nhttp2_max_concurrent_streams = 4'),
        CFG,
    )
    assert [s.http2_max_concurrent_streams for s in cfg.server] == [16, 4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            server('listen = ["127.0.0.1:8080 http2"]\nhttp2_max_concurrent_streams = 0'),
            "server[0].http2_max_concurrent_streams: ",
        ),
        (
            '[http]\nhttp2_max_concurrent_streams = "many"\n' + server('listen = ["8080"]'),
            "http.http2_max_concurrent_streams: ",
        ),
        (
            server('listen = ["127.0.0.1:8080 quic"]'),
            'server[0].listen[0]: unknown listen flag "quic" (known: ssl, http2)',
        ),
        (
            server('listen = ["127.0.0.1:8080 http3"]'),
            'server[0].listen[0]: unknown listen flag "http3" (did you mean "http2"?)',
        ),
        (
            server('listen = ["127.0.0.1:8443 ssl http2", "127.0.0.1:9443 ssl"]\n' + CERT),
            "server[0].listen: 127.0.0.1:9443 is ssl without http2 while 127.0.0.1:8443 has "
            "http2: a server's TLS addresses all offer HTTP/2 or none do",
        ),
    ],
)
def test_errors_name_the_key(text, message):
    errors = errors_of(text)
    assert any(e.startswith(message) for e in errors), errors


def test_the_header_list_bound_follows_the_head_limits():
    cfg = loads(
        '[http]\nmax_request_line = "4k"\nmax_header_size = "16k"\nmax_headers = 50\n'
        + server('listen = ["127.0.0.1:8080 http2"]'),
        CFG,
    )
    assert header_list_size(cfg.http) == 4096 + 16384 + 32 * 54
