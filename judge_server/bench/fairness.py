"""Fair sharing of the judge: a quiet run's latency alone and under another run's flood.

:func:`run` starts a judge server in this process (memory store, free loopback ports) whose
judge is a :class:`SimulatedGpuJudge`: the ``instant`` judge's answers at a GPU's pace,
``base_s + per_item_s * n`` per batch of ``n`` comparisons, one batch at a time (by default a
full batch takes 1.9 times as long as a group's round alone, and the judge, not the server, is
the bottleneck). Two runs send dead groups (every reward equal: every group plays a tournament)
over gRPC (``Rank``, one group per call), open loop, at Poisson arrival times:

``quiet``
    ``rate`` groups/s;
``flood``
    ``flood_factor`` times as many, more than the judge can answer, so that rounds queue in
    the scheduler. Its groups in flight are capped on the client side
    (``flood_max_in_flight``; arrivals past it are skipped and counted), so that its queue,
    and the benchmark, stay bounded whatever the server's admission limits.

Phase 1 sends the quiet run alone, phase 2 both runs together, for the same ``groups`` quiet
groups each; latency is the client's, from sending a group to its result. The figure is
``p99_ratio``: the quiet run's p99 latency under the flood over its p99 alone.

In arrival order (``fifo``) each of the quiet run's rounds waits behind the flood's whole
queue. With the fair scheduler it goes in the next batch, but that batch is full: under the
flood each round takes a full batch's time instead of a small one's (and a group's first round
also waits for the batch at the judge when it arrives). So the fair ratio is about the full
batch's time over a small batch's (``full_batch_ms / small_batch_ms`` in the output): it stays
under 2 while a full batch takes less than twice a small one, as on a GPU that a small batch
leaves mostly idle, and no scheduler that fills its batches can do better. The scheduler
keeps one batch at the judge (``batches_in_flight``): the simulated judge serves one at a
time, and a second would wait there, in arrival order, out of the scheduler's reach.

Run it as ``arena-judge bench fairness``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..comparators.base import Comparator, Comparison
from ..comparators.simulated import instant_comparator
from .serve import CHANNEL_OPTIONS, make_groups

POLICIES = ("fair", "fifo")
WARM_UP_GROUPS = 20


class SimulatedGpuJudge(Comparator):
    """The ``instant`` judge at a GPU's pace: ``base_s + per_item_s * n`` per batch of ``n``.

    The device serves one batch at a time (a batch sent while it is busy waits its turn), as an
    engine does, and counts what it served.
    """

    name = "simulated-gpu"

    def __init__(self, *, base_s: float, per_item_s: float) -> None:
        self.base_s = base_s
        self.per_item_s = per_item_s
        self.inner = instant_comparator()
        self.comparisons = 0
        self.batches = 0
        self.busy_s = 0.0
        self._device: asyncio.Lock | None = None

    def batch_time(self, n: int) -> float:
        return self.base_s + self.per_item_s * n

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        if self._device is None:
            self._device = asyncio.Lock()
        async with self._device:
            seconds = self.batch_time(len(comparisons))
            await asyncio.sleep(seconds)
            self.busy_s += seconds
            self.batches += 1
            self.comparisons += len(comparisons)
        return await self.inner.compare(comparisons)


@dataclass
class Load:
    """What one run's client saw in one phase."""

    latencies: list[float] = field(default_factory=list)
    server_latencies: list[float] = field(default_factory=list)  # the server's own figure
    failed: int = 0  # answered without the judge's verdicts (status other than "ok")
    refused: int = 0  # RESOURCE_EXHAUSTED: the server was at capacity
    skipped: int = 0  # arrivals not sent: the client's cap on groups in flight was reached

    def summary(self) -> dict:
        ms = np.asarray(self.latencies) * 1e3
        figures: dict[str, Any] = {
            "groups": len(self.latencies), "failed": self.failed, "refused": self.refused,
            "skipped": self.skipped,
        }
        if len(ms):
            server_ms = np.asarray(self.server_latencies) * 1e3
            figures.update(p50_ms=float(np.percentile(ms, 50)),
                           p99_ms=float(np.percentile(ms, 99)), mean_ms=float(ms.mean()),
                           server_p99_ms=float(np.percentile(server_ms, 99)))
        return figures


def arrival_times(rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` Poisson arrival times at ``rate`` per second, the first at 0."""
    gaps = rng.exponential(1.0 / rate, size=n)
    return np.cumsum(gaps) - gaps[0]


async def _send(stub, run_id: str, groups: list[dict], times: np.ndarray, started: float,
                max_in_flight: int | None) -> Load:
    """Send ``groups[k]`` at ``started + times[k]`` (open loop); wait for every answer."""
    import grpc

    from trainer_client.protocol import arena_pb2 as pb

    load = Load()
    tasks: set[asyncio.Task] = set()

    async def one(message) -> None:
        sent = time.perf_counter()
        try:
            response = await stub.Rank(message)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            load.refused += 1
            return
        load.latencies.append(time.perf_counter() - sent)
        load.server_latencies.append(response.results[0].latency_ms / 1e3)
        load.failed += response.results[0].status != "ok"

    for group, at in zip(groups, times):
        delay = started + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if max_in_flight is not None and len(tasks) >= max_in_flight:
            load.skipped += 1
            continue
        message = pb.RankRequest(run_id=run_id, groups=[pb.Group(**group)])
        task = asyncio.create_task(one(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return load


@dataclass(frozen=True)
class Options:
    groups: int
    rate: float
    flood_factor: float
    group_size: int
    trace_bytes: int
    base_s: float
    per_item_s: float
    max_batch: int
    batches_in_flight: int
    flood_max_in_flight: int
    seed: int


async def _phase(stub, options: Options, judge: SimulatedGpuJudge, scheduler, *, tag: str,
                 flood: bool, rng: np.random.Generator) -> dict:
    """One phase: the quiet run's groups (and the flood's, with ``flood``); its figures."""
    quiet = arrival_times(options.rate, options.groups, rng)
    senders: list[tuple[str, np.ndarray, int | None]] = [("quiet", quiet, None)]
    if flood:  # as long as the quiet run sends
        rate = options.rate * options.flood_factor
        times = arrival_times(rate, int(rate * quiet[-1] * 1.2) + 16, rng)
        senders.append(("flood", times[times <= quiet[-1]], options.flood_max_in_flight))
    messages = {
        run_id: make_groups(len(times), options.group_size, options.trace_bytes,
                            f"{tag}-{run_id}")
        for run_id, times, _ in senders
    }
    comparisons, busy, batches = judge.comparisons, judge.busy_s, scheduler.batches
    started = time.perf_counter()
    loads = await asyncio.gather(*(
        _send(stub, run_id, messages[run_id], times, started, cap)
        for run_id, times, cap in senders
    ))
    wall = time.perf_counter() - started
    served, sent = judge.comparisons - comparisons, scheduler.batches - batches
    figures = {
        "wall_s": wall,
        "quiet": loads[0].summary(),
        "judge": {
            "comparisons_per_s": served / wall,
            "busy_fraction": (judge.busy_s - busy) / wall,
            "batches": sent,
            "mean_batch": served / max(1, sent),
        },
    }
    if flood:
        figures["flood"] = loads[1].summary()
    return figures


async def _measure(policy: str, options: Options, progress: bool) -> dict:
    """Both phases on a fresh server whose scheduler follows ``policy``."""
    import grpc

    from trainer_client.protocol import arena_pb2_grpc as pb_grpc

    from ..app import build_service
    from ..server import JudgeServer
    from ..settings import ServerSettings

    settings = ServerSettings(
        host="127.0.0.1", grpc_port=0, http_port=0, comparator="instant", store="memory",
        scheduler=policy, max_batch=options.max_batch,
        judge_batches_in_flight=options.batches_in_flight, log_level="warning",
    )
    judge = SimulatedGpuJudge(base_s=options.base_s, per_item_s=options.per_item_s)
    service = build_service(settings, comparator=judge)
    server = JudgeServer(service, host=settings.host)
    await server.start()
    rng = np.random.default_rng(options.seed)
    try:
        async with grpc.aio.insecure_channel(server.grpc_address,
                                             options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.ArenaStub(channel)
            warm = make_groups(WARM_UP_GROUPS, options.group_size, options.trace_bytes,
                               f"{policy}-warm")
            await _send(stub, "quiet", warm, np.zeros(len(warm)), time.perf_counter(), None)
            result = {}
            for name, flood in (("alone", False), ("under_flood", True)):
                if progress:
                    print(f"bench fairness: {policy}, quiet run {name.replace('_', ' ')} ...",
                          file=sys.stderr, flush=True)
                result[name] = await _phase(stub, options, judge, service.scheduler,
                                            tag=f"{policy}-{name}", flood=flood, rng=rng)
    finally:
        await server.stop(grace=5.0)
    alone, under = result["alone"]["quiet"], result["under_flood"]["quiet"]
    return {
        "quiet_alone": alone,
        "quiet_under_flood": under,
        "flood": result["under_flood"]["flood"],
        "p99_ratio": under["p99_ms"] / alone["p99_ms"],
        "p50_ratio": under["p50_ms"] / alone["p50_ms"],
        "judge_alone": result["alone"]["judge"],
        "judge_under_flood": result["under_flood"]["judge"],
    }


def run(
    *,
    policy: str = "both",
    groups: int = 300,
    rate: float = 10.0,
    flood_factor: float = 10.0,
    group_size: int = 16,
    trace_bytes: int = 256,
    base_ms: float = 20.0,
    per_item_ms: float = 0.08,
    max_batch: int = 256,
    batches_in_flight: int = 1,
    flood_max_in_flight: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Measure ``policy`` (``fair``, ``fifo`` or ``both``); see the module doc."""
    policies = POLICIES if policy == "both" else (policy,)
    if any(p not in POLICIES for p in policies):
        raise ValueError(f"policy: must be one of {POLICIES} or 'both', got {policy!r}")
    if groups < 2 or rate <= 0 or flood_factor <= 0 or group_size < 2 or max_batch < 1:
        raise ValueError("groups >= 2, rate > 0, flood_factor > 0, group_size >= 2, "
                         "max_batch >= 1")
    options = Options(
        groups=groups, rate=rate, flood_factor=flood_factor, group_size=group_size,
        trace_bytes=trace_bytes, base_s=base_ms / 1e3, per_item_s=per_item_ms / 1e3,
        max_batch=max_batch, batches_in_flight=batches_in_flight,
        flood_max_in_flight=flood_max_in_flight, seed=seed,
    )
    figures = {p: asyncio.run(_measure(p, options, progress)) for p in policies}
    judge = SimulatedGpuJudge(base_s=options.base_s, per_item_s=options.per_item_s)
    full = judge.batch_time(max_batch)
    return {
        "p99_ratio": figures[policies[0]]["p99_ratio"],
        "policy": policies[0],
        "policies": figures,
        "groups": groups,
        "rate": rate,
        "flood_rate": rate * flood_factor,
        "flood_factor": flood_factor,
        "flood_max_in_flight": flood_max_in_flight,
        "group_size": group_size,
        "trace_bytes": trace_bytes,
        "judge": {
            "base_ms": base_ms,
            "per_item_ms": per_item_ms,
            "max_batch": max_batch,
            "batches_in_flight": batches_in_flight,
            "full_batch_ms": full * 1e3,
            "small_batch_ms": judge.batch_time(group_size) * 1e3,
            "capacity_comparisons_per_s": max_batch / full,
        },
        "cpus": os.cpu_count(),
    }


def format_table(result: dict) -> str:
    j = result["judge"]
    lines = [
        f"quiet run: {result['groups']} dead groups of {result['group_size']} at "
        f"{result['rate']:g}/s; flood: {result['flood_rate']:g}/s "
        f"({result['flood_factor']:g}x), at most {result['flood_max_in_flight']} in flight "
        f"(client-side cap; arrivals past it are skipped); Poisson arrivals, gRPC Rank",
        f"judge: simulated GPU, {j['base_ms']:g} ms + {j['per_item_ms']:g} ms per comparison "
        f"per batch, one batch at a time (full batch of {j['max_batch']}: "
        f"{j['full_batch_ms']:.1f} ms, a group's round of {result['group_size']}: "
        f"{j['small_batch_ms']:.1f} ms, {j['full_batch_ms'] / j['small_batch_ms']:.2f}x); "
        f"capacity {j['capacity_comparisons_per_s']:.0f} "
        f"comparisons/s; {j['batches_in_flight']} batch(es) in flight; {result['cpus']} CPUs",
        "",
        f"{'policy':<8}{'latency of':<22}{'p50 ms':>9}{'p99 ms':>9}{'groups':>8}"
        f"{'failed':>8}{'refused':>8}{'skipped':>8}",
    ]
    for policy, figures in result["policies"].items():
        for label, key in (("quiet, alone", "quiet_alone"),
                           ("quiet, under flood", "quiet_under_flood"), ("flood", "flood")):
            r = figures[key]
            lines.append(
                f"{policy:<8}{label:<22}{r.get('p50_ms', float('nan')):>9.1f}"
                f"{r.get('p99_ms', float('nan')):>9.1f}{r['groups']:>8}{r['failed']:>8}"
                f"{r['refused']:>8}{r['skipped']:>8}"
            )
        under = figures["judge_under_flood"]
        lines.append(
            f"{policy:<8}p99_ratio {figures['p99_ratio']:.2f} (p50 ratio "
            f"{figures['p50_ratio']:.2f}); judge under flood: "
            f"{under['comparisons_per_s']:.0f} comparisons/s, busy "
            f"{under['busy_fraction']:.0%}, mean batch {under['mean_batch']:.0f}"
        )
    return "\n".join(lines)


__all__ = ["SimulatedGpuJudge", "arrival_times", "format_table", "run"]
