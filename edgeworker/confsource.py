"""The config file as text: where each key is written, ``${NAME}`` expansion, suggestions.

``tomllib`` gives values without positions. ``key_lines(text)`` scans a document that
``tomllib`` accepted and returns the line of every key path in the loader's spelling
(``server[0].location[2].access``, ``upstream.api.servers[1]``): table headers, arrays of
tables, dotted keys, quoted keys, inline tables and array items. ``SourceFile`` is the config
file's path (a ``str``) that also knows those lines: ``ConfigError`` asks it for the place of
each message (``FILE:LINE``).

``expand(raw, env, err)`` replaces ``${NAME}`` and ``${NAME:-default}`` in every string value
of the decoded document (never in keys); ``suggest(word, choices)`` is the ``did you mean``
of a mistyped key or value.

This module imports nothing of edgeworker: the loader and every feature schema use it.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["SourceFile", "expand", "format_path", "key_lines", "suggest"]

Path = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
#: where a scalar value (number, bool, date) ends
_SCALAR_END = frozenset(",]}#\n")


def format_path(path: Path) -> str:
    """A key path as the loader writes it: ``server[0].location[2].access``."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else seg
    return out


class _Scanner:
    """One pass over a valid TOML document, recording the line each key path starts on."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[Path, int] = {}

    # -- characters
    def _advance(self, n: int) -> None:
        self.line += self.s.count("\n", self.i, self.i + n)
        self.i += n

    def _blank(self, newlines: bool) -> None:
        """Skip spaces and tabs; with ``newlines``, also line ends and comments."""
        s, n = self.s, len(self.s)
        while self.i < n:
            c = s[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "\n" and newlines:
                self.i += 1
                self.line += 1
            elif c == "#" and newlines:
                end = s.find("\n", self.i)
                self.i = n if end < 0 else end
            else:
                return

    def _note(self, path: Path, line: int) -> None:
        self.lines.setdefault(path, line)

    # -- keys
    def _key(self) -> list[str]:
        """A dotted key (``a."b.c".d``), each part decoded as ``tomllib`` does."""
        parts: list[str] = []
        while True:
            self._blank(False)
            c = self.s[self.i]
            if c in "\"'":
                start = self.i
                self._string()
                parts.append(tomllib.loads("k = " + self.s[start : self.i])["k"])
            else:
                start = self.i
                while self.i < len(self.s) and self.s[self.i] in _BARE:
                    self.i += 1
                parts.append(self.s[start : self.i])
            self._blank(False)
            if self.i < len(self.s) and self.s[self.i] == ".":
                self.i += 1
                continue
            return parts

    # -- values
    def _string(self) -> None:
        """Skip one string of any of the four kinds (the cursor is on its first quote)."""
        s = self.s
        q = s[self.i]
        if s.startswith(q * 3, self.i):
            j = self.i + 3
            while True:
                if q == '"' and s[j] == "\\":
                    j += 2
                    continue
                if s.startswith(q * 3, j):
                    while s.startswith(q, j + 3):  # up to two quotes end the content
                        j += 1
                    self._advance(j + 3 - self.i)
                    return
                j += 1
        j = self.i + 1
        while s[j] != q:
            j += 2 if q == '"' and s[j] == "\\" else 1
        self._advance(j + 1 - self.i)

    def _value(self, path: Path) -> None:
        c = self.s[self.i]
        if c in "\"'":
            self._string()
        elif c == "[":
            self._advance(1)
            index = 0
            while True:
                self._blank(True)
                if self.s[self.i] == "]":
                    self._advance(1)
                    return
                self._note((*path, index), self.line)
                self._value((*path, index))
                index += 1
                self._blank(True)
                if self.s[self.i] == ",":
                    self._advance(1)
        elif c == "{":
            self._advance(1)
            while True:
                self._blank(True)
                if self.s[self.i] == "}":
                    self._advance(1)
                    return
                self._pair(path)
                self._blank(True)
                if self.s[self.i] == ",":
                    self._advance(1)
        else:
            while self.i < len(self.s) and self.s[self.i] not in _SCALAR_END:
                self.i += 1

    def _pair(self, table: Path) -> None:
        """``key = value`` in ``table`` (a dotted key makes the tables on its way)."""
        line = self.line
        keys = self._key()
        for k in range(1, len(keys) + 1):
            self._note((*table, *keys[:k]), line)
        self._blank(False)
        self._advance(1)  # "="
        self._blank(False)
        self._value((*table, *keys))

    # -- the document
    def run(self) -> dict[Path, int]:
        s = self.s
        table: Path = ()
        arrays: dict[Path, int] = {}  # array of tables -> its length so far
        while True:
            self._blank(True)
            if self.i >= len(s):
                return self.lines
            if s[self.i] != "[":
                self._pair(table)
                continue
            line = self.line
            double = s.startswith("[[", self.i)
            self._advance(2 if double else 1)
            keys = self._key()
            self._advance(2 if double else 1)
            path: Path = ()
            for k, key in enumerate(keys):
                path = (*path, key)
                self._note(path, line)
                if k == len(keys) - 1 and double:
                    count = arrays.get(path, 0)
                    arrays[path] = count + 1
                    path = (*path, count)
                    self._note(path, line)
                elif path in arrays:  # a table inside the last element of an array
                    path = (*path, arrays[path] - 1)
            table = path


def key_lines(text: str) -> dict[str, int]:
    """The line (from 1) of every key path of ``text``, a document ``tomllib`` accepts.

    A table is where it is first named (its header, or the first dotted key or header that
    names it); an array item is where the item starts; an array of tables' element is its
    ``[[header]]``.
    """
    out: dict[str, int] = {}
    for path, line in _Scanner(text).run().items():
        out.setdefault(format_path(path), line)
    return out


_INDEX_RE = re.compile(r"\[[^\[\]]*\]$")
_SCOPE_RE = re.compile(r"^(server\[\d+\])(\.location\[\d+\])?\.(.+)$")
_UNKNOWN_KEY_RE = re.compile(r'^unknown key "([^"]*)"')


class SourceFile(str):
    """A config file's absolute path that knows the line of each key path in it.

    ``where(message)`` is the place of a ``"path: cause"`` message: ``FILE:LINE`` (``FILE``
    alone when the path is not written in the file at all).
    """

    lines: dict[str, int]

    def __new__(cls, path: str, lines: dict[str, int] | None = None) -> SourceFile:
        self = super().__new__(cls, path)
        self.lines = lines or {}
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return SourceFile, (str(self), self.lines)

    def line(self, path: str, message: str = "") -> int | None:
        """The line of ``path``: the key itself; for an unknown key, where that key is
        written; for a key a server or location inherits (``ssl_*``, ``gzip*``) and does not
        set, where the enclosing server or ``[http]`` sets it; else the nearest enclosing table
        or array."""
        lines = self.lines
        if m := _UNKNOWN_KEY_RE.match(message):
            found = lines.get(f"{path}.{m.group(1)}" if path else m.group(1))
            if found is not None:
                return found
        if m := _SCOPE_RE.match(path):
            server, location, rest = m.groups()
            key = re.split(r"[.\[]", rest, maxsplit=1)[0]
            scopes = [server + location, server] if location else [server]
            for scope in (*scopes, "http"):
                if f"{scope}.{key}" in lines:
                    return self._nearest(f"{scope}.{rest}")
        return self._nearest(path)

    def _nearest(self, path: str) -> int | None:
        """The line of ``path``, else of the nearest table or array that holds it."""
        lines = self.lines
        while path:
            if path in lines:
                return lines[path]
            m = _INDEX_RE.search(path)
            path = path[: m.start()] if m else path.rpartition(".")[0]
        return None

    def where(self, message: str) -> str:
        """``FILE:LINE`` for a ``"path: cause"`` message (``FILE`` when no line is known)."""
        path, _, rest = message.partition(": ")
        line = self.line(path, rest)
        return f"{self}:{line}" if line is not None else str(self)


# ---------------------------------------------------------------------------------------------
# ${NAME} expansion

#: ``${NAME}`` / ``${NAME:-default}``: NAME is upper case (lower case is an nginx variable).
_REF_RE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")
#: ``$$``, or ``${`` and the name after it
_DOLLAR_RE = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]*))")


def _expand_one(text: str, env: Mapping[str, str]) -> tuple[str, list[str], bool]:
    """``text`` with its references replaced, the problems (missing variables...), and
    whether it held a reference."""
    out: list[str] = []
    problems: list[str] = []
    found = False
    i = 0
    while (m := _DOLLAR_RE.search(text, i)) is not None:
        out.append(text[i : m.start()])
        if m.group(0) == "$$":
            out.append("$")
            i = m.end()
            continue
        name = m.group(1)
        if not name or name[0].isdigit() or name != name.upper():  # an nginx variable
            out.append(m.group(0))
            i = m.end()
            continue
        ref = _REF_RE.match(text, m.start())
        if ref is None:
            end = text.find("}", m.start())
            shown = text[m.start() : end + 1] if end >= 0 else text[m.start() :]
            problems.append(
                f'malformed "{shown}": expected ${{NAME}} or ${{NAME:-default}} '
                '(write "$$" for a literal "$")'
            )
            out.append(shown)
            i = m.start() + len(shown)
            continue
        found = True
        name, default = ref.group(1), ref.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(
                    f'environment variable "{name}" is not set '
                    f"(give a default with ${{{name}:-value}})"
                )
                value = ref.group(0)
            else:
                value = default
        out.append(value)
        i = ref.end()
    out.append(text[i:])
    return "".join(out), problems, found


def expand(
    raw: Any,
    env: Mapping[str, str],
    err: Callable[[str, str], None],
    expanded: set[str] | None = None,
    path: Path = (),
) -> Any:
    """``raw`` (what ``tomllib`` decoded) with ``${NAME}`` / ``${NAME:-default}`` replaced in
    every string value, ``$$`` written as ``$``. NAME is upper-case letters, digits and ``_``;
    ``${name}`` with a lower-case letter, and a ``$`` followed by anything else (``$host``,
    ``$1``), stay as written. ``${NAME:-default}`` takes the default when NAME is unset or
    empty. Problems go to ``err(path, message)`` (the value is then left as written); the
    paths of the values that held a reference are added to ``expanded``."""
    if isinstance(raw, str):
        if "$" not in raw:
            return raw
        text, problems, found = _expand_one(raw, env)
        for problem in problems:
            err(format_path(path), problem)
        if found and expanded is not None:
            expanded.add(format_path(path))
        return text
    if isinstance(raw, dict):
        return {k: expand(v, env, err, expanded, (*path, k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [expand(v, env, err, expanded, (*path, i)) for i, v in enumerate(raw)]
    return raw


# ---------------------------------------------------------------------------------------------
# did you mean


def suggest(word: str, choices: Iterable[str]) -> str:
    """``' (did you mean "x"?)'`` for the choice closest to ``word``, ``""`` when none is
    close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{found[0]}"?)' if found else ""
