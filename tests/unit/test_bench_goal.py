"""The one rule every bench in bench/ judges its goals by (bench/common.py's Goal)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from common import MIN_ROUNDS, Goal, goals_table, per_round_ratio  # noqa: E402


@pytest.mark.parametrize(
    ("values", "flags", "verdict"),
    [
        ([0.6, 0.55, 0.7, 0.52, 0.51], [], "PASS"),
        ([0.4, 0.45, 0.3, 0.42, 0.41], [], "FAIL"),
        ([0.3, 0.5, 0.45, 0.39, 0.41], [], "inconclusive"),
        ([0.6] * (MIN_ROUNDS - 1), [], "too few rounds"),
        # a disturbed round is left out: what is left may be too few
        ([0.6, 0.1, 0.7, 0.52, 0.51], [False, True, False, False, False], "too few rounds"),
        ([0.6, 0.1, 0.7, 0.52, 0.51, 0.6], [False, True], "PASS"),
        # a side missing in a round never passes
        ([0.6, None, 0.7, 0.52, 0.51], [], "FAIL (not measured)"),
        # ... even in a round that ran beside other load (a skipped side, every round disturbed)
        ([0.6, None, 0.7, 0.52, 0.51, 0.6], [False, True], "FAIL (not measured)"),
        ([None] * MIN_ROUNDS, [True] * MIN_ROUNDS, "FAIL (not measured)"),
        ([], [], "FAIL (not measured)"),
    ],
)
def test_verdict(values, flags, verdict):
    assert Goal("g", ">=", 0.5, values, flags).verdict == verdict


def test_upper_bound_and_median_of_kept_rounds():
    g = Goal("p99", "<=", 3.0, [1.0, 2.0, 9.0, 2.5, 1.5, 2.0], [False, False, True])
    assert g.verdict == "PASS"
    assert g.median == 2.0
    assert "9.000*" in g.rounds_text()


def test_context_figure_is_not_judged():
    g = Goal("ratio", ">=", None, [1.0, 2.0])
    assert g.verdict == "no goal" and not g.judged


def test_ratio_within_each_round():
    assert per_round_ratio([2.0, 3.0, None], [1.0, 0.0, 1.0, 4.0]) == [2.0, None, None, None]


def test_table_flags_disturbed_rounds():
    t = goals_table([Goal("g", ">=", 0.5, [0.6] * 5, [True])])
    assert "0.600*" in t.markdown() and any("other load" in n for n in t.notes)
