"""From rewards and strengths to advantages, and the rule that routes a group to the judge.

A group is *dead* when every trace got the same verifiable reward (max - min <= eps): its
group-relative advantages are all zero. Dead groups of two or more traces are routed to the
judge; their Bradley-Terry strengths become zero-mean advantages here. Every other group gets
the standard group-relative advantages it would have had without the judge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NORMALISATIONS = ("minmax", "zscore", "raw")
STD_EPS = 1e-4  # TRL's guard against a zero standard deviation


def _vector(values: Sequence[float] | np.ndarray, field: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{field}: the group is empty")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{field}[{bad[0]}]: must be finite, got {arr[bad[0]]}")
    return arr


def is_dead(rewards: Sequence[float] | np.ndarray, *, eps: float = 1e-6) -> bool:
    """True when a group should go to the judge: two or more traces, all rewards within ``eps``."""
    r = _vector(rewards, "rewards")
    return r.size >= 2 and float(r.max() - r.min()) <= eps


def group_relative(
    rewards: Sequence[float] | np.ndarray, *, divide_by_std: bool = True
) -> np.ndarray:
    """Standard GRPO advantages ``(r - mean) / (std + 1e-4)``, or ``r - mean`` without the std."""
    r = _vector(rewards, "rewards")
    centred = r - r.mean()
    if not divide_by_std:
        return centred
    return centred / (r.std() + STD_EPS)


def from_strengths(
    strengths: Sequence[float] | np.ndarray, *, normalisation: str = "minmax", scale: float = 1.0
) -> np.ndarray:
    """Zero-mean advantages from a group's Bradley-Terry strengths.

    ``minmax`` (the paper): strengths mapped onto [0, 1] within the group, then centred.
    ``zscore``: centred and divided by the standard deviation.
    ``raw``: centred strengths (log-odds units).
    A group whose strengths are all equal gets zeros. ``scale`` multiplies the result, so that
    judge-derived advantages can be weighted against verifier-derived ones.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation: must be one of {NORMALISATIONS}, got {normalisation!r}")
    if not np.isfinite(scale):
        raise ValueError(f"scale: must be finite, got {scale}")
    b = _vector(strengths, "strengths")
    centred = b - b.mean()
    spread = float(b.max() - b.min())
    if spread <= 1e-12:
        return np.zeros_like(b)
    if normalisation == "minmax":
        out = centred / spread
    elif normalisation == "zscore":
        out = centred / b.std()
    else:
        out = centred
    return scale * out


__all__ = ["NORMALISATIONS", "from_strengths", "group_relative", "is_dead"]
