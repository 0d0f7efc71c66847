"""docs/configuration-reference.md is generated from the configuration schema
(scripts/gen_config_reference.py): it must be current, and name every key the reference config
(config/edgeworker.toml) writes."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration-reference.md"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", ROOT / "scripts" / "gen_config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()


def test_the_page_is_current():
    assert PAGE.read_text(encoding="utf-8") == gen.render(), (
        "docs/configuration-reference.md is stale: run "
        ".venv/bin/python scripts/gen_config_reference.py"
    )


def test_every_key_of_the_reference_config_is_in_it():
    # tables whose keys are names the user chooses: header names, zone names, and NAME of
    # [upstream.NAME] / [redis.NAME] (whose own keys are checked)
    free = {"add_header", "proxy_set_header", "claims_to_headers", "shared_dict"}
    named = {"upstream", "redis"}

    def walk(node: object, path: str):
        if isinstance(node, list):
            for item in node:
                yield from walk(item, path)
        elif isinstance(node, dict):
            for k, v in node.items():
                key_path = f"{path}.{k}" if path else k
                if path in named:  # [upstream.NAME]: NAME is not a key
                    yield from walk(v, key_path)
                    continue
                yield key_path, k
                if k not in free:
                    yield from walk(v, key_path)

    doc = tomllib.loads((ROOT / "config" / "edgeworker.toml").read_text(encoding="utf-8"))
    paths = list(walk(doc, ""))
    assert ("main.workers", "workers") in paths and any(k == "servers" for _p, k in paths)
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", PAGE.read_text(), flags=re.M))
    missing = sorted(path for path, key in paths if key not in documented)
    assert not missing, f"keys of config/edgeworker.toml the reference lacks: {missing}"


def test_keys_tables_are_read_from_docstrings():
    doc = """Summary.

    Keys:
        alpha: the first
            key, continued
        beta_2: the ``second``

    After the table.
    """
    assert gen.key_table(doc) == {"alpha": "the first key, continued", "beta_2": "the ``second``"}
    assert gen.key_table("No table here.") == {}
    with pytest.raises(gen.SchemaError, match="malformed"):
        gen.key_table("x\n\n    Keys:\n        Not a key line\n")


def test_a_key_without_description_stops_the_page(monkeypatch):
    from edgeworker import config

    doc = config.Main.__doc__
    monkeypatch.setattr(config.Main, "__doc__", re.sub(r"\n\s+workers: [^\n]*", "", doc))
    with pytest.raises(gen.SchemaError, match=r"Main\.workers: no description"):
        gen.render()
    monkeypatch.setattr(config.Main, "__doc__", doc.replace("Keys:\n", "Keys:\n        nope: x\n"))
    with pytest.raises(gen.SchemaError, match="describes 'nope'"):
        gen.render()
