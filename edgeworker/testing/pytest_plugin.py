"""The pytest plugin of edgeworker (loaded through the ``pytest11`` entry point).

The fixture ``edgeworker_server`` is a factory: ``edgeworker_server(config, workers=1, env=None)``
starts an :class:`edgeworker.testing.Server` on the config file and returns it once every worker
accepts. Every server it started is stopped after the test; when the test fails, the report shows
each server's error log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from . import Server

#: the servers a test started (``item.stash[SERVERS]``): their error logs go into its report
#: when it fails. A fixture of your own that starts ``Server`` objects may add them here too.
SERVERS = pytest.StashKey[list[Server]]()


@pytest.fixture
def edgeworker_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """``edgeworker_server(config, workers=1, env=None)`` → a started ``Server``."""
    started: list[Server] = []

    def start(
        config: str | os.PathLike[str], workers: int = 1, env: dict[str, str] | None = None
    ) -> Server:
        srv = Server(config, workers, env, workdir=tmp_path_factory.mktemp("edgeworker"))
        started.append(srv)
        request.node.stash.setdefault(SERVERS, []).append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed:
        for srv in item.stash.get(SERVERS, []):
            where = ", ".join(srv.urls) or str(srv.config)
            report.sections.append((f"edgeworker error log ({where})", srv.error_log()))
    return report
