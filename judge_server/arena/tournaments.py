"""Tournament designs: which pairs of traces the judge compares, round by round.

A tournament runs for one group. The service asks it for a round of comparisons, sends the
whole round (with every other group's round) to the judge model as one batch, records the
verdicts, and asks again until the round comes back empty. Items ``0 .. n_traces-1`` are the
group's traces; items ``n_traces ..`` are historical anchors from the run's pool, whose
strengths are known from earlier steps.

Designs (``DESIGNS``):

``live``
    The paper's design. Traces arrive one by one; each new trace is compared with every
    earlier trace while there are at most three, then with the current best, median and worst
    earlier trace by the running Bradley-Terry fit. ``3G - 6`` pairs for G >= 3 (18 at G = 8).
``round_robin``
    Every pair once: the quality ceiling, ``G(G-1)/2`` pairs.
``single_anchor``
    BRPO-style: every trace against one reference trace (trace 0), ``G - 1`` pairs.
``swiss``
    Pairs neighbours in the current order, never repeating a pair; ``ceil(log2 G)`` rounds.
``adaptive``
    Ours. A random cycle through the traces first, so the comparison graph is connected; then
    each round greedily picks the pairs that most increase the log-determinant of the fit's
    precision (Fisher information ``p(1-p)`` times the current variance of the strength
    difference), so that verdicts are spent where they tell the most: close pairs whose order
    is still uncertain. Pool anchors, when given, compete for calls on the same footing.

Every design but ``adaptive`` also compares each trace with one pool anchor in its first round
(trace t against anchor t mod k), which ties the group's strengths to the pool's scale.

Every design takes a ``budget`` (maximum judge calls for the group; ``None`` for the design's
natural size), capped by ``max_budget`` when given (a server's), and an ``order`` policy:
``"both"`` presents each pair in both orders (two calls, and the judge's position bias
cancels), ``"random"`` presents it once in a random order.
"""

from __future__ import annotations

import math

import numpy as np

from .adaptive import Adaptive
from .tournament import ORDERS, Pair, Tournament, Verdict


class RoundRobin(Tournament):
    name = "round_robin"

    def natural_pairs(self) -> int:
        return self.n_traces * (self.n_traces - 1) // 2

    def _propose(self, max_pairs: int) -> list[tuple[int, int]]:
        if self.calls:
            return []
        pairs = [(i, j) for i in range(self.n_traces) for j in range(i + 1, self.n_traces)]
        if len(pairs) > max_pairs:  # a binding budget: a random subset, not the first rows
            keep = self.rng.choice(len(pairs), size=max_pairs, replace=False)
            pairs = [pairs[k] for k in sorted(keep)]
        return pairs


class SingleAnchor(Tournament):
    name = "single_anchor"

    def natural_pairs(self) -> int:
        return self.n_traces - 1

    def _propose(self, max_pairs: int) -> list[tuple[int, int]]:
        if self.calls:
            return []
        return [(0, j) for j in range(1, self.n_traces)][:max_pairs]


class Live(Tournament):
    name = "live"

    def __init__(self, n_traces: int, **kwargs) -> None:
        super().__init__(n_traces, **kwargs)
        self._arrived = 1  # trace 0 is in; trace 1 arrives first

    def natural_pairs(self) -> int:
        g = self.n_traces
        return sum(min(t, 3) for t in range(1, g))

    def _propose(self, max_pairs: int) -> list[tuple[int, int]]:
        if self._arrived >= self.n_traces:
            return []
        new = self._arrived
        self._arrived += 1
        if new <= 3:
            opponents = list(range(new))
        else:
            earlier = self.fit().strengths[:new]
            ranked = np.argsort(earlier, kind="stable")
            opponents = sorted({int(ranked[-1]), int(ranked[(new - 1) // 2]), int(ranked[0])})
        return [(o, new) for o in opponents][:max_pairs]


class Swiss(Tournament):
    name = "swiss"

    def __init__(self, n_traces: int, **kwargs) -> None:
        super().__init__(n_traces, **kwargs)
        self._rounds = 0

    def natural_pairs(self) -> int:
        return (self.n_traces // 2) * max(1, math.ceil(math.log2(self.n_traces)))

    def _propose(self, max_pairs: int) -> list[tuple[int, int]]:
        if self._rounds >= max(1, math.ceil(math.log2(self.n_traces))):
            return []
        self._rounds += 1
        if self._rounds == 1:
            order = self.rng.permutation(self.n_traces)
        else:
            order = np.argsort(-self.strengths(), kind="stable")
        seen = self.compared_pairs()
        free = [int(i) for i in order]
        pairs: list[tuple[int, int]] = []
        while len(free) >= 2 and len(pairs) < max_pairs:
            i = free.pop(0)
            for k, j in enumerate(free):
                if (min(i, j), max(i, j)) not in seen:
                    pairs.append((i, free.pop(k)))
                    break
        return pairs


DESIGNS: dict[str, type[Tournament]] = {
    cls.name: cls for cls in (Live, RoundRobin, SingleAnchor, Swiss, Adaptive)
}


def make_tournament(
    design: str, n_traces: int, *, min_tau_gain: float = 0.0, **kwargs
) -> Tournament:
    """Build the tournament named ``design`` (a key of :data:`DESIGNS`). ``min_tau_gain``:
    the anytime stop of a design that has one (a design without one takes only 0)."""
    try:
        cls = DESIGNS[design]
    except KeyError:
        raise ValueError(f"design: must be one of {sorted(DESIGNS)}, got {design!r}") from None
    if cls.stops_early:
        kwargs["min_tau_gain"] = min_tau_gain
    elif min_tau_gain:
        raise ValueError(f"min_tau_gain: the {design} design has no early stop")
    return cls(n_traces, **kwargs)


__all__ = [
    "DESIGNS",
    "ORDERS",
    "Adaptive",
    "Live",
    "Pair",
    "RoundRobin",
    "SingleAnchor",
    "Swiss",
    "Tournament",
    "Verdict",
    "make_tournament",
]
