import itertools

import numpy as np
import pytest

from judge_server.arena.bradley_terry import fit
from judge_server.arena.simulator import SimulatedJudge, play
from judge_server.arena.tournaments import DESIGNS, Verdict, make_tournament


def drive(tournament, judge, rng):
    """Play a tournament to the end; return the rounds of presentations."""
    rounds = []
    while pairs := tournament.next_round():
        rounds.append(pairs)
        ps = judge.judge(pairs, rng)
        tournament.record(Verdict(i, j, float(p)) for (i, j), p in zip(pairs, ps))
    return rounds


def make_judge(n, seed=0, **kw):
    return SimulatedJudge(np.random.default_rng(seed).normal(0, 1, n), **kw)


def test_live_uses_18_calls_for_8_traces_with_one_order():
    rng = np.random.default_rng(1)
    t = make_tournament("live", 8, order="random", rng=rng)
    rounds = drive(t, make_judge(8), rng)
    assert t.calls == 18
    assert len(rounds) == 7  # one round per arriving trace
    assert [len(r) for r in rounds] == [1, 2, 3, 3, 3, 3, 3]


def test_live_compares_new_trace_with_best_median_worst_of_running_fit():
    rng = np.random.default_rng(2)
    t = make_tournament("live", 6, order="random", rng=rng)
    judge = SimulatedJudge(np.array([3.0, -3.0, 0.0, 1.0, 0.5, 0.2]), soft=True)
    for _ in range(3):  # traces 1..3 meet every earlier trace
        pairs = t.next_round()
        t.record(Verdict(i, j, float(p)) for (i, j), p in zip(pairs, judge.judge(pairs, rng)))
    pairs = t.next_round()  # trace 4 arrives
    opponents = {i if j == 4 else j for i, j in pairs}
    fitted = t.fit().strengths[:4]
    order = np.argsort(fitted)
    assert opponents == {int(order[-1]), int(order[1]), int(order[0])}
    assert opponents == {0, 1, 2}  # best (0), worst (1), median of [1, 2, 3, 0] by strength


def test_round_robin_both_orders_presents_every_ordered_pair_once():
    t = make_tournament("round_robin", 5, order="both", rng=np.random.default_rng(0))
    pairs = t.next_round()
    assert sorted(pairs) == sorted(itertools.permutations(range(5), 2))


def test_random_order_presents_each_pair_once_in_both_directions_over_many_pairs():
    t = make_tournament("round_robin", 20, order="random", rng=np.random.default_rng(0))
    pairs = t.next_round()
    assert len(pairs) == 190
    assert len({(min(p), max(p)) for p in pairs}) == 190
    firsts_smaller = sum(i < j for i, j in pairs)
    assert 60 < firsts_smaller < 130  # both directions occur


def test_single_anchor_compares_everyone_with_trace_0():
    t = make_tournament("single_anchor", 6, order="random", rng=np.random.default_rng(0))
    pairs = t.next_round()
    assert {(min(p), max(p)) for p in pairs} == {(0, j) for j in range(1, 6)}


def test_swiss_never_repeats_a_pair():
    rng = np.random.default_rng(3)
    t = make_tournament("swiss", 16, order="random", rng=rng)
    rounds = drive(t, make_judge(16), rng)
    seen = [(min(p), max(p)) for r in rounds for p in r]
    assert len(seen) == len(set(seen))
    assert len(rounds) == 4


@pytest.mark.parametrize("design", sorted(DESIGNS))
@pytest.mark.parametrize("order", ["both", "random"])
def test_budget_caps_calls(design, order):
    rng = np.random.default_rng(4)
    t = make_tournament(design, 12, budget=7, order=order, rng=rng)
    drive(t, make_judge(12), rng)
    assert t.calls <= 7
    assert np.all(np.isfinite(t.strengths()))


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_max_budget_caps_the_given_and_the_designs_budget(design):
    natural = make_tournament(design, 1024, order="both").budget
    capped = make_tournament(design, 1024, order="both", max_budget=16_384).budget
    assert capped == min(natural, 16_384)
    assert make_tournament(design, 1024, budget=20_000, max_budget=16_384).budget == 16_384
    if design == "round_robin":
        assert natural == 1024 * 1023  # 523,776 pairs in both orders


def test_adaptive_default_budget_is_a_third_of_round_robin_both_orders():
    assert make_tournament("adaptive", 16).budget == 80
    assert make_tournament("adaptive", 8).budget == 18
    assert make_tournament("adaptive", 32).budget == 160  # capped at 5 calls per trace


def test_adaptive_first_round_is_a_cycle_that_connects_the_group():
    t = make_tournament("adaptive", 9, order="random", rng=np.random.default_rng(5))
    pairs = t.next_round()
    assert len(pairs) == 9
    degree = np.zeros(9)
    for i, j in pairs:
        degree[i] += 1
        degree[j] += 1
    assert np.all(degree == 2)


def test_adaptive_spends_calls_on_close_pairs():
    # Two clusters far apart: after the first cycle, the greedy rounds should mostly compare
    # traces inside a cluster, where the order is still uncertain.
    strengths = np.array([4.0, 4.1, 4.2, 4.3, -4.0, -4.1, -4.2, -4.3])
    judge = SimulatedJudge(strengths, soft=True)
    rng = np.random.default_rng(6)
    t = make_tournament("adaptive", 8, budget=40, order="random", rng=rng)
    rounds = drive(t, judge, rng)
    later = [p for r in rounds[1:] for p in r]
    within = sum((i < 4) == (j < 4) for i, j in later)
    assert within / len(later) > 0.7


def test_adaptive_uses_pool_anchors():
    rng = np.random.default_rng(7)
    t = make_tournament("adaptive", 6, anchor_strengths=[-1.0, 0.0, 1.0], rng=rng)
    judge = make_judge(9)
    rounds = drive(t, judge, rng)
    assert any(max(i, j) >= 6 for r in rounds for i, j in r)
    assert all(min(i, j) < 6 for r in rounds for i, j in r)  # never anchor against anchor


def test_fixed_anchors_hold_their_strengths():
    rng = np.random.default_rng(8)
    t = make_tournament(
        "round_robin", 4, anchor_strengths=[2.0, -2.0], anchor_mode="fixed", rng=rng
    )
    t.record([Verdict(0, 4, 1.0), Verdict(1, 5, 0.0)])
    assert t.fit().strengths[4:] == pytest.approx([2.0, -2.0])


def test_record_before_next_round_is_enforced_and_verdicts_checked():
    t = make_tournament("round_robin", 3, rng=np.random.default_rng(0))
    t.next_round()
    with pytest.raises(RuntimeError):
        t.next_round()
    with pytest.raises(ValueError, match="verdict.p"):
        t.record([Verdict(0, 1, 1.5)])
    with pytest.raises(ValueError, match="verdict"):
        t.record([Verdict(0, 9, 0.5)])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_traces": 1}, "n_traces"),
        ({"n_traces": 4, "budget": -1}, "budget"),
        ({"n_traces": 4, "order": "sideways"}, "order"),
        ({"n_traces": 4, "anchor_mode": "loose"}, "anchor_mode"),
        ({"n_traces": 4, "anchor_strengths": [float("nan")]}, "anchor_strengths"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    n = kwargs.pop("n_traces")
    with pytest.raises(ValueError, match=field):
        make_tournament("adaptive", n, **kwargs)


def test_unknown_design():
    with pytest.raises(ValueError, match="design"):
        make_tournament("knockout", 4)


def test_more_calls_recover_the_order_better():
    """Round-robin in both orders beats a single anchor on the simulator (paired trials)."""
    gaps = []
    for t in range(30):
        judge = make_judge(12, seed=t, position_bias=0.3)
        rr = play("round_robin", judge, 12, rng=np.random.default_rng(t), order="both")
        sa = play("single_anchor", judge, 12, rng=np.random.default_rng(t), order="random")
        gaps.append(rr.tau - sa.tau)
    assert np.mean(gaps) > 0.15


def test_play_recovers_a_clear_order_with_soft_verdicts():
    judge = SimulatedJudge(np.linspace(-3, 3, 8), soft=True)
    outcome = play("adaptive", judge, 8, rng=np.random.default_rng(0))
    assert outcome.tau > 0.9


@pytest.mark.parametrize("design", ["live", "round_robin", "single_anchor", "swiss"])
def test_other_designs_tie_each_trace_to_one_pool_anchor_in_the_first_round(design):
    rng = np.random.default_rng(9)
    t = make_tournament(design, 5, anchor_strengths=[-1.0, 1.0], order="random", rng=rng)
    first = t.next_round()
    with_anchor = sorted((min(p), max(p)) for p in first if max(p) >= 5)
    assert with_anchor == [(0, 5), (1, 6), (2, 5), (3, 6), (4, 5)]
    no_anchors = make_tournament(design, 5, order="random", rng=rng)
    assert t.budget == no_anchors.budget + 5


def _played(design, truth, n, **options):
    rng = np.random.default_rng(5)
    t = make_tournament(design, n, order="both", rng=rng, **options)
    judge = SimulatedJudge(np.asarray(truth, dtype=float), soft=True)
    while pairs := t.next_round():
        t.record(Verdict(i, j, float(p)) for (i, j), p in zip(pairs, judge.judge(pairs, rng)))
    return t


def test_without_anchors_the_fit_is_the_plain_one():
    t = _played("round_robin", [0.5, -1.0, 2.0, 0.0], 4)
    first, second, p = np.asarray(t._first), np.asarray(t._second), np.asarray(t._p)
    assert np.array_equal(t.fit().strengths, fit(4, first, second, p, lam=1.0).strengths)


def test_anchors_set_the_groups_level_and_keep_their_own():
    truth = [3.0, 3.5, 2.5, 3.2, 0.0, 0.3, -0.3]  # a group far above its anchors
    anchors = {"anchor_strengths": [0.0, 0.3, -0.3], "anchor_stderr": [0.2, 0.2, 0.2]}
    free = _played("round_robin", truth, 4, **anchors).fit()
    pinned = _played("round_robin", truth, 4, level_sd=0.0, **anchors).fit()
    assert free.strengths[:4].mean() > 2.0 > pinned.strengths[:4].mean() + 1.0
    moved = np.abs(free.strengths[4:] - [0.0, 0.3, -0.3]).max()
    assert moved < 0.2  # within their stderr
    loose = _played("round_robin", truth, 4, anchor_strengths=[0.0, 0.3, -0.3]).fit()
    assert np.abs(loose.strengths[4:] - [0.0, 0.3, -0.3]).max() > 2 * moved  # lam's prior


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"anchor_strengths": [0.0, 1.0], "anchor_stderr": [0.1]}, "anchor_stderr"),
     ({"level_sd": -1.0}, "level_sd")],
)
def test_bad_anchor_priors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_tournament("adaptive", 4, **kwargs)
