"""Per-run figures of one server: what ``GetRunStats``, ``GET /v1/stats`` and the status page
show. Plain counters and a window of recent latencies (:class:`RunStats`); :class:`Statistics`
keeps every run's and mirrors them into the Prometheus metrics. No I/O.

Each replica counts the groups it answered: behind a load balancer, a run's figures are the
sum over replicas (Prometheus sums ``arena_groups_total`` across pods; the status page of one
pod shows that pod's share).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from trainer_client.types import GroupResult

from ..metrics import Metrics

logger = logging.getLogger(__name__)

LATENCY_WINDOW = 4096  # recent groups whose latency makes the percentiles
UNREAD_LOG_EVERY = 1000  # unread verdicts between two warnings about them (after the first)

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


class Statistics:
    """Every run's :class:`RunStats` on this server, mirrored into ``metrics``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.unread_verdicts = 0  # all runs, for the warning's cadence
        self._runs: dict[str, RunStats] = {}

    def of(self, run_id: str) -> RunStats:
        stats = self._runs.get(run_id)
        if stats is None:
            stats = self._runs[run_id] = RunStats(run_id)
        return stats

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        self.metrics.forget_run(run_id)

    def runs(self) -> list[str]:
        """The runs with figures here."""
        return list(self._runs)

    def answered(self, run_id: str, outcome: str, result: GroupResult, latency_s: float) -> None:
        """Count a group answered (``outcome``: one of :data:`OUTCOMES`)."""
        stats = self.of(run_id)
        stats.answered(outcome, latency_s)
        stats.judge_cost(result)
        if result.tied:
            stats.tied += 1
            self.metrics.of_run(self.metrics.tied, run_id).inc()
        self.metrics.of_run(self.metrics.groups, run_id, outcome).inc()
        self.metrics.judge_cost(run_id, result)
        self.metrics.of_run(self.metrics.group_latency, run_id).observe(latency_s)

    def refused(self, run_id: str, n: int) -> None:
        self.of(run_id).refused += n
        self.metrics.of_run(self.metrics.refused, run_id).inc(n)

    def in_flight(self, run_id: str, change: int) -> None:
        stats = self.of(run_id)
        stats.in_flight += change
        self.metrics.of_run(self.metrics.groups_in_flight, run_id).set(stats.in_flight)

    def unread(self, run_id: str, n: int, judge: str) -> None:
        """Count ``n`` unread verdicts of ``run_id``; warn the first time, then every
        :data:`UNREAD_LOG_EVERY`."""
        if not n:
            return
        before = self.unread_verdicts
        self.unread_verdicts += n
        self.of(run_id).unread_verdicts += n
        self.metrics.of_run(self.metrics.unread_verdicts, run_id).inc(n)
        if before == 0 or before // UNREAD_LOG_EVERY != self.unread_verdicts // UNREAD_LOG_EVERY:
            logger.warning(
                "the %s judge gave %d verdicts that could not be read (%d so far, run %s has "
                "%d): taken as no preference. Its verdict tokens are missing from the "
                "log-probabilities it returns: give it more top log-probabilities, or a prompt "
                "it answers with A or B",
                judge, n, self.unread_verdicts, run_id, self.of(run_id).unread_verdicts,
            )


__all__ = ["OUTCOMES", "UNREAD_LOG_EVERY", "RunStats", "Statistics"]
