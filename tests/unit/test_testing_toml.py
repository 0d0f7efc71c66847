"""The TOML writer behind edgeworker.testing's config copies: what it writes reads back the same."""

from __future__ import annotations

import datetime
import math
import tomllib
from pathlib import Path

import pytest

from edgeworker.testing import _dump_toml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "config" / "examples").glob("*.toml")) + [
    ROOT / "edgeworker" / "default" / "edgeworker.toml"
]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_round_trip(path):
    data = tomllib.loads(path.read_text())
    assert tomllib.loads(_dump_toml(data)) == data


def test_awkward_values_round_trip():
    data = {
        "main": {"python_path": ["."], "workers": 3, "debug": False},
        "quoted key.with dot": {"": "empty key", "ünï": "ünïcödé 😀"},
        "strings": ['quote " backslash \\ tab \t newline \n', "\x00\x1f\x7f", "$host{x}"],
        "numbers": [0, -7, 2**62, 0.5, -1e-300, math.inf, -math.inf],
        "when": [
            datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            datetime.datetime(2026, 1, 2, 3, 4, 5, 123000),
            datetime.date(2026, 1, 2),
            datetime.time(3, 4, 5),
        ],
        "server": [
            {
                "listen": ["127.0.0.1:1 ssl"],
                "location": [{"match": "/", "return": {"status": 200}}],
            },
            {"listen": [], "nested": [[1, 2], [{"a": []}]]},
        ],
    }
    assert tomllib.loads(_dump_toml(data)) == data
    assert math.isnan(tomllib.loads(_dump_toml({"x": math.nan}))["x"])


def test_unwritable_values_are_refused():
    with pytest.raises(TypeError, match="cannot write bytes as TOML"):
        _dump_toml({"x": b"raw"})
