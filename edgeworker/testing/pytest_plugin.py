"""The pytest plugin of edgeworker (loaded through the ``pytest11`` entry point).

The fixture ``edgeworker_server`` is a factory: ``edgeworker_server(config, workers=1, env=None)``
starts an :class:`edgeworker.testing.Server` on the config file and returns it once every worker
accepts. Every server it started is stopped after the test; when the test fails, the report shows
each server's error log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from . import Server

#: the servers a test started (``item.stash[SERVERS]``): their error logs go into its report
#: when it fails
SERVERS = pytest.StashKey[list[Server]]()


@contextmanager
def serving(request: pytest.FixtureRequest) -> Iterator[Callable[[Server], Server]]:
    """For a fixture of your own: yields ``start(server)``, which starts a ``Server`` and puts it
    into the test's failure report; every server started so is stopped when the block ends."""
    started: list[Server] = []

    def start(srv: Server) -> Server:
        started.append(srv)
        request.node.stash.setdefault(SERVERS, []).append(srv)
        return srv.start()

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def edgeworker_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """``edgeworker_server(config, workers=1, env=None)`` → a started ``Server``."""

    def start(
        config: str | os.PathLike[str], workers: int = 1, env: dict[str, str] | None = None
    ) -> Server:
        workdir = tmp_path_factory.mktemp("edgeworker")
        return track(Server(config, workers, env, workdir=workdir))

    with serving(request) as track:
        yield start


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed:
        for srv in item.stash.get(SERVERS, []):
            where = ", ".join(srv.urls) or str(srv.config)
            report.sections.append((f"edgeworker error log ({where})", srv.error_log()))
    return report
