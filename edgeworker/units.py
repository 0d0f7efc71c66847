"""Parsing of the unit-carrying values of the configuration: sizes, durations and rates.

All three accept what an nginx configuration accepts, in TOML form:

- sizes: a non-negative integer of bytes, or a string ``"512"``, ``"512k"``, ``"10m"``, ``"1g"``
  (binary multiples: k = 1024, case-insensitive);
- durations: a non-negative number of seconds, or a string made of one or more
  ``<number><unit>`` parts, unit one of ``ms``, ``s``, ``m``, ``h``, ``d`` (``"500ms"``,
  ``"30s"``, ``"1m30s"``); a bare number in a string is seconds;
- rates: ``"N r/s"``, ``"N r/m"`` or ``"N r/h"``, spaces optional.

Every parser raises ``ValueError`` whose message quotes the bad value and shows the accepted forms.
"""

from __future__ import annotations

import math
import re

__all__ = ["Rate", "parse_duration", "parse_rate", "parse_size"]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)\s*$")
_SIZE_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

_DUR_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")
_DUR_BARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
_DUR_MULT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*r\s*/\s*([smh])\s*$")
_RATE_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_size(value: int | str) -> int:
    """Return a size in bytes.

    Accepts an int (bytes) or a string of digits with an optional ``k``/``m``/``g`` suffix
    (case-insensitive, k = 1024). Raises ``ValueError`` for negative numbers, floats, booleans
    and any other text.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            f"invalid size {value!r}: expected bytes (an integer) or a string like "
            '"512k", "10m", "1g"'
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return value
    m = _SIZE_RE.match(value)
    if m is None:
        raise ValueError(
            f'invalid size "{value}": expected bytes or a number with k, m or g '
            '(e.g. "512k", "10m", "1g")'
        )
    return int(m.group(1)) * _SIZE_MULT[m.group(2).lower()]


def parse_duration(value: int | float | str) -> float:
    """Return a duration in seconds (float).

    Accepts a non-negative number of seconds or a string such as ``"500ms"``, ``"30s"``,
    ``"5m"``, ``"1h"``, ``"2d"``, ``"1m30s"`` or ``"2.5"`` (seconds). Raises ``ValueError``
    for negative, non-finite or unparsable values.
    """
    if _is_number(value):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"invalid duration {value!r}: must be a non-negative number")
        return seconds
    if not isinstance(value, str):
        raise ValueError(
            f"invalid duration {value!r}: expected seconds (a number) or a string like "
            '"500ms", "30s", "5m", "1h"'
        )
    bare = _DUR_BARE.match(value)
    if bare is not None:
        return float(bare.group(1))
    text = value.strip()
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DUR_PART.match(text, pos)
        if m is None:
            break
        total += float(m.group(1)) * _DUR_MULT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(
            f'invalid duration "{value}": expected a number with ms, s, m, h or d '
            '(e.g. "500ms", "30s", "5m", "1h")'
        )
    return total


class Rate(float):
    """A request rate in requests per second, remembering how it was written.

    ``Rate("60r/m") == 1.0``; ``.count`` is 60.0 and ``.period`` is 60.0 (seconds), which is
    what the RateLimit headers advertise (quota per window).
    """

    count: float
    period: float

    def __new__(cls, count: float, period: float) -> Rate:
        self = super().__new__(cls, count / period)
        self.count = count
        self.period = period
        return self

    def __reduce__(self) -> tuple[type[Rate], tuple[float, float]]:
        return (Rate, (self.count, self.period))

    def __repr__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(self.period)
        if unit is None:
            return f"Rate({self.count!r}, {self.period!r})"
        count = int(self.count) if self.count.is_integer() else self.count
        return f"Rate('{count}r/{unit}')"


def parse_rate(value: str) -> Rate:
    """Return the rate in requests per second, as a ``Rate`` (a ``float`` subclass).

    Accepts ``"N r/s"``, ``"N r/m"``, ``"N r/h"`` with optional spaces and a positive,
    possibly fractional N. Raises ``ValueError`` otherwise.
    """
    if not isinstance(value, str):
        raise ValueError(f'invalid rate {value!r}: expected a string like "10r/s" or "60r/m"')
    m = _RATE_RE.match(value)
    if m is None:
        raise ValueError(
            f'invalid rate "{value}": expected "N r/s", "N r/m" or "N r/h" (e.g. "60r/m")'
        )
    count = float(m.group(1))
    if count <= 0:
        raise ValueError(f'invalid rate "{value}": must be greater than zero')
    return Rate(count, _RATE_PERIOD[m.group(2)])
