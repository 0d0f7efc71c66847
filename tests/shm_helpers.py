"""Helpers for the shm tests: unique zone names, cleanup, a controllable clock."""

from __future__ import annotations

import os
import uuid

import pytest

import shm.dict as shm_dict
from shm import SharedDict


def zone_name(tag: str = "t") -> str:
    """A zone name no other test (or test run) uses."""
    return f"test-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class FakeClock:
    """Replaces the monotonic clock of shm.dict; ``advance(seconds)`` moves it."""

    def __init__(self) -> None:
        self.ns = 1_000_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(shm_dict, "_now_ns", c)
    return c


@pytest.fixture
def zones():
    """``zones(size)`` creates a real named zone; all are closed and unlinked afterwards."""
    made: list[SharedDict] = []

    def make(size="1m", tag="t") -> SharedDict:
        d = SharedDict.create(zone_name(tag), size)
        made.append(d)
        return d

    yield make
    for d in made:
        d.unlink()
        d.close()


@pytest.fixture(params=["shm", "buffer"])
def mkdict(request, zones):
    """``mkdict(size)``: a dict over a real shm zone, or over a bytearray with a no-op lock."""

    def make(size="1m") -> SharedDict:
        if request.param == "shm":
            return zones(size)
        from shm import parse_size

        return SharedDict.from_buffer(bytearray(parse_size(size)))

    return make
