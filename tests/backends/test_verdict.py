"""Verdicts from log-probabilities: the two-token rule and the top-k fallback."""

from __future__ import annotations

import math

import pytest

from judge_server.comparators.base import UNREAD, is_unread
from judge_server.comparators.verdict import (
    JudgeStats,
    verdict_from_top,
    verdict_probability,
)


def test_p_is_the_verdicts_share_of_their_mass():
    assert verdict_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert verdict_probability(-1.0, -1.0) == 0.5
    assert verdict_probability(-2.0, -5.0) == pytest.approx(1 - verdict_probability(-5.0, -2.0))
    assert verdict_probability(0.0, -1000.0) == 1.0
    assert verdict_probability(-1000.0, 0.0) == 0.0
    assert verdict_probability(-math.inf, -math.inf) == 0.5
    assert verdict_probability(-math.inf, -3.0) == 0.0
    assert verdict_probability(float("nan"), -3.0) == 0.5


def test_top_k_by_text_sums_spellings_of_a_verdict():
    entries = [(" A", math.log(0.2)), ("A", math.log(0.1)), (" B", math.log(0.1)),
               ("the", math.log(0.5))]
    verdict = verdict_from_top(entries, " A", " B")
    assert verdict.p == pytest.approx(0.75) and verdict.found_a and verdict.found_b


def test_top_k_by_id():
    verdict = verdict_from_top([(7, math.log(0.4)), (9, math.log(0.1)), (3, -0.1)], 7, 9)
    assert verdict.p == pytest.approx(0.8)


def test_both_verdicts_listed_need_no_bound():
    entries = [(" A", math.log(0.6)), (" B", math.log(0.2))]  # 0.2 left over: not used
    verdict = verdict_from_top(entries, " A", " B")
    assert verdict.p == pytest.approx(0.75)
    assert verdict.found_a and verdict.found_b and not is_unread(verdict.p)


def test_a_missing_verdict_gets_the_smallest_listed_probability_when_that_is_less():
    # 0.15 is left over, but B is not listed so it is below the 0.05 of "so"
    entries = [("the", math.log(0.5)), (" A", math.log(0.3)), ("so", math.log(0.05))]
    verdict = verdict_from_top(entries, " A", " B")
    assert verdict.p == pytest.approx(0.3 / 0.35)
    assert verdict.found_a and not verdict.found_b and not verdict.undecided


def test_a_missing_verdict_gets_what_the_listed_tokens_leave_when_that_is_less():
    entries = [(" B", math.log(0.6)), ("the", math.log(0.35))]  # 0.05 left for A
    verdict = verdict_from_top(entries, " A", " B")
    assert verdict.p == pytest.approx(0.05 / 0.65)
    assert verdict.found_b and not verdict.found_a and not verdict.undecided


@pytest.mark.parametrize(
    ("logprob", "p"),
    [
        (-1e-4, 1.0 / (1.0 + (1.0 - math.exp(-1e-4)) / math.exp(-1e-4))),  # ~0.9999
        (math.log(0.9), 0.9),  # B <= 0.1
        (math.log(0.5), 0.5),  # B <= 0.5: as likely as A at most
        (math.log(0.2), 0.5),  # B <= 0.2 (not 0.8: the list is the top one)
        (0.0, 1.0),  # A has all the mass: B has none
    ],
)
def test_top_1_bounds_the_missing_verdict(logprob, p):
    verdict = verdict_from_top([(" A", logprob)], " A", " B")
    assert verdict.p == pytest.approx(p, abs=1e-12)
    assert verdict.found_a and not verdict.found_b and not is_unread(verdict.p)
    flipped = verdict_from_top([(" B", logprob)], " A", " B")
    assert flipped.p == pytest.approx(1.0 - p, abs=1e-12)


def test_top_1_of_a_sure_judge_is_a_sure_verdict_not_a_tie():
    verdict = verdict_from_top([(" A", -1e-4)], " A", " B")
    assert verdict.p > 0.9998


def test_a_missing_verdict_never_makes_the_listed_one_less_likely_than_a_tie():
    for lp in (-0.01, -0.7, -2.0, -5.0):
        for k in range(1, 5):
            entries = [(" A", lp)] + [(f"t{i}", lp - 0.1 * (i + 1)) for i in range(k - 1)]
            assert verdict_from_top(entries, " A", " B").p >= 0.5


def test_neither_verdict_listed_is_no_preference_and_counted():
    stats = JudgeStats()
    verdict = verdict_from_top([("the", -0.1), ("so", -3.0)], " A", " B")
    assert verdict.undecided and verdict.p == 0.5 and is_unread(verdict.p)
    assert verdict.p is UNREAD
    assert is_unread(stats.add_top(verdict))
    assert not is_unread(0.5) and not is_unread(verdict_from_top([], " A", " B").p - 0.0)
    stats.add_top(verdict_from_top([(" A", -1.0), ("x", -2.0)], " A", " B"))
    assert stats.add_ids(-1.0, -2.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert (stats.comparisons, stats.undecided, stats.partial, stats.by_top, stats.by_id) == (
        3, 1, 1, 2, 1)
