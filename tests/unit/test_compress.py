"""Compression: Accept-Encoding parsing, the config keys (inheritance from [http] to server to
location, defaults, errors with their paths), `edgeworker check` without the brotli package."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from edgeworker.compress import accepted, parse_accept_encoding
from edgeworker.config import loads
from edgeworker.errors import ConfigError

CFG = "/etc/edgeworker/edgeworker.toml"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gzip", {"gzip": 1.0}),
        ("gzip, deflate, br", {"gzip": 1.0, "deflate": 1.0, "br": 1.0}),
        ("GZIP;Q=0.5 ,  br ; q=1", {"gzip": 0.5, "br": 1.0}),
        ("gzip;q=0", {"gzip": 0.0}),
        ("gzip;q=1.000", {"gzip": 1.0}),
        ("gzip;q=0.001", {"gzip": 0.001}),
        ("gzip;q=1.5", {"gzip": 0.0}),  # malformed q: refused
        ("gzip;q=abc", {"gzip": 0.0}),
        ("gzip;q=0.0001", {"gzip": 0.0}),
        ("gzip;level=1;q=0.3", {"gzip": 0.3}),
        ("gzip;q=0, gzip", {"gzip": 0.0}),  # the first wins
        (" , ,", {}),
        ("", {}),
    ],
)
def test_parse_accept_encoding(value, expected):
    assert parse_accept_encoding(value) == expected


@pytest.mark.parametrize(
    ("value", "gz", "br"),
    [
        (None, 0.0, 0.0),
        ("", 0.0, 0.0),
        ("identity", 0.0, 0.0),
        ("gzip", 1.0, 0.0),
        ("x-gzip", 1.0, 0.0),
        ("br;q=0.4", 0.0, 0.4),
        ("*", 1.0, 1.0),
        ("*;q=0.2, gzip", 1.0, 0.2),
        ("gzip;q=0, *", 0.0, 1.0),
        ("*;q=0", 0.0, 0.0),
    ],
)
def test_accepted(value, gz, br):
    assert accepted(value) == (gz, br)


def load(text: str):
    return loads(textwrap.dedent(text), CFG)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(text)
    return e.value.errors


def test_defaults_are_nginx_but_vary():
    loc = (
        load("""
        [[server]]
        [[server.location]]
        match = "/"
        content = "app:hello"
    """)
        .server[0]
        .location[0]
    )
    assert loc.gzip is False and loc.brotli is False
    assert loc.gzip_types == ("text/html",)
    assert loc.gzip_min_length == 20 and loc.gzip_comp_level == 1
    assert loc.gzip_proxied == ("off",) and loc.gzip_http_version == "1.1"
    assert loc.gzip_vary is True  # nginx: off
    assert loc.brotli_comp_level == 4 and loc.brotli_min_length == 20


def test_inner_scope_wins():
    cfg = load("""
        [http]
        gzip = true
        gzip_comp_level = 5
        gzip_types = ["application/json"]

        [[server]]
        listen = "127.0.0.1:8080"
        gzip_comp_level = 6
        gzip_min_length = "1k"

        [[server.location]]
        match = "/a"
        content = "app:hello"

        [[server.location]]
        match = "/b"
        content = "app:hello"
        gzip = false
        gzip_comp_level = 9

        [[server]]
        listen = "127.0.0.1:8081"

        [[server.location]]
        match = "/"
        content = "app:hello"
    """)
    a, b = cfg.server[0].location
    assert (a.gzip, a.gzip_comp_level, a.gzip_min_length) == (True, 6, 1024)
    assert a.gzip_types == ("application/json",)
    assert (b.gzip, b.gzip_comp_level) == (False, 9)
    (c,) = cfg.server[1].location
    assert (c.gzip, c.gzip_comp_level, c.gzip_min_length) == (True, 5, 20)
    assert cfg.http.gzip_comp_level == 5 and cfg.server[1].gzip_comp_level is None


def test_bad_values_name_their_path():
    found = errors("""
        [http]
        gzip_comp_level = 10
        gzip_types = ["text/plain", "texthtml"]

        [[server]]
        gzip_proxied = ["expired", "sometimes"]
        brotli_comp_level = 12

        [[server.location]]
        match = "/"
        content = "app:hello"
        gzip_http_version = "2.0"
        gzip_disable = ["("]
        brotli_types = "a b/c"
        gzip_min_length = "lots"
    """)
    text = "\n".join(found)
    assert "http.gzip_comp_level: invalid level 10: must be 1-9" in text
    assert 'http.gzip_types[1]: invalid MIME type "texthtml"' in text
    assert 'server[0].gzip_proxied[1]: unknown value "sometimes"' in text
    assert "server[0].brotli_comp_level: invalid level 12: must be 0-11" in text
    # one bad key hides the location's other checks (it is not decoded): its own run
    assert "server[0].location[0].gzip_min_length" in text
    found = errors("""
        [[server]]
        [[server.location]]
        match = "/"
        content = "app:hello"
        gzip_http_version = "2.0"
        gzip_disable = ["("]
        brotli_types = "a b/c"
        gzip = "yes"
    """)
    assert found == ["server[0].location[0].gzip: expected bool | null, got str"]
    found = errors("""
        [[server]]
        [[server.location]]
        match = "/"
        content = "app:hello"
        gzip_http_version = "2.0"
        gzip_disable = ["("]
        brotli_types = "a b/c"
    """)
    text = "\n".join(found)
    assert 'server[0].location[0].gzip_http_version: invalid version "2.0"' in text
    assert 'server[0].location[0].gzip_disable[0]: invalid regex "("' in text
    assert 'server[0].location[0].brotli_types[0]: invalid MIME type "a b/c"' in text


def test_check_fails_for_brotli_without_the_package(tmp_path):
    conf = tmp_path / "edgeworker.toml"
    conf.write_text(
        textwrap.dedent("""
        [[server]]
        listen = "127.0.0.1:8080"
        brotli = true

        [[server.location]]
        match = "/"
        return = { status = 200, body = "ok" }
    """)
    )
    # the package made unimportable in the child (as if not installed)
    code = (
        "import sys; sys.modules['brotli'] = None; "
        "from edgeworker.cli import main; sys.exit(main(['check', '-c', sys.argv[1]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(conf)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "server[0].brotli: the brotli package is not installed" in out
    assert "edgeworker[brotli]" in out
    # with the package (when installed here), the same config passes
    pytest.importorskip("brotli")
    ok = subprocess.run(
        [sys.executable, "-m", "edgeworker", "check", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
