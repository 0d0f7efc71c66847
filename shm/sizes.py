"""Parsing of nginx-style sizes ("512k", "10m", "1g")."""

from __future__ import annotations

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(size: int | str) -> int:
    """Return ``size`` in bytes.

    Accepts an int, or a string of digits with an optional unit suffix ``k``, ``m`` or ``g``
    (case-insensitive, powers of 1024, an optional trailing ``b`` is allowed: ``"1mb"``).
    Raises ``ValueError`` for anything else or a value <= 0, ``TypeError`` for other types.
    """
    if isinstance(size, bool):
        raise TypeError("size must be an int or a string like '1m'")
    if isinstance(size, int):
        n = size
    elif isinstance(size, str):
        s = size.strip().lower()
        if s.endswith("b") and len(s) > 1 and not s[-2].isdigit():
            s = s[:-1]
        unit = s[-1:] if s[-1:] in ("k", "m", "g") else ""
        digits = s[: len(s) - len(unit)]
        if not digits.isdigit():
            raise ValueError(f"invalid size {size!r}")
        n = int(digits) * _UNITS[unit]
    else:
        raise TypeError("size must be an int or a string like '1m'")
    if n <= 0:
        raise ValueError(f"invalid size {size!r}")
    return n
