"""Shared fixtures: `server` starts real edgeworker processes from a config string."""

from __future__ import annotations

import pytest

from .support import Server


@pytest.fixture
def server(tmp_path):
    """``server(toml, files={...}, workers=1)`` → a started ``Server``; stopped after the test."""
    started: list[Server] = []

    def start(toml: str, files: dict[str, str] | None = None, **kw) -> Server:
        srv = Server(tmp_path / f"s{len(started)}", toml, files, **kw)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()
