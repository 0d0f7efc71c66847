"""RESP2 for :mod:`edgeworker.resp`: commands encoded as redis-py encodes them (``pack``,
``Script`` with its pre-encoded ``EVALSHA`` heads) and replies parsed (``_parse``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rexc

__all__ = ["Script", "pack"]

_CRLF = b"\r\n"


class _Incomplete(Exception):
    """The buffer does not hold a whole reply yet."""


# ------------------------------------------------------------------------------ encoding
def _enc(v: Any) -> bytes:
    """One argument as redis-py encodes it (bytes as is, int/float ``repr``, str UTF-8)."""
    c = v.__class__
    if c is bytes:
        return v
    if c is int:
        return b"%d" % v
    if c is str:
        return v.encode()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, bool):
        raise rexc.DataError(
            "Invalid input of type: 'bool'. Convert to a bytes, string, int or float first."
        )
    if isinstance(v, (int, float)):
        return repr(v).encode()
    if isinstance(v, str):
        return v.encode()
    raise rexc.DataError(
        f"Invalid input of type: '{type(v).__name__}'. Convert to a bytes, "
        "string, int or float first."
    )


def pack(*args: Any) -> bytes:
    """A command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _enc(a)
        out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


class Script:
    """A Lua script for :meth:`Pool.evalsha`: its SHA1 and pre-encoded ``EVALSHA`` heads."""

    __slots__ = ("src", "sha", "_heads")

    def __init__(self, src: str) -> None:
        self.src = src
        self.sha = hashlib.sha1(src.encode()).hexdigest()
        self._heads: dict[tuple[int, int], bytes] = {}

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
        """``EVALSHA sha len(keys) *keys *args`` in RESP."""
        nk = len(keys)
        shape = (nk, len(args))
        head = self._heads.get(shape)
        if head is None:
            n = str(nk).encode()
            head = self._heads[shape] = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%s\r\n" % (
                3 + nk + shape[1],
                self.sha.encode(),
                len(n),
                n,
            )
        out = [head]
        for v in keys:
            if v.__class__ is not bytes:
                v = _enc(v)
            out.append(b"$%d\r\n%b\r\n" % (len(v), v))
        for v in args:
            c = v.__class__
            if c is int:
                v = b"%d" % v
            elif c is not bytes:
                v = _enc(v)
            out.append(b"$%d\r\n%b\r\n" % (len(v), v))
        return b"".join(out)


# ------------------------------------------------------------------------------ parsing
def _error(line: bytes) -> rexc.RedisError:
    """An error reply as the exception instance redis-py builds for it."""
    from redis._parsers.base import BaseParser

    return BaseParser.parse_error(line.decode("utf-8", "replace"))


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One reply from ``buf[pos:]``: ``(value, next_pos)``; ``_Incomplete`` if cut short.

    Integers → ``int``, bulk → ``bytes`` (nil → ``None``), arrays → ``list`` (nil →
    ``None``), status → ``bytes``, errors → a ``redis.exceptions`` instance (returned, not
    raised: nested errors stay in their array as redis-py leaves them).
    """
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    t = buf[pos]
    if t == 58:  # ':'
        return int(buf[pos + 1 : end]), end + 2
    if t == 42:  # '*'
        n = int(buf[pos + 1 : end])
        pos = end + 2
        if n < 0:
            return None, pos
        out = []
        for _ in range(n):
            v, pos = _parse(buf, pos)
            out.append(v)
        return out, pos
    if t == 36:  # '$'
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        start = end + 2
        stop = start + n
        if len(buf) < stop + 2:
            raise _Incomplete
        return buf[start:stop], stop + 2
    if t == 43:  # '+'
        return buf[pos + 1 : end], end + 2
    if t == 45:  # '-'
        return _error(buf[pos + 1 : end]), end + 2
    raise rexc.InvalidResponse(f"Protocol Error: {buf[pos:end]!r}")
