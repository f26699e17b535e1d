import numpy as np
import pytest

from judge_server.arena.advantages import from_strengths, group_relative, is_dead


def test_dead_groups_are_all_equal_rewards_of_two_or_more():
    assert is_dead([1.0, 1.0, 1.0])
    assert is_dead([0.0, 0.0])
    assert is_dead([1.0, 1.0 + 5e-7])
    assert not is_dead([1.0, 0.0, 1.0])
    assert not is_dead([1.0])  # a group of one is never routed
    assert not is_dead([1.0, 1.1], eps=0.05)
    assert is_dead([1.0, 1.1], eps=0.2)


def test_group_relative_matches_grpo_with_and_without_std():
    r = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    a = group_relative(r)
    assert a == pytest.approx((r - r.mean()) / (r.std() + 1e-4))
    assert group_relative(r, divide_by_std=False) == pytest.approx(r - r.mean())


@pytest.mark.parametrize("normalisation", ["minmax", "zscore", "raw"])
def test_advantages_from_strengths_are_zero_mean_and_ordered(normalisation):
    b = np.array([0.3, -1.2, 2.0, 0.0])
    a = from_strengths(b, normalisation=normalisation)
    assert a.mean() == pytest.approx(0.0, abs=1e-12)
    assert np.argsort(a).tolist() == np.argsort(b).tolist()


def test_minmax_is_the_paper_reward_centred_and_scale_multiplies():
    b = np.array([1.0, 3.0, 2.0])
    reward = (b - b.min()) / (b.max() - b.min())
    assert from_strengths(b) == pytest.approx(reward - reward.mean())
    assert from_strengths(b, scale=0.5) == pytest.approx(0.5 * (reward - reward.mean()))
    assert from_strengths(b, normalisation="zscore").std() == pytest.approx(1.0)
    assert from_strengths(b, normalisation="raw") == pytest.approx(b - b.mean())


def test_equal_strengths_give_zero_advantages():
    assert from_strengths([0.5, 0.5, 0.5]).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: is_dead([]), "rewards"),
        (lambda: is_dead([1.0, float("nan")]), r"rewards\[1\]"),
        (lambda: group_relative([1.0, float("inf")]), r"rewards\[1\]"),
        (lambda: from_strengths([1.0, 2.0], normalisation="rank"), "normalisation"),
        (lambda: from_strengths([1.0, 2.0], scale=float("nan")), "scale"),
        (lambda: from_strengths([]), "strengths"),
    ],
)
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()
