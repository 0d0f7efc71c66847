"""``edgeworker.shared``: the registry of the running server's shared-dict zones."""

from __future__ import annotations

import pytest

from edgeworker.runtime import SharedDicts


def test_zones_by_item_and_by_attribute():
    shared = SharedDicts()
    a, b = object(), object()
    shared._install({"counters": a, "cache": b})
    assert shared["counters"] is a and shared.cache is b
    assert "counters" in shared and "nope" not in shared
    assert sorted(shared) == ["cache", "counters"] and len(shared) == 2
    assert dict(shared.items()) == {"counters": a, "cache": b}
    shared._install({"other": a})  # a reload replaces the set
    assert list(shared) == ["other"]


def test_unknown_names_say_what_exists():
    shared = SharedDicts()
    shared._install({"counters": object()})
    with pytest.raises(KeyError, match=r"no shared dict 'nope' \(configured: counters\)"):
        shared["nope"]
    with pytest.raises(AttributeError, match="no shared dict 'nope'"):
        shared.nope  # noqa: B018
    with pytest.raises(AttributeError):
        shared._private  # noqa: B018
    assert shared.get("nope") is None  # the dict method, as documented
    # a zone named like a dict method is found first by attribute access
    values = object()
    shared._install({"values": values, "counters": object()})
    assert shared.values is values and shared["values"] is values
    assert callable(shared.keys) and sorted(shared.keys()) == ["counters", "values"]
    empty = SharedDicts()
    with pytest.raises(KeyError, match=r"configured: none"):
        empty["x"]


def test_handlers_cannot_change_the_registry():
    shared = SharedDicts()
    shared._install({"counters": object()})
    for change in (lambda: shared.__setitem__("x", 1), lambda: shared.__delitem__("counters"),
                   shared.clear, lambda: shared.update(x=1), lambda: shared.pop("counters"),
                   shared.popitem, lambda: shared.setdefault("x", 1)):
        with pytest.raises(TypeError, match="read-only"):
            change()
    with pytest.raises(TypeError, match="read-only"):
        shared["x"] = 1
    assert list(shared) == ["counters"]
