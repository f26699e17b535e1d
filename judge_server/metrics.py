"""Prometheus metrics of one server, in a registry of its own (no global state).

The names are a contract with ``dashboards/grafana/reasoning-arena.json`` and the
HorizontalPodAutoscaler in ``k8s/`` (``arena_groups_in_flight``): a test checks that every
metric they use is exported here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from trainer_client.types import GroupResult

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.groups = Counter(
            "arena_groups", "Groups answered, by run and outcome (live, judged, judge_failed).",
            ["run", "outcome"], registry=r,
        )
        self.comparisons = Counter(
            "arena_comparisons",
            "Comparisons the groups' tournaments needed (cached + judge requests), by run.",
            ["run"], registry=r,
        )
        self.cached_comparisons = Counter(
            "arena_cached_comparisons",
            "Comparisons the verdict cache answered (no request to the judge), by run.",
            ["run"], registry=r,
        )
        self.judge_requests = Counter(
            "arena_judge_requests", "Comparisons that reached the judge, by run.", ["run"],
            registry=r,
        )
        self.judge_calls = Counter(  # kept for dashboards written before the three above
            "arena_judge_calls", "Deprecated: arena_comparisons_total (the same count), by run.",
            ["run"], registry=r,
        )
        self.tied = Counter(
            "arena_tied_groups",
            "Judged groups whose traces the judge told apart in nothing (zero advantages), "
            "by run.",
            ["run"], registry=r,
        )
        self.unread_verdicts = Counter(
            "arena_unread_verdicts",
            "Judge verdicts that could not be read (taken as no preference), by run.",
            ["run"], registry=r,
        )
        self.refused = Counter(
            "arena_refused", "Groups refused for load (RESOURCE_EXHAUSTED / 429), by run.",
            ["run"], registry=r,
        )
        self.invalid = Counter(
            "arena_invalid_requests", "Requests refused as invalid.", ["transport"], registry=r
        )
        self.unauthorised = Counter(
            "arena_unauthorised_requests",
            "Requests refused for a missing or unknown API key, or another tenant's run.",
            ["transport"], registry=r,
        )
        self.group_latency = Histogram(
            "arena_group_latency_seconds", "Time from a group's arrival to its result, by run.",
            ["run"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.groups_in_flight = Gauge(
            "arena_groups_in_flight", "Dead groups admitted and not yet answered, by run.",
            ["run"], registry=r,
        )
        self.pool_anchors = Gauge(
            "arena_pool_anchors", "Anchors in the run's pool (as last written here).", ["run"],
            registry=r,
        )
        self.queued_calls = Gauge(
            "arena_queued_calls", "Comparisons waiting for the judge.", registry=r
        )
        self.calls_in_flight = Gauge(
            "arena_calls_in_flight", "Comparisons at the judge.", registry=r
        )
        self.batch_size = Histogram(
            "arena_judge_batch_size",
            "Comparisons per batch sent to the comparator.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=r,
        )

    def judge_cost(self, run_id: str, result: GroupResult) -> None:
        """Count what a group of ``run_id`` cost the judge."""
        self.comparisons.labels(run_id).inc(result.comparisons)
        self.cached_comparisons.labels(run_id).inc(result.cached_comparisons)
        self.judge_requests.labels(run_id).inc(result.judge_requests)
        self.judge_calls.labels(run_id).inc(result.comparisons)

    def watch_scheduler(self, scheduler) -> None:
        """Read the judge queue's depth from ``scheduler`` at every scrape."""
        self.queued_calls.set_function(lambda: scheduler.queued)
        self.calls_in_flight.set_function(lambda: scheduler.in_flight)

    def forget_run(self, run_id: str) -> None:
        """Drop a deleted run's gauges (its counters stay: Prometheus counters only grow)."""
        for gauge in (self.groups_in_flight, self.pool_anchors):
            try:
                gauge.remove(run_id)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
