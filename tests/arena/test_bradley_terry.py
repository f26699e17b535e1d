"""Tests for :mod:`judge_server.arena.bradley_terry`.

Golden values come from ``choix`` (an independent implementation), from analytic solutions and
from finite differences of an independently written gradient; properties (relabelling, anchor
shifts, monotonicity) are checked with hypothesis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import expit

from judge_server.arena.bradley_terry import NEWTON_MAX_FREE, Fit, fit

choix = pytest.importorskip("choix")


# ---------------------------------------------------------------------------------------------
# Helpers


def random_graph(rng: np.random.Generator, n: int, per_item: int = 4):
    """A connected comparison graph with ``per_item * n`` comparisons and hard BT outcomes.

    A random cycle keeps it connected; the rest are random pairs. Returns ``first, second, p``
    (``p`` in {0, 1}: whether ``first`` won) and the true strengths.
    """
    cycle = rng.permutation(n)
    extra = per_item * n - n
    first = np.concatenate([cycle, rng.integers(0, n, extra)])
    second = np.concatenate([np.roll(cycle, 1), rng.integers(0, n, extra)])
    keep = first != second
    first, second = first[keep], second[keep]
    beta = rng.normal(size=n)
    p = (rng.random(first.size) < expit(beta[first] - beta[second])).astype(float)
    return first, second, p, beta


def choix_data(first, second, p):
    return [(int(i), int(j)) if won else (int(j), int(i)) for i, j, won in zip(first, second, p)]


def reference_gradient(beta, first, second, p, lam, prior_mean):
    """The objective's gradient, written independently of the module (np.add.at, no bincount)."""
    d = beta[first] - beta[second]
    r = expit(d) - p
    g = lam * (beta - prior_mean)
    np.add.at(g, first, r)
    np.add.at(g, second, -r)
    return g


def centred(x):
    return x - x.mean()


# ---------------------------------------------------------------------------------------------
# Agreement with choix and between solvers


@pytest.mark.parametrize("n", [8, 16, 32, 64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_choix_opt_pairwise(n, seed):
    rng = np.random.default_rng(seed)
    first, second, p, _ = random_graph(rng, n)
    ours = fit(n, first, second, p, lam=1.0)
    # choix minimises alpha ||theta||^2 + sum log(1 + exp(theta_lose - theta_win)): lam = 2 alpha
    theirs = choix.opt_pairwise(
        n, choix_data(first, second, p), alpha=0.5, tol=1e-10, max_iter=1000
    )
    assert ours.converged
    assert np.max(np.abs(centred(ours.strengths) - centred(theirs))) <= 1e-4


@pytest.mark.parametrize("n", [8, 32, 128])
@pytest.mark.parametrize("seed", [0, 1])
def test_dense_newton_matches_the_large_graph_path(n, seed):
    rng = np.random.default_rng(seed)
    first, second, p, _ = random_graph(rng, n)
    p = np.clip(p + rng.uniform(-0.3, 0.3, p.size), 0.0, 1.0)  # soft outcomes
    newton = fit(n, first, second, p, lam=0.5, method="newton")
    other = fit(n, first, second, p, lam=0.5, method="newton-cg")
    assert newton.converged and other.converged
    assert np.max(np.abs(newton.strengths - other.strengths)) <= 1e-5
    assert other.covariance is None
    # the large-graph stderr is 1/sqrt(diag(H)): a lower bound on the Laplace value
    assert np.all(other.stderr <= newton.stderr + 1e-9)


def test_auto_uses_the_scalable_path_on_a_large_graph():
    n = 500
    assert n > NEWTON_MAX_FREE
    rng = np.random.default_rng(7)
    first, second, p, _ = random_graph(rng, n)
    auto = fit(n, first, second, p)
    dense = fit(n, first, second, p, method="newton")
    assert auto.converged and dense.converged
    assert auto.covariance is None  # only the dense Newton path forms H^-1
    assert dense.covariance is not None
    assert np.max(np.abs(auto.strengths - dense.strengths)) <= 1e-6
    # with a few fixed anchors the free count drops under the threshold: dense Newton again
    anchors = {i: 0.0 for i in range(n - NEWTON_MAX_FREE)}
    assert fit(n, first, second, p, fixed=anchors).covariance is not None
    # a full prior precision (a tournament with pool anchors) keeps the dense path
    assert fit(n, first, second, p, prior_precision=np.eye(n)).covariance is not None


# ---------------------------------------------------------------------------------------------
# Soft outcomes and analytic cases


@pytest.mark.parametrize("prior_mean", [0.0, 0.7])
def test_ties_everywhere_give_the_prior_mean(prior_mean):
    # With p = 0.5 on every comparison and the same prior mean for every item, b = prior mean
    # is stationary (every s(b_i - b_j) = 0.5), so it is the unique optimum.
    rng = np.random.default_rng(3)
    first, second, _, _ = random_graph(rng, 12)
    result = fit(12, first, second, np.full(first.size, 0.5), prior_mean=prior_mean)
    assert result.converged
    np.testing.assert_allclose(result.strengths, prior_mean, atol=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("lam", [0.1, 1.0, 4.0])
@pytest.mark.parametrize("times", [1, 3])
def test_two_items_match_the_analytic_optimum(p, lam, times):
    # The same comparison `times` times: by symmetry b0 = x = -b1 with
    # times (s(2x) - p) + lam x = 0.
    weight = float(times)

    def stationarity(x):
        return weight * (expit(2 * x) - p) + lam * x

    x = brentq(stationarity, -50, 50, xtol=1e-15)
    result = fit(2, [0] * times, [1] * times, [p] * times, lam=lam)
    assert result.converged
    np.testing.assert_allclose(result.strengths, [x, -x], atol=1e-10)
    # H = [[h + lam, -h], [-h, h + lam]], so diag(H^-1) = (h + lam) / (lam (2h + lam))
    s = expit(2 * x)
    h = weight * s * (1 - s)
    expected = math.sqrt((h + lam) / (lam * (2 * h + lam)))
    np.testing.assert_allclose(result.stderr, [expected, expected], rtol=1e-6)


def test_laplace_stderr_matches_finite_difference_hessian():
    rng = np.random.default_rng(11)
    n = 7
    first, second, p, _ = random_graph(rng, n, per_item=3)
    p = np.clip(p + rng.uniform(-0.4, 0.4, p.size), 0, 1)
    prior = rng.normal(size=n)
    lam = 0.8
    fixed = {2: 0.3}
    result = fit(n, first, second, p, lam=lam, prior_mean=prior, fixed=fixed)
    beta = np.asarray(result.strengths)
    free = np.array([i for i in range(n) if i not in fixed])

    def grad_free(x):
        b = beta.copy()
        b[free] = x
        return reference_gradient(b, first, second, p, lam, prior)[free]

    # stationary: the free gradient vanishes at the fit
    assert np.max(np.abs(grad_free(beta[free]))) <= 1e-9
    eps = 1e-5
    H = np.empty((free.size, free.size))
    for k in range(free.size):
        e = np.zeros(free.size)
        e[k] = eps
        H[:, k] = (grad_free(beta[free] + e) - grad_free(beta[free] - e)) / (2 * eps)
    cov = np.linalg.inv((H + H.T) / 2)
    assert result.covariance is not None
    np.testing.assert_allclose(result.covariance[np.ix_(free, free)], cov, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(result.stderr[free], np.sqrt(np.diag(cov)), rtol=1e-5)
    assert result.stderr[2] == 0.0
    assert not result.covariance[2].any() and not result.covariance[:, 2].any()


# ---------------------------------------------------------------------------------------------
# Degenerate graphs


@pytest.mark.parametrize("lam", [1e-3, 1.0])
@pytest.mark.parametrize("method", ["newton", "newton-cg"])
def test_disconnected_graph_with_an_item_that_wins_everything(lam, method):
    # component {0, 1, 2, 3}: item 0 beats everyone, twice; component {4, 5}; item 6 alone
    first = [0, 0, 0, 0, 0, 0, 1, 4]
    second = [1, 2, 3, 1, 2, 3, 2, 5]
    p = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.4]
    result = fit(7, first, second, p, lam=lam, method=method)
    assert result.converged
    assert np.all(np.isfinite(result.strengths)) and np.all(np.isfinite(result.stderr))
    assert int(np.argmax(result.strengths)) == 0
    assert result.strengths[6] == pytest.approx(0.0, abs=1e-9)  # no data: the prior mean
    # each component is centred on the prior mean (the data gradient sums to zero in it)
    assert result.strengths[:4].sum() == pytest.approx(0.0, abs=1e-6)
    assert result.strengths[4:6].sum() == pytest.approx(0.0, abs=1e-6)


def test_zero_comparisons_return_the_prior_mean():
    prior = np.array([0.5, -1.0, 2.0])
    result = fit(3, [], [], [], prior_mean=prior, lam=4.0)
    assert isinstance(result, Fit)
    assert result.converged
    np.testing.assert_array_equal(result.strengths, prior)
    np.testing.assert_allclose(result.stderr, 0.5)  # 1 / sqrt(lam)
    assert fit(1, [], [], []).strengths.tolist() == [0.0]


def test_results_are_read_only():
    result = fit(3, [0, 1], [1, 2], [0.9, 0.6])
    assert result.covariance is not None
    for array in (result.strengths, result.stderr, result.covariance):
        with pytest.raises(ValueError):
            array[0] = 1.0


# ---------------------------------------------------------------------------------------------
# Fixed anchors and prior means


def test_fixed_anchors_keep_their_value_exactly():
    rng = np.random.default_rng(5)
    n = 10
    first, second, p, _ = random_graph(rng, n)
    anchors = {0: 1.25, 4: -0.75, 9: 3.0}
    result = fit(n, first, second, p, fixed=anchors)
    assert result.converged
    for item, value in anchors.items():
        assert result.strengths[item] == value
        assert result.stderr[item] == 0.0
    free = np.ones(n, dtype=bool)
    free[list(anchors)] = False
    unanchored = fit(n, first, second, p)
    assert np.max(np.abs(result.strengths[free] - unanchored.strengths[free])) > 1e-3


def test_every_item_fixed_leaves_nothing_to_fit():
    result = fit(3, [0, 1], [1, 2], [0.8, 0.3], fixed={0: 1.0, 1: 2.0, 2: 3.0})
    assert result.converged and result.iterations == 0
    assert result.strengths.tolist() == [1.0, 2.0, 3.0]
    assert result.covariance is not None
    assert not result.stderr.any() and not result.covariance.any()


def test_the_large_graph_path_handles_anchors_and_prior_means():
    rng = np.random.default_rng(8)
    n = 40
    first, second, p, _ = random_graph(rng, n)
    anchors = {3: 1.0, 17: -2.0, 30: 0.5}
    prior = rng.normal(size=n)
    kwargs: dict[str, Any] = {"lam": 0.6, "prior_mean": prior, "fixed": anchors}
    newton = fit(n, first, second, p, method="newton", **kwargs)
    other = fit(n, first, second, p, method="newton-cg", **kwargs)
    assert other.converged
    assert np.max(np.abs(newton.strengths - other.strengths)) <= 1e-5
    for item, value in anchors.items():
        assert other.strengths[item] == value and other.stderr[item] == 0.0


def test_an_item_that_beats_a_high_anchor_moves_up_with_it():
    # item 1 beats the anchor (item 0) in a soft way; raising the anchor raises item 1
    low = fit(2, [1], [0], [0.8], fixed={0: 0.0}, lam=1.0)
    high = fit(2, [1], [0], [0.8], fixed={0: 2.0}, lam=1.0)
    assert high.strengths[1] > low.strengths[1]


def test_a_known_strength_as_a_prior_mean_is_soft():
    # As a prior mean the known value only pulls; the data may move the item away from it.
    result = fit(2, [0, 0, 0], [1, 1, 1], [1.0, 1.0, 1.0], prior_mean=[0.0, 2.0], lam=1.0)
    assert 0.0 < result.strengths[0] and result.strengths[1] < 2.0
    assert result.stderr[1] > 0.0


# ---------------------------------------------------------------------------------------------
# Properties


@st.composite
def graphs(draw, min_items=2, max_items=9, max_comparisons=24):
    n = draw(st.integers(min_items, max_items))
    m = draw(st.integers(0, max_comparisons))
    pairs = draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, n - 1)), min_size=m, max_size=m)
    )
    first = np.array([i for i, _ in pairs], dtype=np.int64)
    second = np.array([(i + k) % n for i, k in pairs], dtype=np.int64)  # never equal to first
    unit = st.floats(0.0, 1.0, allow_nan=False)
    p = np.array(draw(st.lists(unit, min_size=m, max_size=m)), dtype=float)
    lam = draw(st.sampled_from([0.25, 1.0, 3.0]))
    return n, first, second, p, lam


@settings(max_examples=60, deadline=None)
@given(graph=graphs(), data=st.data())
def test_relabelling_items_permutes_the_strengths(graph, data):
    n, first, second, p, lam = graph
    perm = np.array(data.draw(st.permutations(range(n))))  # item i becomes perm[i]
    prior = np.array(data.draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n)))
    relabelled_prior = np.empty(n)
    relabelled_prior[perm] = prior
    original = fit(n, first, second, p, lam=lam, prior_mean=prior)
    relabelled = fit(n, perm[first], perm[second], p, lam=lam, prior_mean=relabelled_prior)
    np.testing.assert_allclose(relabelled.strengths[perm], original.strengths, atol=1e-8)
    np.testing.assert_allclose(relabelled.stderr[perm], original.stderr, atol=1e-8)


@settings(max_examples=60, deadline=None)
@given(graph=graphs(), data=st.data())
def test_shifting_anchors_and_prior_mean_shifts_every_free_strength(graph, data):
    # The likelihood only sees differences b_i - b_j, so adding c to every strength leaves it
    # unchanged; the prior term (b_i - prior_mean_i)^2 is unchanged only if the prior means of
    # the free items shift by c too. Hence: fixed values + c and free prior means + c give
    # free strengths + c. (Shifting the anchors alone does not: the prior pulls back to 0.)
    n, first, second, p, lam = graph
    n_fixed = data.draw(st.integers(1, n - 1))
    anchors = data.draw(st.permutations(range(n)))[:n_fixed]
    values = data.draw(st.lists(st.floats(-3, 3), min_size=n_fixed, max_size=n_fixed))
    prior = np.array(data.draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n)))
    c = data.draw(st.floats(-5, 5))
    base = fit(n, first, second, p, lam=lam, prior_mean=prior, fixed=dict(zip(anchors, values)))
    shifted = fit(
        n,
        first,
        second,
        p,
        lam=lam,
        prior_mean=prior + c,
        fixed={a: v + c for a, v in zip(anchors, values)},
    )
    np.testing.assert_allclose(shifted.strengths, base.strengths + c, atol=1e-8)
    np.testing.assert_allclose(shifted.stderr, base.stderr, atol=1e-8)


@settings(max_examples=80, deadline=None)
@given(graph=graphs(), data=st.data())
def test_a_more_favourable_outcome_never_lowers_the_strength(graph, data):
    n, first, second, p, lam = graph
    base = fit(n, first, second, p, lam=lam)
    if first.size:
        # raise p of one comparison: its first item cannot go down, its second cannot go up
        k = data.draw(st.integers(0, first.size - 1))
        raised = p.copy()
        raised[k] = data.draw(st.floats(p[k], 1.0))
        better = fit(n, first, second, raised, lam=lam)
        assert better.strengths[first[k]] >= base.strengths[first[k]] - 1e-9
        assert better.strengths[second[k]] <= base.strengths[second[k]] + 1e-9
    # add a win for item i over j (in either presentation order)
    i = data.draw(st.integers(0, n - 1))
    j = (i + data.draw(st.integers(1, n - 1))) % n
    i_first = data.draw(st.booleans())
    extra = ([i], [j], [1.0]) if i_first else ([j], [i], [0.0])
    more = fit(
        n,
        np.concatenate([first, extra[0]]),
        np.concatenate([second, extra[1]]),
        np.concatenate([p, extra[2]]),
        lam=lam,
    )
    assert more.strengths[i] >= base.strengths[i] - 1e-9


# ---------------------------------------------------------------------------------------------
# Bad input

GOOD = {"n_items": 3, "first": [0, 1], "second": [1, 2], "p": [0.9, 0.4]}
NAN, INF = float("nan"), float("inf")

BAD_INPUTS = [
    ({"n_items": 0}, "n_items"),
    ({"n_items": -2}, "n_items"),
    ({"n_items": 2.5}, "n_items"),
    ({"n_items": True}, "n_items"),
    ({"first": [0, 3]}, "first"),
    ({"first": [-1, 1]}, "first"),
    ({"first": [0.0, 1.0]}, "first"),
    ({"first": [[0, 1]]}, "first"),
    ({"first": [0, 1, 2]}, "second"),  # lengths differ: reported on the later field
    ({"second": [1, 7]}, "second"),
    ({"second": [1, 0.5]}, "second"),
    ({"second": [1, 1]}, "second"),
    ({"second": [0, 2]}, "second"),  # comparison 0 compares item 0 with itself
    ({"p": [0.9]}, "p"),
    ({"p": [1.5, 0.4]}, "p"),
    ({"p": [-0.1, 0.4]}, "p"),
    ({"p": [NAN, 0.4]}, "p"),
    ({"p": ["a", 0.4]}, "p"),
    ({"prior_mean": [0.0, NAN, 0.0]}, "prior_mean"),
    ({"prior_mean": INF}, "prior_mean"),
    ({"prior_mean": [0.0, 1.0]}, "prior_mean"),
    ({"fixed": {0: NAN}}, "fixed"),
    ({"fixed": {0: INF}}, "fixed"),
    ({"fixed": {3: 1.0}}, "fixed"),
    ({"fixed": {"0": 1.0}}, "fixed"),
    ({"fixed": [0, 1.0]}, "fixed"),
    ({"fixed": {True: 1.0}}, "fixed"),
    ({"lam": 0.0}, "lam"),
    ({"lam": -1.0}, "lam"),
    ({"lam": NAN}, "lam"),
    ({"lam": INF}, "lam"),
    ({"lam": 1e-300}, "lam"),  # issue 14: a singular Hessian (a 500 for every dead group)
    ({"lam": 1e300}, "lam"),
    ({"lam": "1"}, "lam"),
    ({"method": "lbfgs"}, "method"),
]


@pytest.mark.parametrize(("change", "field"), BAD_INPUTS)
def test_bad_input_names_the_field(change, field):
    # pure numeric code: a plain ValueError, which the service and transports do not mistake
    # for a client's bad request (their InvalidRequest)
    kwargs = {**GOOD, **change}
    with pytest.raises(ValueError, match=rf"^{field}: ") as info:
        fit(**kwargs)
    assert type(info.value) is ValueError


# ---------------------------------------------------------------------------------------------
# A full prior precision (a tournament with pool anchors)


def test_a_prior_precision_of_lam_times_identity_is_the_plain_fit_exactly():
    rng = np.random.default_rng(11)
    first, second, p, _ = random_graph(rng, 9)
    for fixed in (None, {8: 0.7}):
        plain = fit(9, first, second, p, lam=0.6, prior_mean=0.2, fixed=fixed)
        full = fit(9, first, second, p, lam=0.6, prior_mean=0.2, fixed=fixed,
                   prior_precision=0.6 * np.eye(9))
        assert np.array_equal(plain.strengths, full.strengths)
        assert plain.covariance is not None and full.covariance is not None
        assert np.array_equal(plain.covariance, full.covariance)


def test_a_full_prior_precision_is_what_the_fit_minimises():
    rng = np.random.default_rng(12)
    n = 7
    first, second, p, _ = random_graph(rng, n)
    a = rng.normal(size=(n, n))
    precision = a @ a.T / n + 0.3 * np.eye(n)
    prior_mean = rng.normal(size=n)
    result = fit(n, first, second, p, prior_mean=prior_mean, prior_precision=precision)
    b = result.strengths
    g = reference_gradient(b, first, second, p, 0.0, prior_mean)
    g += precision @ (b - prior_mean)
    np.testing.assert_allclose(g, 0.0, atol=1e-8)
    d = expit(b[first] - b[second])
    h = np.zeros((n, n))
    np.add.at(h, (first, first), d * (1 - d))
    np.add.at(h, (second, second), d * (1 - d))
    np.add.at(h, (first, second), -d * (1 - d))
    np.add.at(h, (second, first), -d * (1 - d))
    assert result.covariance is not None
    np.testing.assert_allclose(result.covariance, np.linalg.inv(h + precision), atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"prior_precision": np.eye(2)}, "shape"),
     ({"prior_precision": [[1.0, 2.0, 0], [0, 1.0, 0], [0, 0, 1.0]]}, "symmetric"),
     ({"prior_precision": -np.eye(3)}, "positive definite"),
     ({"prior_precision": np.eye(3), "method": "newton-cg"}, "newton")],
)
def test_a_bad_prior_precision_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=rf"^prior_precision: .*{message}|^method: .*{message}"):
        fit(3, [0, 1], [1, 2], [0.9, 0.7], **kwargs)


# ---------------------------------------------------------------------------------------------
# Pinned values: what the fitter gave before it was cut down to what production calls
# (issue 13), on the inputs production gives it: a plain group, fixed anchors with prior
# means, a tournament's anchored prior precision, and a group above NEWTON_MAX_FREE.

PIN_FIRST = [0, 1, 2, 3, 4, 0, 2, 1, 4, 0]
PIN_SECOND = [1, 2, 3, 4, 0, 2, 4, 3, 1, 3]
PIN_P = [0.9, 0.3, 0.75, 1.0, 0.2, 0.6, 0.5, 0.05, 0.85, 0.4]
PINNED = {
    "plain": (
        [0.3200196365998199, -0.6437606054802145, 0.1603978285723148, 0.3659351193566166,
         -0.20259197904853682],
        [0.7547957809334981, 0.7672100655297768, 0.7520130187175128, 0.7559523882454776,
         0.7528855707639147],
        [[0.5697166709150092, 0.10016595139005154, 0.11097383238297798, 0.11138630361367709,
          0.10775724169828411],
         [0.10016595139005154, 0.5886112846502043, 0.10323973772486647, 0.09922088366945717,
          0.10876214256542036],
         [0.11097383238297798, 0.10323973772486647, 0.5655235803206262, 0.11077385796128174,
          0.10948899161024739],
         [0.11138630361367709, 0.09922088366945717, 0.11077385796128174, 0.5714640132940414,
          0.10715494146154257],
         [0.10775724169828411, 0.10876214256542036, 0.10948899161024739, 0.10715494146154257,
          0.5668366826645056]],
    ),
    "fixed": (
        [0.4038336531352046, -0.6704569896742358, 0.37671464139581434, 0.5486698063060659,
         0.8, -0.3],
        [0.7623626107313592, 0.8675942152611857, 0.8145598243652423, 0.7581879860589988,
         0.0, 0.0],
        [[0.5811967502411339, 0.10713619193220696, 0.11751553723604853, 0.10324643578310562,
          0.0, 0.0],
         [0.10713619193220696, 0.7527197223546728, 0.12069885751974967, 0.10140144452453614,
          0.0, 0.0],
         [0.11751553723604853, 0.12069885751974967, 0.6635077074699344, 0.11534622999329312,
          0.0, 0.0],
         [0.10324643578310562, 0.10140144452453614, 0.11534622999329312, 0.5748490222042006,
          0.0, 0.0],
         [0.0] * 6,
         [0.0] * 6],
    ),
    "precision": (
        [0.9843062408528269, 0.20276860343026662, 0.2974109203805198, 0.6977308031174477,
         0.8608895106041876, 0.02449015845403184],
        [1.1822706673928474, 1.2364696397889396, 1.1224996843719723, 1.2428395723193848,
         0.4857504817671973, 0.8802990158216355],
        [[1.3977639309775287, 0.9608082207646216, 0.8849154807717888, 0.9768644364680741,
          0.12335830330832177, 0.39250321733476684],
         [0.9608082207646216, 1.52885717011979, 0.9260090598245405, 0.9520790987825709,
          0.10118863388974826, 0.47719807121150626],
         [0.8849154807717888, 0.9260090598245405, 1.2600055414151774, 0.9304951541027988,
          0.11420268097527346, 0.4350426480958168],
         [0.9768644364680741, 0.9520790987825709, 0.9304951541027988, 1.5446502025230315,
          0.10231264687355544, 0.47171998299560336],
         [0.12335830330832177, 0.10118863388974826, 0.11420268097527346, 0.10231264687355544,
          0.2359535305370643, 0.04426527609371845],
         [0.39250321733476684, 0.47719807121150626, 0.4350426480958168, 0.47171998299560336,
          0.04426527609371845, 0.77492635725654]],
    ),
}


def _pinned_fit(case: str) -> Fit:
    if case == "plain":
        return fit(5, PIN_FIRST, PIN_SECOND, PIN_P, lam=1.0)
    if case == "fixed":
        return fit(
            6,
            [*PIN_FIRST, 5, 5, 4],
            [*PIN_SECOND, 0, 4, 3],
            [*PIN_P, 0.7, 0.1, 0.9],
            lam=0.7,
            prior_mean=[0.1, -0.2, 0.0, 0.3, 0.8, -0.3],
            fixed={4: 0.8, 5: -0.3},
        )
    # four traces and two anchors with the prior a tournament gives them
    from judge_server.arena.tournament import _anchored_precision

    return fit(
        6,
        [0, 1, 2, 3, 0, 1, 2, 3, 0, 2],
        [1, 2, 3, 0, 4, 5, 4, 5, 2, 5],
        [0.8, 0.6, 0.3, 0.45, 0.9, 0.2, 0.55, 0.7, 0.65, 0.35],
        lam=1.0,
        prior_mean=[0.25] * 4 + [1.0, -0.5],
        prior_precision=_anchored_precision(4, [0.5, None], 1.0, 3.0),
    )


@pytest.mark.parametrize("case", sorted(PINNED))
def test_dense_fits_keep_their_pinned_values(case):
    strengths, stderr, covariance = PINNED[case]
    result = _pinned_fit(case)
    assert result.converged
    np.testing.assert_allclose(result.strengths, strengths, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.stderr, stderr, rtol=0, atol=1e-12)
    assert result.covariance is not None
    np.testing.assert_allclose(result.covariance, covariance, rtol=0, atol=1e-12)


def test_the_large_graph_path_keeps_its_pinned_values():
    rng = np.random.default_rng(2024)
    n = 400
    cycle = rng.permutation(n)
    first = np.concatenate([cycle, rng.integers(0, n, 3 * n)])
    second = np.concatenate([np.roll(cycle, 1), (first[n:] + rng.integers(1, n, 3 * n)) % n])
    p = np.round(rng.random(first.size), 3)
    result = fit(n, first, second, p, lam=1.0)
    assert result.converged and result.covariance is None
    some = [0, 1, 57, 199, 398]
    np.testing.assert_allclose(
        result.strengths[some],
        [-0.1855110963660013, 0.16581583581532175, -0.4721485658845428, -0.5171330364327084,
         -0.0010398560040578448],
        rtol=0, atol=1e-10,
    )
    np.testing.assert_allclose(
        result.stderr[some],
        [0.61209430368545, 0.5618269209333835, 0.6104022534911784, 0.6498588711015452,
         0.6364452675671703],
        rtol=0, atol=1e-12,
    )
    assert np.abs(result.strengths).sum() == pytest.approx(88.9473860500724, abs=1e-9)
