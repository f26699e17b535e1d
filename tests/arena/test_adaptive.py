"""The default design: each question once, balanced positions, the anytime stop, large groups."""

import numpy as np
import pytest
from scipy.stats import kendalltau

from judge_server.arena.adaptive import DENSE_MAX_ITEMS, NEIGHBOURS, Adaptive
from judge_server.arena.simulator import SimulatedJudge, play
from judge_server.arena.tournaments import Verdict, make_tournament


def drive(tournament, judge, rng):
    presented = []
    while pairs := tournament.next_round():
        presented += pairs
        ps = judge.judge(pairs, rng)
        tournament.record(Verdict(i, j, float(p)) for (i, j), p in zip(pairs, ps))
    return presented


def judge_of(n, seed=0, **kw):
    return SimulatedJudge(np.random.default_rng(seed).normal(0, 1, n), **kw)


@pytest.mark.parametrize("order", ["random", "both"])
def test_never_asks_the_same_question_twice(order):
    # A budget larger than every order of every pair: the design runs out of new questions.
    rng = np.random.default_rng(1)
    t = make_tournament("adaptive", 5, budget=100, order=order, rng=rng)
    presented = drive(t, judge_of(5, position_bias=0.3), rng)
    assert len(presented) == len(set(presented))
    assert len(presented) == 5 * 4  # then it stops: every pair in both orders, once each


def test_positions_are_balanced_within_each_trace():
    ours = coin = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        t = make_tournament("adaptive", 16, order="random", rng=rng)
        presented = np.array(drive(t, judge_of(16), rng))
        first, second = (np.bincount(presented[:, k], minlength=16) for k in (0, 1))
        off = first - second
        assert np.abs(off).max() <= 4
        ours += np.abs(off).sum()
        # the same pairs oriented by a coin
        heads = np.random.default_rng(seed).random(len(presented)) < 0.5
        flipped = np.where(heads[:, None], presented, presented[:, ::-1])
        coin += np.abs(
            np.bincount(flipped[:, 0], minlength=16) - np.bincount(flipped[:, 1], minlength=16)
        ).sum()
    assert coin > 2 * ours


def test_balanced_positions_cancel_the_judges_position_bias():
    # Soft verdicts with a position bias: balance gives a better order than the coin of the
    # round-robin design at the same number of calls (paired on the same strengths).
    gains = []
    for seed in range(30):
        judge = judge_of(16, seed=seed, position_bias=0.6, soft=True)
        ours = play("adaptive", judge, 16, rng=np.random.default_rng(seed), order="random")
        coin = play("round_robin", judge, 16, rng=np.random.default_rng(seed),
                    order="random", budget=ours.calls)
        gains.append(ours.tau - coin.tau)
    assert np.mean(gains) > 0


def test_anytime_stop_ends_a_settled_group_early():
    # Far-apart strengths and soft verdicts: the order is clear after a few rounds.
    judge = SimulatedJudge(np.linspace(-6, 6, 12), soft=True)
    rng = np.random.default_rng(3)
    settled = make_tournament("adaptive", 12, budget=200, order="random", min_tau_gain=0.002,
                              rng=rng)
    assert isinstance(settled, Adaptive)
    drive(settled, judge, rng)
    assert settled.settled and settled.calls < 200
    assert kendalltau(settled.strengths(), judge.strengths).statistic > 0.9
    full = make_tournament("adaptive", 12, budget=60, order="random", rng=rng)
    assert isinstance(full, Adaptive)
    drive(full, judge, rng)
    assert not full.settled and full.calls == 60


def test_min_tau_gain_is_checked():
    with pytest.raises(ValueError, match="min_tau_gain"):
        make_tournament("adaptive", 4, min_tau_gain=-1.0)


def test_a_large_group_considers_near_linear_pairs():
    n = DENSE_MAX_ITEMS * 4
    rng = np.random.default_rng(4)
    t = make_tournament("adaptive", n, order="random", anchor_strengths=[0.0, 1.0], rng=rng)
    assert isinstance(t, Adaptive)
    judge = judge_of(n + 2)
    pairs = t.next_round()
    t.record(Verdict(i, j, float(p)) for (i, j), p in zip(pairs, judge.judge(pairs, rng)))
    ii, jj = t._candidates(t.fit().strengths)
    assert ii.size <= n * (NEIGHBOURS // 2 + 2)  # neighbours, and two anchors per trace
    assert np.all(ii < n)
    assert (jj >= n).any()  # anchors are candidates
    presented = drive(t, judge, rng) + pairs
    assert t.calls == t.budget and len(set(presented)) == len(presented)
    assert kendalltau(t.strengths(), judge.strengths[:n]).statistic > 0.5
