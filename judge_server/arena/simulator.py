"""A simulated judge and a harness that measures tournament designs against it.

The simulated judge knows each item's latent strength ``b`` and answers a presentation
``(first, second)`` with ``P(first wins) = s(b_first - b_second + position_bias + e)``, where
``e ~ N(0, noise^2)`` is drawn per call: the judge's own inconsistency. Verdicts are Bernoulli
draws of that probability (``soft=False``, what a sampled verdict token gives) or the
probability itself (``soft=True``, what verdict-token log-probabilities give).

:func:`play` runs one tournament to the end against such a judge and returns what the
benchmark needs: the Kendall tau between fitted and true strengths, and the judge calls spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import kendalltau

from .tournaments import Verdict, make_tournament


@dataclass(frozen=True)
class SimulatedJudge:
    """Judges items by their latent ``strengths``; see the module docstring."""

    strengths: np.ndarray
    position_bias: float = 0.0
    noise: float = 0.0
    soft: bool = False

    def probability(self, first: np.ndarray, second: np.ndarray, rng: np.random.Generator):
        logit = self.strengths[first] - self.strengths[second] + self.position_bias
        if self.noise:
            logit = logit + rng.normal(0.0, self.noise, size=np.shape(logit))
        return expit(logit)

    def judge(self, pairs: Sequence[tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
        """One verdict ``p`` per presentation ``(first, second)``."""
        if not pairs:
            return np.zeros(0)
        first, second = np.asarray(pairs, dtype=np.intp).T
        p = self.probability(first, second, rng)
        return p if self.soft else (rng.random(p.shape) < p).astype(float)


@dataclass(frozen=True)
class Outcome:
    tau: float
    calls: int
    rounds: int


def play(
    design: str,
    judge: SimulatedJudge,
    n_traces: int,
    *,
    rng: np.random.Generator,
    anchor_strengths: Sequence[float] = (),
    **tournament_options,
) -> Outcome:
    """Run ``design`` on the first ``n_traces`` items of ``judge`` (anchors after them)."""
    tournament = make_tournament(
        design, n_traces, rng=rng, anchor_strengths=anchor_strengths, **tournament_options
    )
    rounds = 0
    while pairs := tournament.next_round():
        rounds += 1
        ps = judge.judge(pairs, rng)
        tournament.record(Verdict(i, j, float(p)) for (i, j), p in zip(pairs, ps))
    fitted = tournament.strengths()
    tau = kendalltau(fitted, judge.strengths[:n_traces]).statistic
    return Outcome(tau=0.0 if np.isnan(tau) else float(tau), calls=tournament.calls, rounds=rounds)


__all__ = ["Outcome", "SimulatedJudge", "play"]
