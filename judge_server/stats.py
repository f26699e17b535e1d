"""Per-run figures of one server: what ``GetRunStats``, ``GET /v1/stats`` and the status page
show. Plain counters and a window of recent latencies; no I/O.

Each replica counts the groups it answered: behind a load balancer, a run's figures are the
sum over replicas (Prometheus sums ``arena_groups_total`` across pods; the status page of one
pod shows that pod's share).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from trainer_client.types import GroupResult

LATENCY_WINDOW = 4096  # recent groups whose latency makes the percentiles

OUTCOMES = ("live", "judged", "judge_failed")


@dataclass
class RunStats:
    run_id: str
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    refused: int = 0
    comparisons: int = 0  # what the groups' tournaments needed: cached + judge_requests
    cached_comparisons: int = 0  # answered by the verdict cache
    judge_requests: int = 0  # reached the judge
    tied: int = 0  # judged groups whose traces the judge told apart in nothing
    unread_verdicts: int = 0  # verdicts that could not be read (no preference)
    in_flight: int = 0  # dead groups admitted and not yet answered
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def answered(self, outcome: str, latency_s: float) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.latencies_s.append(latency_s)

    def judge_cost(self, result: GroupResult) -> None:
        """Add what a group cost the judge."""
        self.comparisons += result.comparisons
        self.cached_comparisons += result.cached_comparisons
        self.judge_requests += result.judge_requests

    @property
    def groups(self) -> int:
        return sum(self.outcomes.values())

    @property
    def dead_groups(self) -> int:
        return self.groups - self.outcomes["live"]

    def latency_ms(self, q: float) -> float:
        """The q-th percentile (0-100) of recent latencies in ms; 0 before any group."""
        if not self.latencies_s:
            return 0.0
        return float(np.percentile(np.fromiter(self.latencies_s, float), q)) * 1e3

    def view(self, pool_prompts: int = 0, pool_anchors: int = 0) -> dict:
        """The figures, by the names of the ``RunStats`` message."""
        groups = self.groups
        return {
            "run_id": self.run_id,
            "groups": groups,
            "dead_groups": self.dead_groups,
            "dead_fraction": self.dead_groups / groups if groups else 0.0,
            "judged": self.outcomes["judged"],
            "judge_failed": self.outcomes["judge_failed"],
            "refused": self.refused,
            "judge_calls": self.comparisons,  # deprecated: comparisons
            "comparisons": self.comparisons,
            "cached_comparisons": self.cached_comparisons,
            "judge_requests": self.judge_requests,
            "latency_p50_ms": self.latency_ms(50),
            "latency_p90_ms": self.latency_ms(90),
            "latency_p99_ms": self.latency_ms(99),
            "groups_in_flight": self.in_flight,
            "pool_prompts": pool_prompts,
            "pool_anchors": pool_anchors,
            "tied": self.tied,
            "unread_verdicts": self.unread_verdicts,
        }


__all__ = ["OUTCOMES", "RunStats"]
