"""``Headers``: case-insensitive ordered multi-dict, lazy decoding, and write validation."""

from __future__ import annotations

import pytest

from edgeworker.http.headers import Headers
from edgeworker.http.protocol import RequestHead, ServerProtocol

RAW = [(b"host", b"example.com"), (b"x-a", b"1"), (b"accept", b"*/*"), (b"x-a", b"2")]


def test_from_raw_reads_case_insensitively() -> None:
    h = Headers.from_raw(list(RAW))
    assert h["Host"] == "example.com"
    assert h["X-A"] == "1"
    assert h.get("x-a") == "1"
    assert h.getall("X-a") == ["1", "2"]
    assert "ACCEPT" in h and "missing" not in h
    assert len(h) == 4


def test_missing_name() -> None:
    h = Headers.from_raw(list(RAW))
    with pytest.raises(KeyError):
        h["Missing"]
    assert h.get("Missing") is None
    assert h.get("Missing", "d") == "d"
    assert h.getall("Missing") == []
    with pytest.raises(KeyError):
        del h["Missing"]


def test_latin1_decoding() -> None:
    h = Headers.from_raw([(b"x", b"caf\xe9")])
    assert h["x"] == "café"
    assert h.raw() == [(b"x", b"caf\xe9")]


def test_raw_is_untouched_until_decoded() -> None:
    raw = list(RAW)
    h = Headers.from_raw(raw)
    assert h.raw() is raw
    assert len(h) == 4


def test_items_keys_values_in_order() -> None:
    h = Headers.from_raw(list(RAW))
    assert h.items() == [("host", "example.com"), ("x-a", "1"), ("accept", "*/*"), ("x-a", "2")]
    assert h.keys() == ["host", "x-a", "accept", "x-a"]
    assert h.values() == ["example.com", "1", "*/*", "2"]
    assert list(h) == h.keys()


def test_setitem_replaces_all_at_first_position() -> None:
    h = Headers.from_raw(list(RAW))
    h["X-A"] = "new"
    assert h.items() == [("host", "example.com"), ("X-A", "new"), ("accept", "*/*")]
    h["X-New"] = "v"
    assert h.items()[-1] == ("X-New", "v")


def test_add_keeps_existing() -> None:
    h = Headers()
    h.add("Set-Cookie", "a=1")
    h.add("set-cookie", "b=2")
    assert h.getall("SET-COOKIE") == ["a=1", "b=2"]
    assert len(h) == 2


def test_delitem_removes_all() -> None:
    h = Headers.from_raw(list(RAW))
    del h["x-A"]
    assert h.keys() == ["host", "accept"]


def test_raw_after_changes_keeps_given_case() -> None:
    h = Headers.from_raw([(b"host", b"h")])
    h["X-Real-IP"] = "1.2.3.4"
    assert h.raw() == [(b"host", b"h"), (b"X-Real-IP", b"1.2.3.4")]


def test_response_headers_from_mapping_and_pairs() -> None:
    h = Headers({"Content-Type": "text/plain", "X-Count": 3})
    assert h.items() == [("Content-Type", "text/plain"), ("X-Count", "3")]
    h2 = Headers([("A", "1"), ("a", "2")])
    assert h2.getall("A") == ["1", "2"]


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b"])
def test_crlf_nul_values_are_refused(value: str) -> None:
    h = Headers()
    with pytest.raises(ValueError, match="invalid header value"):
        h["X"] = value
    with pytest.raises(ValueError, match="invalid header value"):
        h.add("X", value)
    assert len(h) == 0


def test_non_latin1_value_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid header value"):
        Headers()["X"] = "snow ☃"


@pytest.mark.parametrize("name", ["", "X Y", "X:Y", "X\r\n", "Ä", "X(", "a\0"])
def test_non_token_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid header name"):
        Headers()[name] = "v"
    with pytest.raises(ValueError):
        Headers().add(name, "v")


def test_wrong_types() -> None:
    with pytest.raises(TypeError):
        Headers()["X"] = b"bytes"
    with pytest.raises(TypeError):
        Headers()[b"X"] = "v"  # type: ignore[index]


def test_pop_setdefault_copy_eq() -> None:
    h = Headers([("A", "1"), ("B", "2")])
    c = h.copy()
    assert h.pop("a") == "1" and "A" not in h and "A" in c
    assert h.pop("zzz", None) is None
    with pytest.raises(KeyError):
        h.pop("zzz")
    assert h.setdefault("B", "x") == "2"
    assert h.setdefault("C", "3") == "3" and h["c"] == "3"
    assert Headers([("A", "1")]) == Headers([("a", "1")])


def test_from_parsed_request_head() -> None:
    [head, _] = ServerProtocol().feed(
        b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n"
    )
    assert isinstance(head, RequestHead)
    h = Headers.from_raw(head.headers)
    assert h["user-agent"] == "t" and h.getall("x-dup") == ["1", "2"]
