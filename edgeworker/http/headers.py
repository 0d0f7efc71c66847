"""``Headers``: a case-insensitive, ordered multi-dict of ``str`` → ``str``.

Request headers are built from the parser's raw list with ``Headers.from_raw(raw)`` at almost no
cost: the bytes are decoded (latin-1) only when first read or written. Response headers start
empty (``Headers()``) or from a mapping / list of pairs. Every value written is checked: a name
that is not an RFC 9110 token, or a value holding CR, LF or NUL (or a character outside
latin-1), raises ``ValueError`` so it can never be sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from .fields import field_pairs

__all__ = ["Headers", "check_name", "check_value"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MISSING = object()


def check_name(name: str) -> str:
    """Return ``name`` if it is a token (RFC 9110 §5.6.2); else raise ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"header name must be str, not {type(name).__name__}")
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid header name: {name!r}")
    return name


def check_value(value: object, name: str = "") -> str:
    """Return ``value`` as ``str`` (ints are converted) if it is safe to send.

    Raises ``ValueError("invalid header value")`` for CR, LF, NUL or non-latin-1 characters,
    ``TypeError`` for types other than ``str`` and ``int``.
    """
    if not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"header value must be str, not {type(value).__name__}")
    if "\r" in value or "\n" in value or "\0" in value or not _latin1(value):
        where = f" for {name}" if name else ""
        raise ValueError(f"invalid header value{where}: {value!r}")
    return value


def _latin1(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class Headers:
    """Case-insensitive ordered multi-dict of header fields.

    ``h["X"]`` first value (``KeyError`` if missing), ``h.get(name, default)``, ``h.getall(name)``,
    ``h[name] = v`` (replaces every field of that name, keeping the first one's position),
    ``h.add(name, v)``, ``del h[name]`` (every field; ``KeyError`` if missing), ``name in h``,
    ``len(h)`` (number of fields), ``h.items()`` / ``h.keys()`` / ``h.values()`` (one entry per
    field, in order), ``h.raw()`` (``list[tuple[bytes, bytes]]``, latin-1).
    """

    __slots__ = ("_raw", "_items", "_wire")

    def __init__(
        self, fields: Mapping[str, object] | Iterable[tuple[str, object]] | None = None
    ) -> None:
        self._raw: list[tuple[bytes, bytes]] | None = None
        self._items: list[tuple[str, str, str]] | None = []  # (lower-cased name, name, value)
        self._wire: tuple[bytes, bool] | None = None
        if fields is not None:
            pairs = fields.items() if isinstance(fields, Mapping) else fields
            for name, value in pairs:
                self.add(name, value)

    @classmethod
    def from_raw(cls, raw: list[tuple[bytes, bytes]]) -> Headers:
        """Wrap a parser's list of ``(name, value)`` bytes; decoding is deferred."""
        self = cls.__new__(cls)
        self._raw = raw
        self._items = None
        self._wire = None
        return self

    @classmethod
    def from_wire(cls, wire: bytes, has_ct: bool) -> Headers:
        """Wrap response fields as they go out (``b"\r\nName: value"`` each; ``has_ct``: one
        is Content-Type): sent as they are while untouched, split into fields when read."""
        self = cls.__new__(cls)
        self._raw = None
        self._items = None
        self._wire = (wire, has_ct)
        return self

    def _pairs(self) -> list[tuple[bytes, bytes]]:
        """The fields as latin-1 ``(name, value)`` bytes while never decoded (no copy); [] once
        decoded (see ``raw``)."""
        raw = self._raw
        if raw is None and self._items is None and self._wire is not None:
            raw = self._raw = field_pairs(self._wire[0])
        return raw or []

    def _fields(self) -> list[tuple[str, str, str]]:
        items = self._items
        if items is None:
            items = []
            for name, value in self._pairs():
                n = name.decode("latin-1")
                items.append((n.lower(), n, value.decode("latin-1")))
            self._items = items
            self._raw = None
            self._wire = None
        return items

    # ------------------------------------------------------------------ reading

    def __getitem__(self, name: str) -> str:
        key = name.lower()
        for lname, _, value in self._fields():
            if lname == key:
                return value
        raise KeyError(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = name.lower()
        for lname, _, value in self._fields():
            if lname == key:
                return value
        return default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` in order (``[]`` if none)."""
        key = name.lower()
        return [value for lname, _, value in self._fields() if lname == key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(lname == key for lname, _, _ in self._fields())

    def __len__(self) -> int:
        if self._items is None:
            return len(self._pairs())
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` per field, in order."""
        return [(name, value) for _, name, value in self._fields()]

    def keys(self) -> list[str]:
        """The name of each field, in order (a name repeats if the field does)."""
        return [name for _, name, _ in self._fields()]

    def values(self) -> list[str]:
        """The value of each field, in order."""
        return [value for _, _, value in self._fields()]

    def raw(self) -> list[tuple[bytes, bytes]]:
        """The fields as latin-1 ``(name, value)`` bytes, in order (no copy if never decoded)."""
        if self._items is None:
            return self._pairs()
        return [(n.encode("latin-1"), v.encode("latin-1")) for _, n, v in self._items]

    # ------------------------------------------------------------------ writing

    def __setitem__(self, name: str, value: object) -> None:
        """Replace every field named ``name`` by one (at the first one's position)."""
        check_name(name)
        value = check_value(value, name)
        key = name.lower()
        items = self._fields()
        out: list[tuple[str, str, str]] = []
        placed = False
        for item in items:
            if item[0] == key:
                if not placed:
                    out.append((key, name, value))
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append((key, name, value))
        self._items = out

    def add(self, name: str, value: object) -> None:
        """Append a field (keeps the existing ones of that name)."""
        check_name(name)
        value = check_value(value, name)
        self._fields().append((name.lower(), name, value))

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        items = self._fields()
        kept = [item for item in items if item[0] != key]
        if len(kept) == len(items):
            raise KeyError(name)
        self._items = kept

    def pop(self, name: str, default: object = _MISSING) -> object:
        """Remove every field ``name``; return its first value (or ``default``; else KeyError)."""
        value = self.get(name, _MISSING)  # type: ignore[arg-type]
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(name)
            return default
        del self[name]
        return value

    def setdefault(self, name: str, value: str) -> str:
        """The first value of ``name``; if missing, add ``value`` and return it."""
        current = self.get(name)
        if current is None:
            self.add(name, value)
            return check_value(value, name)
        return current

    def copy(self) -> Headers:
        """An independent copy."""
        new = Headers.__new__(Headers)
        new._raw = None
        new._wire = None
        new._items = list(self._fields())
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._fields()] == [(k, v) for k, _, v in other._fields()]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"
