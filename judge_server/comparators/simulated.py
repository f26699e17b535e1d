"""A comparator that knows each trace's latent strength: for tests, demos and load tests.

It answers like :class:`judge_server.arena.simulator.SimulatedJudge`:
``p = s(b_first - b_second + position_bias + noise)``, soft or as a Bernoulli draw. A trace's
latent strength comes from ``strength_of(text)``; by default, from a ``strength=<number>`` tag
in the text when there is one, else a deterministic hash of the text (uniform in [-2, 2]). With
hashed strengths and soft verdicts it is the ``instant`` comparator of ``arena-judge bench
serve``: a judge that costs nothing, so the benchmark measures the server alone.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Sequence

from .base import Comparator, Comparison

_TAG = re.compile(r"strength=(-?\d+(?:\.\d+)?)")


def hashed_strength(text: str) -> float:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return 4.0 * int.from_bytes(digest, "little") / 2**64 - 2.0


def tagged_strength(text: str) -> float:
    """The number after ``strength=`` in the text, else :func:`hashed_strength`."""
    match = _TAG.search(text)
    return float(match.group(1)) if match else hashed_strength(text)


class SimulatedComparator(Comparator):
    name = "simulated"

    def __init__(
        self,
        *,
        strength_of: Callable[[str], float] = tagged_strength,
        position_bias: float = 0.0,
        noise: float = 0.0,
        soft: bool = True,
        seed: int = 0,
    ) -> None:
        self.strength_of = strength_of
        self.position_bias = position_bias
        self.noise = noise
        self.soft = soft
        self._rng = random.Random(seed)
        self.calls = 0

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        out = []
        for c in comparisons:
            logit = self.strength_of(c.first) - self.strength_of(c.second) + self.position_bias
            if self.noise:
                logit += self._rng.gauss(0.0, self.noise)
            p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))
            out.append(p if self.soft else float(self._rng.random() < p))
        self.calls += len(comparisons)
        return out


def instant_comparator() -> SimulatedComparator:
    """The zero-cost judge of load tests: hashed strengths, soft verdicts."""
    comparator = SimulatedComparator(strength_of=hashed_strength)
    comparator.name = "instant"
    return comparator
