"""The cost benchmark's pure parts: the ideal prefix cache, hub orientation, the reach of a
curve, GSM8K-like groups (the run on a real engine is in tests/backends/test_bench_cost.py)."""

from __future__ import annotations

import pytest

from judge_server.bench import cost
from judge_server.bench.judge import DEFAULT_GSM8K_PATH
from judge_server.comparators.base import Comparison


def test_ideal_cache_counts_whole_blocks_and_never_the_last_token():
    shared = list(range(64))
    assert cost.ideal_uncached([shared + [100, 101], shared + [200, 201]], 32) == 66 + 2
    # The same prompt twice: its last token is computed again, so its last block is too.
    assert cost.ideal_uncached([shared, shared], 32) == 64 + 32
    assert cost.ideal_uncached([shared, shared], 1) == 64 + 1
    # A prefix shorter than a block is not shared.
    assert cost.ideal_uncached([[1, 2, 3, 4], [1, 2, 3, 5]], 32) == 8
    assert cost.ideal_uncached([[1, 2, 3, 4], [1, 2, 3, 5]], 1) == 5


def test_hub_orientation_puts_the_fewest_traces_first():
    star = [Comparison("p", leaf, "hub") for leaf in "abcd"] + [Comparison("q", "x", "y")]
    turned = cost.hub_oriented(star)
    assert [c.first for c in turned] == ["hub"] * 4 + ["x"]
    assert {frozenset((c.first, c.second)) for c in turned} == {
        frozenset((c.first, c.second)) for c in star}


def test_reach_interpolates_between_the_budgets_around_the_target():
    points = [{"budget": 10, "calls": 10.0, "tau": 0.2}, {"budget": 20, "calls": 18.0, "tau": 0.6}]
    assert cost.reach(points, 0.4) == {"calls": 14.0, "budget": 15, "reached": True}
    assert cost.reach(points, 0.1)["calls"] == 10.0
    assert cost.reach(points, 0.9) == {"calls": 18.0, "budget": 20, "reached": False}


def test_gsm8k_like_groups_have_distinct_traces():
    if not DEFAULT_GSM8K_PATH.exists():
        pytest.skip(f"GSM8K model solutions not found at {DEFAULT_GSM8K_PATH}")
    groups = cost.gsm8k_like_groups(3, 16)
    for group in groups:
        assert len(set(group["texts"])) == 16
        assert all(text.strip() and "<<" not in text for text in group["texts"])
