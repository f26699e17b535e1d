"""Prometheus metrics of one server, in a registry of its own (no global state).

The names are a contract with ``dashboards/grafana/reasoning-arena.json`` and the
HorizontalPodAutoscaler in ``k8s/`` (``arena_groups_in_flight``): a test checks that every
metric they use is exported here.

Per-run series (label ``run``) are bounded: every one is written through :meth:`Metrics.of_run`,
which remembers it, so that :meth:`Metrics.forget_run` removes all of a run's series when the
run is deleted or expires, and at most ``max_runs`` runs have series at once. Past that, the
series of the run least recently active here are dropped (not summed into a ``run="other"``:
a histogram of latencies or a pool size has no meaningful sum across runs, and a label that
means different runs at different times would mislead per-run panels). A dropped run that is
active again starts its series anew, which Prometheus reads as a counter reset: ``rate()`` and
``increase()`` are unaffected; only the lifetime total shown for an idle run goes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from trainer_client.types import GroupResult

DEFAULT_MAX_RUNS = 300  # runs with series at once (about 23 series each)

M = TypeVar("M", bound=MetricWrapperBase)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """``max_runs``: most runs with series at once (see the module doc)."""

    def __init__(self, *, max_runs: int = DEFAULT_MAX_RUNS) -> None:
        if max_runs < 1:
            raise ValueError(f"max_runs: must be >= 1, got {max_runs}")
        self.max_runs = max_runs
        # run id -> its series (metric, label values), least recently active first
        self._run_series: OrderedDict[str, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = (
            OrderedDict()
        )
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
            "arena_judge_requests", "Requests the judge received (retries included), by run.",
            ["run"], registry=r,
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
            "Requests refused for a missing or unknown API key.",
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

    def of_run(self, metric: M, run_id: str, *labels: str) -> M:
        """``metric``'s series for ``run_id`` (and the metric's other ``labels``), remembered
        as the run's; the run is now the most recently active. Beyond ``max_runs`` runs, the
        least recently active run's series go."""
        series = self._run_series.get(run_id)
        if series is None:
            series = self._run_series[run_id] = set()
            while len(self._run_series) > self.max_runs:
                self.forget_run(next(iter(self._run_series)))
        else:
            self._run_series.move_to_end(run_id)
        values = (run_id, *labels)
        series.add((metric, values))
        return metric.labels(*values)

    def runs(self) -> list[str]:
        """The runs that have series, least recently active first."""
        return list(self._run_series)

    def judge_cost(self, run_id: str, result: GroupResult) -> None:
        """Count what a group of ``run_id`` cost the judge."""
        self.of_run(self.comparisons, run_id).inc(result.comparisons)
        self.of_run(self.cached_comparisons, run_id).inc(result.cached_comparisons)
        self.of_run(self.judge_requests, run_id).inc(result.judge_requests)
        self.of_run(self.judge_calls, run_id).inc(result.comparisons)

    def watch_scheduler(self, scheduler) -> None:
        """Read the judge queue's depth from ``scheduler`` at every scrape."""
        self.queued_calls.set_function(lambda: scheduler.queued)
        self.calls_in_flight.set_function(lambda: scheduler.in_flight)

    def forget_run(self, run_id: str) -> None:
        """Remove every series of the run (deleted, expired, or the least recently active)."""
        for metric, values in self._run_series.pop(run_id, ()):
            try:
                metric.remove(*values)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
