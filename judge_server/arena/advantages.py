"""From rewards and strengths to advantages, and the rule that routes a group to the judge.

A group is *dead* when every trace got the same verifiable reward (max - min <= eps): its
group-relative advantages are all zero. Dead groups of two or more traces are routed to the
judge; their Bradley-Terry strengths become zero-mean advantages here. Every other group gets
the standard group-relative advantages it would have had without the judge.

Strengths to advantages (``normalisation``):

``evidence`` (the default)
    Advantages that are as large as the judge's evidence, no larger. With ``c = b - mean(b)``
    the centred MAP strengths (logits) and ``s_i`` the posterior standard deviation of
    ``c_i`` (Laplace: ``s_i**2 = (P Cov P)_ii`` with ``P = I - 1 1^T / G`` the centring; from
    the standard errors alone, as if independent, when the fit has no covariance)::

        x_i = c_i * (2 * Phi(|c_i| / s_i) - 1)           # = c_i * erf(|c_i| / (sqrt(2) s_i))
        x   = x - mean(x)                                # zero mean again
        a   = scale * x * min(1, CAP / max_i |x_i|)      # CAP = 1: |a| <= scale

    ``2 Phi(z) - 1`` is how much more likely the posterior makes the sign of ``c_i`` right than
    wrong, so ``x_i`` is the push a policy-gradient step gives trace ``i`` in the right
    direction, net of the push in the wrong one: a strong and certain preference keeps its
    size, a weak one stays small (the MAP fit's prior already shrinks it: one soft verdict
    ``p`` between two traces moves their centred strengths by at most about +-0.34), and an
    uncertain one is shrunk further. A tie (every ``p = 0.5``) gives exactly 0. The cap scales
    the group as a whole, so that order, ratios and the zero mean survive it. Why a cap of 1:
    a live GRPO group's advantages ``(r - mean) / (std + 1e-4)`` are about +-1 (exactly +-1
    for a group of two with one trace right), so the judge's most certain preference weighs
    as much as a verifier's split, never more; ``scale`` changes that weight.
``minmax`` (the paper's)
    Strengths mapped onto [0, 1] within the group, then centred. It stretches any spread to
    the same range: a group of two whose judge margin is p = 0.536 gets the same +-0.5 as one
    with p = 0.987, so it amplifies noise; kept for reproducing the paper.
``zscore``
    Centred strengths divided by their standard deviation (the same stretching as minmax).
``raw``
    Centred strengths (logits), uncapped.

A group whose strengths are all equal gets zeros under every mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import erf

import trainer_client
from trainer_client import STD_EPS

NORMALISATIONS = ("evidence", "minmax", "zscore", "raw")
DEFAULT_NORMALISATION = "evidence"
EVIDENCE_CAP = 1.0  # largest |advantage| of the evidence mapping, before ``scale``


def _vector(values: Sequence[float] | np.ndarray, field: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{field}: the group is empty")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{field}[{bad[0]}]: must be finite, got {arr[bad[0]]}")
    return arr


def is_dead(rewards: Sequence[float] | np.ndarray, *, eps: float = 1e-6) -> bool:
    """True when a group should go to the judge: two or more traces, all rewards within ``eps``.

    The client's rule (:func:`trainer_client.is_dead`, the one definition), on checked rewards.
    """
    return trainer_client.is_dead(_vector(rewards, "rewards").tolist(), eps=eps)


def group_relative(
    rewards: Sequence[float] | np.ndarray, *, divide_by_std: bool = True
) -> np.ndarray:
    """Standard GRPO advantages ``(r - mean) / (std + 1e-4)``, or ``r - mean`` without the std.

    The client's (:func:`trainer_client.group_relative`, the one definition), on checked
    rewards, as an array; ``STD_EPS`` is the client's too.
    """
    r = _vector(rewards, "rewards").tolist()
    return np.asarray(trainer_client.group_relative(r, divide_by_std=divide_by_std), dtype=float)


def from_strengths(
    strengths: Sequence[float] | np.ndarray,
    *,
    normalisation: str = DEFAULT_NORMALISATION,
    scale: float = 1.0,
    covariance: np.ndarray | None = None,
    stderr: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Zero-mean advantages from a group's Bradley-Terry strengths (mappings: module doc).

    ``covariance`` (``(G, G)``, the fit's ``H^-1`` over the group's traces) or, failing that,
    ``stderr`` (``(G,)``) is what ``evidence`` measures the strengths' uncertainty with; one
    of them is required there and ignored by the other mappings. ``scale`` multiplies the
    result, so that judge-derived advantages can be weighted against verifier-derived ones.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation: must be one of {NORMALISATIONS}, got {normalisation!r}")
    if not np.isfinite(scale):
        raise ValueError(f"scale: must be finite, got {scale}")
    b = _vector(strengths, "strengths")
    if normalisation == "evidence":
        variance = _centred_variance(b.size, covariance, stderr)
    centred = b - b.mean()
    spread = float(b.max() - b.min())
    if spread <= 1e-12:
        return np.zeros_like(b)
    if normalisation == "evidence":
        out = _evidence(centred, variance)
    elif normalisation == "minmax":
        out = centred / spread
    elif normalisation == "zscore":
        out = centred / b.std()
    else:
        out = centred
    return scale * out


def _centred_variance(
    n: int, covariance: np.ndarray | None, stderr: Sequence[float] | np.ndarray | None
) -> np.ndarray:
    """``Var(b_i - mean(b))`` per trace: ``diag(P Cov P)``, or from independent stderrs."""
    if covariance is not None:
        cov = np.asarray(covariance, dtype=float)
        if cov.shape != (n, n) or not np.all(np.isfinite(cov)):
            raise ValueError(f"covariance: must be a finite ({n}, {n}) matrix, got {cov.shape}")
        var = np.diagonal(cov) - 2.0 * cov.mean(axis=1) + cov.mean()
    elif stderr is not None:
        se = _vector(stderr, "stderr")
        if se.size != n or np.any(se < 0):
            raise ValueError(f"stderr: must be {n} values >= 0")
        var = (1.0 - 2.0 / n) * se**2 + float(np.sum(se**2)) / n**2
    else:
        raise ValueError("covariance: the evidence normalisation needs the fit's covariance "
                         "or stderr")
    return np.maximum(var, 0.0)  # rounding can leave -1e-17


def _evidence(centred: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """``c * (2 Phi(|c| / s) - 1)``, recentred, scaled down as a whole to the cap."""
    sd = np.sqrt(variance)
    magnitude = np.abs(centred)
    # a certain strength (sd 0, e.g. a fixed item) keeps its size; a zero one stays zero
    z = np.divide(magnitude, np.sqrt(2.0) * sd, out=np.full_like(sd, np.inf), where=sd > 0)
    out = centred * np.where(magnitude > 0, erf(z), 0.0)
    out = out - out.mean()
    peak = float(np.abs(out).max())
    if peak > EVIDENCE_CAP:
        out *= EVIDENCE_CAP / peak
    return out


__all__ = [
    "DEFAULT_NORMALISATION",
    "EVIDENCE_CAP",
    "NORMALISATIONS",
    "STD_EPS",
    "from_strengths",
    "group_relative",
    "is_dead",
]
