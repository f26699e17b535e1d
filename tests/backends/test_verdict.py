"""Verdicts from log-probabilities: the two-token rule and the top-k fallback."""

from __future__ import annotations

import math

import pytest

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


def test_a_missing_verdict_gets_the_smallest_listed_probability():
    entries = [("the", math.log(0.5)), (" A", math.log(0.3)), ("so", math.log(0.05))]
    verdict = verdict_from_top(entries, " A", " B")
    assert verdict.p == pytest.approx(0.3 / 0.35)
    assert verdict.found_a and not verdict.found_b and not verdict.undecided


def test_neither_verdict_listed_is_no_preference_and_counted():
    stats = JudgeStats()
    verdict = verdict_from_top([("the", -0.1), ("so", -3.0)], " A", " B")
    assert verdict.undecided and verdict.p == 0.5
    assert stats.add_top(verdict) == 0.5
    stats.add_top(verdict_from_top([(" A", -1.0), ("x", -2.0)], " A", " B"))
    assert stats.add_ids(-1.0, -2.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert (stats.comparisons, stats.undecided, stats.partial, stats.by_top, stats.by_id) == (
        3, 1, 1, 2, 1)
