"""The default tournament design, ``adaptive``: information-greedy rounds.

See :mod:`.tournaments` for the other designs and :mod:`.tournament` for the base class.
"""

from __future__ import annotations

import numpy as np

from .tournament import Tournament


class Adaptive(Tournament):
    """Information-greedy rounds; see the module docstring.

    Its default budget, whatever the order policy, is a third of round-robin in both orders,
    ``G(G-1)/3`` calls, and at most ``max_calls_per_trace * G`` (18 calls at G = 8, 80 at 16,
    160 at 32). ``round_size`` is the number of pairs per round after the first cycle
    (default: ``G``); smaller rounds adapt more often but cost more round trips to the judge,
    and measured no better on the simulator.
    """

    name = "adaptive"
    pairs_anchors_first = False  # anchors compete for calls in the greedy rounds

    def __init__(
        self,
        n_traces: int,
        *,
        max_calls_per_trace: int = 5,
        round_size: int | None = None,
        **kwargs,
    ) -> None:
        self.max_calls_per_trace = max_calls_per_trace
        self.round_size = round_size or n_traces
        super().__init__(n_traces, **kwargs)

    def natural_pairs(self) -> int:
        return -(-self.natural_calls() // (2 if self.order == "both" else 1))

    def natural_calls(self) -> int:
        g = self.n_traces
        return max(1, min(g * (g - 1) // 3, self.max_calls_per_trace * g))

    def _propose(self, max_pairs: int) -> list[tuple[int, int]]:
        if not self.calls:
            cycle = [int(i) for i in self.rng.permutation(self.n_traces)]
            pairs = list(zip(cycle, cycle[1:] + cycle[:1])) if self.n_traces > 2 else [(0, 1)]
            return pairs[:max_pairs]
        return self._greedy(min(max_pairs, self.round_size))

    def _greedy(self, k: int) -> list[tuple[int, int]]:
        current = self.fit()
        cov = current.covariance
        if cov is None:  # the fitter's large-graph path: fall back to the diagonal
            cov = np.diag(current.stderr**2)
        cov = cov.copy()
        beta = current.strengths
        n = self.n_items
        ii, jj = np.triu_indices(n, k=1)
        keep = ii < self.n_traces  # anchor-anchor pairs tell nothing about the group
        ii, jj = ii[keep], jj[keep]
        win = 1.0 / (1.0 + np.exp(-(beta[ii] - beta[jj])))
        info = win * (1.0 - win)
        pairs: list[tuple[int, int]] = []
        for _ in range(k):
            var = cov[ii, ii] + cov[jj, jj] - 2.0 * cov[ii, jj]
            gain = info * var
            best = int(np.argmax(gain))
            if gain[best] <= 1e-12:
                break
            i, j = int(ii[best]), int(jj[best])
            pairs.append((i, j))
            # Rank-one update of the covariance for the verdict we are about to ask for.
            u = cov[:, i] - cov[:, j]
            cov -= np.outer(u, u) * (info[best] / (1.0 + info[best] * var[best]))
        return pairs


__all__ = ["Adaptive"]
