"""The base of every tournament design: one group's comparisons, round by round, and the fit.

The designs are in :mod:`.tournaments` (and the default, ``adaptive``, in :mod:`.adaptive`);
their module docstring says how a tournament is driven.

Priors. Without anchors every trace has the prior ``N(0, 1/lam)`` (the fitter's ``lam``).
With pool anchors, each anchor's prior is its stored strength with its own standard error,
``N(strength, stderr^2)`` (the precision bounded to ``[lam, 1 / ANCHOR_MIN_STDERR^2]``; an
anchor stored without a standard error gets ``lam``), and the traces' prior is hierarchical:
each trace deviates ``N(0, 1/lam)`` from the group's level, and the level is ``N(centre,
level_sd^2)`` around the anchors' centre. On the traces that is the precision
``lam * (I - c 1 1^T)``, ``c = lam v / (1 + G lam v)``, ``v = level_sd^2``: contrasts within
the group keep ``lam``'s shrinkage, and the group's level is set by its comparisons with the
anchors, so the strengths of a policy that improves from step to step rise with it.
``level_sd = 0`` pins the level to the centre, every trace ``N(centre, 1/lam)``: the prior
before anchors had standard errors, kept for the benchmarks' before/after.
"""


from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .bradley_terry import Fit, fit

ORDERS = ("both", "random")
ANCHOR_MODES = ("prior", "fixed")

#: The prior standard deviation of a group's level (its mean strength) around its anchors'
#: centre: wide, so that comparisons with the anchors, not the prior, place the group.
LEVEL_SD = 3.0

#: An anchor's prior standard deviation is at least this (its precision at most 1 / this^2).
ANCHOR_MIN_STDERR = 0.1

Pair = tuple[int, int]
"""A presentation: ``(first, second)`` item indices, ``first`` shown to the judge as trace A."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's answer to one presentation: ``p`` = P(``first`` is better)."""

    first: int
    second: int
    p: float


class Tournament(abc.ABC):
    """Schedules the comparisons of one group and fits strengths from the verdicts so far.

    Parameters
    ----------
    n_traces
        Number of traces in the group (at least 2).
    budget
        Maximum judge calls (presentations) for the group; ``None`` for the design's natural size.
    max_budget
        The most the budget may be, given or the design's (a server's ``max_budget``: round
        robin's natural size grows as ``G^2``); ``None``: no cap.
    order
        ``"both"`` or ``"random"`` (see :mod:`.tournaments`).
    anchor_strengths
        Known strengths of pool anchors, appended as items ``n_traces ..``.
    anchor_stderr
        Their standard errors, one per anchor (``None`` where not known); empty: none known.
    anchor_mode
        ``"prior"``: anchors move within their own uncertainty (their prior is their known
        strength and standard error); ``"fixed"``: anchors are held at their known strengths.
    lam
        Precision of the Gaussian prior on strengths (the fitter's ``lam``).
    level_sd
        Prior standard deviation of the group's level around the anchors' centre (see the
        module docstring); used only with anchors.
    rng
        Random generator (order of presentation, the adaptive design's first cycle).
    """

    name: str = ""
    pairs_anchors_first: bool = True
    """Whether the first round adds the anchor pairs of :meth:`_anchor_pairs`."""
    stops_early: bool = False
    """Whether the design takes ``min_tau_gain``, an anytime stop (:mod:`.adaptive`)."""

    def __init__(
        self,
        n_traces: int,
        *,
        budget: int | None = None,
        max_budget: int | None = None,
        order: str = "random",
        anchor_strengths: Sequence[float] = (),
        anchor_stderr: Sequence[float | None] = (),
        anchor_mode: str = "prior",
        lam: float = 1.0,
        level_sd: float = LEVEL_SD,
        rng: np.random.Generator | None = None,
    ) -> None:
        if n_traces < 2:
            raise ValueError(f"n_traces: a tournament needs at least 2 traces, got {n_traces}")
        if budget is not None and budget < 0:
            raise ValueError(f"budget: must be >= 0 or None, got {budget}")
        if order not in ORDERS:
            raise ValueError(f"order: must be one of {ORDERS}, got {order!r}")
        if anchor_mode not in ANCHOR_MODES:
            raise ValueError(f"anchor_mode: must be 'prior' or 'fixed', got {anchor_mode!r}")
        anchors = np.asarray(anchor_strengths, dtype=float).reshape(-1)
        if not np.all(np.isfinite(anchors)):
            raise ValueError("anchor_strengths: must be finite")
        if len(anchor_stderr) not in (0, anchors.size):
            raise ValueError("anchor_stderr: must be empty or one per anchor")
        if not (level_sd >= 0 and math.isfinite(level_sd)):
            raise ValueError(f"level_sd: must be a finite number >= 0, got {level_sd}")
        self.n_traces = n_traces
        self.n_items = n_traces + anchors.size
        self.order = order
        self.lam = lam
        self.rng = rng if rng is not None else np.random.default_rng()
        self.anchor_mode = anchor_mode
        self._anchors = anchors
        centre = _mean(anchors) if anchors.size else 0.0
        self._prior_mean = np.concatenate([np.full(n_traces, centre), anchors])
        self._prior_precision = None  # lam * I
        if anchors.size:
            self._prior_precision = _anchored_precision(
                n_traces, list(anchor_stderr) or [None] * anchors.size, lam, level_sd
            )
        budget = self.natural_calls() if budget is None else budget
        self.budget = budget if max_budget is None else min(budget, max_budget)
        self._anchors_paired = False
        self._first: list[int] = []
        self._second: list[int] = []
        self._p: list[float] = []
        self._fit: Fit | None = None
        self._pending = 0

    # -- what a design decides -------------------------------------------------------------

    @abc.abstractmethod
    def natural_pairs(self) -> int:
        """Number of pairs the design compares when the budget does not bind."""

    def natural_calls(self) -> int:
        """The default budget: judge calls for the natural pairs (and the anchor pairs)."""
        pairs = self.natural_pairs() + len(self._anchor_pairs())
        return pairs * (2 if self.order == "both" else 1)

    def _anchor_pairs(self) -> list[tuple[int, int]]:
        """Pairs that tie the group to the pool's scale: trace t against anchor t mod k.

        Played in the first round by every design but ``adaptive``, which weighs anchor pairs
        against the others itself.
        """
        k = self.n_items - self.n_traces
        if not k or not self.pairs_anchors_first:
            return []
        return [(t, self.n_traces + t % k) for t in range(self.n_traces)]

    @abc.abstractmethod
    def _propose(self, max_pairs: int) -> list[tuple[int, int]]:
        """The next round's unordered pairs (at most ``max_pairs``); empty when done."""

    # -- driving the tournament --------------------------------------------------------------

    @property
    def calls(self) -> int:
        """Judge calls recorded so far."""
        return len(self._p)

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.calls - self._pending)

    def next_round(self) -> list[Pair]:
        """The next round of presentations to judge; empty when the tournament is over.

        Every presentation of a round must be recorded (:meth:`record`) before the next call.
        """
        if self._pending:
            raise RuntimeError("record the previous round's verdicts before asking for the next")
        per_pair = 2 if self.order == "both" else 1
        # With both orders, a last call that fits only one presentation is still spent.
        max_pairs = -(-self.remaining // per_pair)
        if max_pairs <= 0:
            return []
        proposed = self._propose(max_pairs)
        if not self._anchors_paired:
            self._anchors_paired = True
            proposed += self._anchor_pairs()[: max(0, max_pairs - len(proposed))]
        presentations = self._present(proposed)[: self.remaining]
        self._pending = len(presentations)
        return presentations

    def _present(self, pairs: list[tuple[int, int]]) -> list[Pair]:
        """The presentations of a round's pairs: both orders, or each in a random order."""
        presentations: list[Pair] = []
        for i, j in pairs:
            if self.order == "both":
                presentations += [(i, j), (j, i)]
            elif self.rng.random() < 0.5:
                presentations.append((i, j))
            else:
                presentations.append((j, i))
        return presentations

    def record(self, verdicts: Iterable[Verdict]) -> None:
        """Record the verdicts of the current round."""
        for v in verdicts:
            if not (0 <= v.first < self.n_items and 0 <= v.second < self.n_items):
                raise ValueError(f"verdict: item index out of range in {v}")
            if not (0.0 <= v.p <= 1.0):
                raise ValueError(f"verdict.p: must be in [0, 1], got {v.p}")
            self._first.append(v.first)
            self._second.append(v.second)
            self._p.append(float(v.p))
        self._pending = 0
        self._fit = None

    def fit(self) -> Fit:
        """The Bradley-Terry fit of every item (traces, then anchors) on the verdicts so far."""
        if self._fit is None:
            fixed = None
            if self.anchor_mode == "fixed" and self._anchors.size:
                fixed = {self.n_traces + k: float(s) for k, s in enumerate(self._anchors)}
            self._fit = fit(
                self.n_items,
                np.asarray(self._first, dtype=np.intp),
                np.asarray(self._second, dtype=np.intp),
                np.asarray(self._p, dtype=float),
                lam=self.lam,
                prior_mean=self._prior_mean,
                fixed=fixed,
                prior_precision=self._prior_precision,
            )
        return self._fit

    def strengths(self) -> np.ndarray:
        """Fitted strengths of the group's traces (anchors left out)."""
        return self.fit().strengths[: self.n_traces]

    def compared_pairs(self) -> set[tuple[int, int]]:
        return {(min(i, j), max(i, j)) for i, j in zip(self._first, self._second)}


def _mean(values: np.ndarray) -> float:
    """The mean of finite ``values``, finite however large they are: when their sum overflows
    (strengths only a store written by hand holds), the sum of their shares, kept within
    their range."""
    with np.errstate(over="ignore"):
        mean = float(values.mean())
    if math.isfinite(mean):
        return mean
    return float(np.clip(np.sum(values / values.size), values.min(), values.max()))


def _anchored_precision(
    n_traces: int, anchor_stderr: Sequence[float | None], lam: float, level_sd: float
) -> np.ndarray:
    """The prior precision of a group with anchors (see the module docstring)."""
    v = level_sd**2
    c = lam * v / (1.0 + n_traces * lam * v)
    own = [lam if s is None else max(float(s), ANCHOR_MIN_STDERR) ** -2 for s in anchor_stderr]
    k = len(own)
    precision = np.zeros((n_traces + k, n_traces + k))
    precision[:n_traces, :n_traces] = lam * (np.eye(n_traces) - c)
    precision[n_traces:, n_traces:] = np.diag(np.maximum(own, lam))
    return precision


__all__ = [
    "ANCHOR_MIN_STDERR", "ANCHOR_MODES", "LEVEL_SD", "ORDERS", "Pair", "Tournament", "Verdict",
]
