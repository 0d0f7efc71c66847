"""Shared fixtures for tests/unit and tests/integration.

``server`` starts real edgeworker processes from a config string; ``redis_server`` is a
redis-server of its own per test; ``zones``, ``mkdict`` and ``clock`` give shared-memory zones and
a controllable shm clock; ``certs`` makes TLS certificates.
"""

from __future__ import annotations

import itertools

import pytest

from edgeworker.testing.pytest_plugin import serving

from .redis_server import redis_server  # noqa: F401 - a fixture
from .shm_helpers import clock, mkdict, zones  # noqa: F401 - fixtures
from .support import Server
from .tls_certs import CertFactory

# pytester: the pytest plugin of edgeworker.testing is tested in a project of its own
pytest_plugins = ("pytester",)


@pytest.fixture
def server(request, tmp_path):
    """``server(toml, files={...}, workers=1)`` → a started ``Server``; stopped after the test,
    its error log in the report when the test fails (as the ``edgeworker_server`` fixture)."""
    count = itertools.count()

    def start(toml: str, files: dict[str, str] | None = None, **kw) -> Server:
        return track(Server(tmp_path / f"s{next(count)}", toml, files, **kw))

    with serving(request) as track:
        yield start


@pytest.fixture
def certs(tmp_path):
    """A ``CertFactory`` (tests/tls_certs.py): CAs, server and client certificates made now."""
    return CertFactory(tmp_path / "certs")
