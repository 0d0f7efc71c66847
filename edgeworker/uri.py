"""Request-target helpers: nginx's URI normalization, query-argument parsing and
``$variable`` expansion."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

from .errors import BadURI

#: plain ASCII paths already seen (nothing to decode or resolve): raw bytes → uri, bounded;
#: a path found here is its own normalized form (``normalize_path`` returns this value)
plain_paths: dict[bytes, str] = {}
_PLAIN_MAX = 4096


def normalize_path(raw: bytes) -> str:
    """Decode and normalize a request path the way nginx builds ``$uri``.

    Percent-escapes are decoded, ``//`` runs are merged, ``.`` segments dropped and ``..``
    segments resolved. A path that climbs above ``/``, or that decodes to NUL, raises
    ``BadURI`` (nginx answers 400 to both). Bytes that are not UTF-8 are kept by the
    ``surrogateescape`` error handler, so nothing is lost.
    """
    uri = plain_paths.get(raw)
    if uri is not None:
        return uri
    if b"%" not in raw and b"/." not in raw and b"//" not in raw:
        try:
            uri = raw.decode("ascii")
        except UnicodeDecodeError:
            pass
        else:
            if len(raw) <= 256:  # remember short plain paths (the ones asked again and again)
                if len(plain_paths) >= _PLAIN_MAX:
                    plain_paths.clear()
                plain_paths[raw] = uri
            return uri
    decoded = unquote_to_bytes(raw) if b"%" in raw else raw
    if b"\x00" in decoded:
        raise BadURI("NUL in path")
    out: list[bytes] = []
    segments = decoded.split(b"/")
    for seg in segments[1:-1]:
        if seg == b"" or seg == b".":
            continue
        if seg == b"..":
            if not out:
                raise BadURI("path climbs above the root")
            out.pop()
            continue
        out.append(seg)
    last = segments[-1] if len(segments) > 1 else decoded
    if last == b"..":
        if not out:
            raise BadURI("path climbs above the root")
        out.pop()
        trailing = True
    elif last == b".":
        trailing = True
    else:
        trailing = last == b""
        if not trailing:
            out.append(last)
    path = b"/" + b"/".join(out)
    if trailing and out:
        path += b"/"
    return path.decode("utf-8", "surrogateescape")


class MultiDict:
    """An ordered multi-dict of ``str`` (query arguments).

    ``d[name]`` and ``d.get(name)`` give the first value; ``d.getall(name)`` every value.
    A bare key (``?flag``) has the value ``""``.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items = items or []

    def __getitem__(self, name: str) -> str:
        for k, v in self._items:
            if k == name:
                return v
        raise KeyError(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        for k, v in self._items:
            if k == name:
                return v
        return default

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self._items if k == name]

    def __contains__(self, name: object) -> bool:
        return any(k == name for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        seen: set[str] = set()
        for k, _ in self._items:
            if k not in seen:
                seen.add(k)
                yield k

    def keys(self) -> list[str]:
        return list(iter(self))

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"MultiDict({self._items!r})"


def parse_args(query: str) -> MultiDict:
    """Parse a query string (``a=1&b=2&a=3``) into a MultiDict; ``+`` means space."""
    items: list[tuple[str, str]] = []
    if query:
        for part in query.split("&"):
            if not part:
                continue
            name, sep, value = part.partition("=")
            items.append((unquote_plus(name), unquote_plus(value) if sep else ""))
    return MultiDict(items)


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header into a dict (first occurrence of a name wins)."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip('"')
    return out


def expand(template: str, var: Any) -> str:
    """Replace ``$name``/``${name}`` with ``var.get(name) or ""`` (``var``: a mapping of
    variables, such as ``req.var``)."""
    if "$" not in template:
        return template
    out = []
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c != "$":
            j = template.find("$", i)
            if j < 0:
                j = n
            out.append(template[i:j])
            i = j
            continue
        if i + 1 < n and template[i + 1] == "{":
            end = template.find("}", i + 2)
            if end < 0:
                out.append(template[i:])
                break
            name = template[i + 2 : end]
            i = end + 1
        else:
            j = i + 1
            while j < n and (template[j].isalnum() or template[j] == "_"):
                j += 1
            name = template[i + 1 : j]
            if not name:
                out.append("$")
                i += 1
                continue
            i = j
        out.append(var.get(name) or "")
    return "".join(out)
