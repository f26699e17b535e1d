import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from judge_server.arena.advantages import (
    DEFAULT_NORMALISATION,
    EVIDENCE_CAP,
    NORMALISATIONS,
    from_strengths,
    group_relative,
    is_dead,
)
from judge_server.arena.bradley_terry import fit


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


def test_one_definition_the_clients_and_numpys_values():
    """The server's is_dead / group_relative / STD_EPS are the client's (issue 13); its arrays
    equal the client's tuples exactly and the vectorised numpy formula to float precision."""
    import trainer_client
    from judge_server.arena import advantages
    from judge_server.bench.learn import arms

    assert advantages.STD_EPS is trainer_client.STD_EPS == 1e-4
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=n) for n in (2, 3, 8, 16, 64)]
    groups += [rng.integers(0, 2, size=8).astype(float) for _ in range(20)]
    groups += [np.full(4, 1.0), np.array([0.1] * 7 + [0.2])]
    for r in groups:
        for divide in (True, False):
            ours = group_relative(r, divide_by_std=divide)
            assert ours.tolist() == list(trainer_client.group_relative(r.tolist(),
                                                                        divide_by_std=divide))
            centred = r - r.mean()
            numpy = centred / (r.std() + 1e-4) if divide else centred
            np.testing.assert_allclose(ours, numpy, rtol=1e-12, atol=1e-12)
        assert is_dead(r) == trainer_client.is_dead(r.tolist())
    batch = np.stack([g for g in groups if g.size == 8])
    np.testing.assert_array_equal(arms.group_relative(batch),
                                  np.stack([group_relative(g) for g in batch]))
    assert arms.dead(batch).tolist() == [is_dead(g) for g in batch]


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_advantages_from_strengths_are_zero_mean_and_ordered(normalisation):
    b = np.array([0.3, -1.2, 2.0, 0.0])
    a = from_strengths(b, normalisation=normalisation, stderr=np.full(4, 0.5))
    assert a.mean() == pytest.approx(0.0, abs=1e-12)
    assert np.argsort(a).tolist() == np.argsort(b).tolist()


def test_minmax_is_the_paper_reward_centred_and_scale_multiplies():
    b = np.array([1.0, 3.0, 2.0])
    reward = (b - b.min()) / (b.max() - b.min())
    minmax = from_strengths(b, normalisation="minmax")
    assert minmax == pytest.approx(reward - reward.mean())
    assert from_strengths(b, normalisation="minmax", scale=0.5) == pytest.approx(0.5 * minmax)
    assert from_strengths(b, normalisation="zscore").std() == pytest.approx(1.0)
    assert from_strengths(b, normalisation="raw") == pytest.approx(b - b.mean())


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_equal_strengths_give_zero_advantages(normalisation):
    a = from_strengths([0.5, 0.5, 0.5], normalisation=normalisation, stderr=[1.0, 1.0, 1.0])
    assert a.tolist() == [0.0, 0.0, 0.0]


# -- the evidence mapping, through the real fitter -----------------------------------------


def judged(n: int, p: float, *, both: bool):
    """A group of ``n`` traces where the judge prefers the lower index by ``p`` in every
    pair (a total order), once or in both orders; fitted as the service fits it."""
    first, second, ps = [], [], []
    for i, j in itertools.combinations(range(n), 2):
        first.append(i)
        second.append(j)
        ps.append(p)
        if both:
            first.append(j)
            second.append(i)
            ps.append(1.0 - p)
    return fit(n, first, second, ps)


def evidence(result, scale=1.0):
    return from_strengths(result.strengths, covariance=result.covariance, scale=scale)


MARGINS = [0.5, 0.536, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.987, 0.99]


def test_evidence_is_the_default():
    assert DEFAULT_NORMALISATION == "evidence"
    result = judged(3, 0.8, both=False)
    assert from_strengths(result.strengths, covariance=result.covariance) == pytest.approx(
        from_strengths(
            result.strengths, normalisation="evidence", covariance=result.covariance
        )
    )


@pytest.mark.parametrize("n", [2, 8])
@pytest.mark.parametrize("both", [False, True], ids=["one order", "both orders"])
def test_evidence_grows_with_the_judge_margin(n, both):
    sizes = []
    for p in MARGINS:
        a = evidence(judged(n, p, both=both))
        assert a.mean() == pytest.approx(0.0, abs=1e-12)
        assert np.abs(a).max() <= EVIDENCE_CAP + 1e-12
        assert np.all(np.diff(a) <= 0)  # the judge's order, best first
        sizes.append(float(np.abs(a).max()))
    assert sizes[0] == 0.0  # no preference, no advantage
    capped = [s >= EVIDENCE_CAP - 1e-9 for s in sizes]
    below = sizes[: capped.index(True) if any(capped) else len(sizes)]
    assert np.all(np.diff(below) > 0)  # strictly growing until the cap holds it there
    assert all(capped[len(below):])
    # a weak preference stays small, where minmax stretches it to the full range
    weak = judged(n, 0.536, both=both)
    assert np.abs(evidence(weak)).max() < 0.05
    assert np.ptp(from_strengths(weak.strengths, normalisation="minmax")) == pytest.approx(1.0)
    assert sizes[MARGINS.index(0.987)] > 10 * sizes[MARGINS.index(0.536)]


def test_evidence_is_larger_with_more_verdicts_behind_it():
    for p in MARGINS[1:]:
        once = np.abs(evidence(judged(2, p, both=False))).max()
        twice = np.abs(evidence(judged(2, p, both=True))).max()
        assert twice > once


def test_an_uncertain_strength_gets_less_than_a_certain_one_of_the_same_size():
    b = np.array([1.0, 1.0, -2.0])
    a = from_strengths(b, stderr=[0.2, 3.0, 0.2])
    assert 0 < a[1] < a[0]
    assert a.mean() == pytest.approx(0.0, abs=1e-12)


def test_evidence_cap_scales_the_group_as_a_whole_and_scale_multiplies():
    b = np.array([6.0, 2.0, 0.0, -8.0])  # certain and large: would exceed the cap
    a = from_strengths(b, stderr=np.full(4, 0.01))
    assert np.abs(a).max() == pytest.approx(EVIDENCE_CAP)
    assert a == pytest.approx((b - b.mean()) / 8.0 * EVIDENCE_CAP, abs=1e-9)  # ratios kept
    assert from_strengths(b, stderr=np.full(4, 0.01), scale=0.25) == pytest.approx(0.25 * a)


def test_evidence_from_covariance_or_stderr():
    result = judged(4, 0.9, both=False)
    by_cov = from_strengths(result.strengths, covariance=result.covariance)
    by_se = from_strengths(result.strengths, stderr=result.stderr)
    assert np.argsort(by_cov).tolist() == np.argsort(by_se).tolist()
    # stderr include the uncertainty of the group's level, which centring removes: the
    # covariance sees more certainty, so it shrinks less
    assert np.abs(by_cov).max() > np.abs(by_se).max()


@settings(max_examples=80, deadline=None)
@given(
    strengths=st.lists(st.floats(-20, 20), min_size=2, max_size=12),
    data=st.data(),
)
def test_evidence_is_zero_mean_bounded_and_shift_invariant(strengths, data):
    b = np.array(strengths)
    se = np.array(data.draw(st.lists(st.floats(0.0, 5.0), min_size=b.size, max_size=b.size)))
    scale = data.draw(st.floats(0.0, 3.0))
    a = from_strengths(b, stderr=se, scale=scale)
    assert abs(a.mean()) <= 1e-9 * max(1.0, scale)
    assert np.abs(a).max() <= scale * EVIDENCE_CAP * (1 + 1e-12)
    assert from_strengths(b + 3.0, stderr=se, scale=scale) == pytest.approx(a, abs=1e-9)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: is_dead([]), "rewards"),
        (lambda: is_dead([1.0, float("nan")]), r"rewards\[1\]"),
        (lambda: group_relative([1.0, float("inf")]), r"rewards\[1\]"),
        (lambda: from_strengths([1.0, 2.0], normalisation="rank"), "normalisation"),
        (lambda: from_strengths([1.0, 2.0], scale=float("nan")), "scale"),
        (lambda: from_strengths([], stderr=[]), "strengths"),
        (lambda: from_strengths([1.0, 2.0]), "covariance"),  # evidence needs the uncertainty
        (lambda: from_strengths([1.0, 2.0], covariance=np.eye(3)), "covariance"),
        (lambda: from_strengths([1.0, 2.0], stderr=[1.0, -1.0]), "stderr"),
    ],
)
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()
