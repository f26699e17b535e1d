"""Prometheus metrics of one server, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.groups = Counter(
            "arena_groups", "Groups answered, by run and outcome.", ["run", "outcome"], registry=r
        )
        self.judge_calls = Counter(
            "arena_judge_calls", "Judge calls (comparisons) spent, by run.", ["run"], registry=r
        )
        self.invalid = Counter(
            "arena_invalid_requests", "Requests refused as invalid.", ["transport"], registry=r
        )
        self.group_latency = Histogram(
            "arena_group_latency_seconds",
            "Time from a group's arrival to its result.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "arena_judge_batch_size",
            "Comparisons per batch sent to the comparator.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
