"""Sizes, durations and rates as the config writes them."""

from __future__ import annotations

import pickle

import pytest

from edgeworker.units import Rate, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (1234, 1234),
        ("1234", 1234),
        ("512k", 512 * 1024),
        ("512K", 512 * 1024),
        ("10m", 10 * 1024**2),
        ("10M", 10 * 1024**2),
        ("1g", 1024**3),
        (" 8 k ", 8192),
    ],
)
def test_parse_size_accepts_bytes_and_binary_suffixes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "k", "1.5m", "10mb", "-1", "1t", "ten", 1.5, True, None, -3])
def test_parse_size_rejects_everything_else(bad):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(bad)


def test_parse_size_message_quotes_value_and_shows_forms():
    with pytest.raises(ValueError) as e:
        parse_size("10mb")
    assert str(e.value) == (
        'invalid size "10mb": expected bytes or a number with k, m or g (e.g. "512k", "10m", "1g")'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0.0),
        (30, 30.0),
        (0.25, 0.25),
        ("30", 30.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("1.5s", 1.5),
    ],
)
def test_parse_duration_accepts_numbers_and_units(text, expected):
    assert parse_duration(text) == pytest.approx(expected)
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(
    "bad", ["", "s", "5 years", "-1s", "1w", "ms5", -1, float("inf"), True, []]
)
def test_parse_duration_rejects_everything_else(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "per_second", "count", "period"),
    [
        ("10r/s", 10.0, 10.0, 1.0),
        ("10 r/s", 10.0, 10.0, 1.0),
        ("60r/m", 1.0, 60.0, 60.0),
        ("60 r / m", 1.0, 60.0, 60.0),
        ("3600r/h", 1.0, 3600.0, 3600.0),
        ("0.5r/s", 0.5, 0.5, 1.0),
    ],
)
def test_parse_rate_returns_requests_per_second(text, per_second, count, period):
    rate = parse_rate(text)
    assert rate == pytest.approx(per_second)
    assert isinstance(rate, float)
    assert (rate.count, rate.period) == (count, period)


@pytest.mark.parametrize("bad", ["", "10", "10r", "10/s", "10r/d", "0r/s", "r/s", 10, None])
def test_parse_rate_rejects_everything_else(bad):
    with pytest.raises(ValueError, match="invalid rate"):
        parse_rate(bad)


def test_rate_survives_pickle_and_has_a_readable_repr():
    rate = parse_rate("60r/m")
    copy = pickle.loads(pickle.dumps(rate))
    assert copy == rate and copy.count == 60.0 and copy.period == 60.0
    assert repr(rate) == "Rate('60r/m')"
    assert isinstance(copy, Rate)
