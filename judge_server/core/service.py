"""The service core: groups in, advantages out. It knows no transport.

One dead group's way through the server, in the order it happens:

1. :meth:`ArenaService.rank` checks the request (:mod:`.validation`) and finds the run's
   settings (:class:`~.runs.RunRegistry`: tenants, creation on first use when allowed).
2. Each group's rewards decide: a live group gets the standard group-relative advantages at
   once (:mod:`..arena.advantages`); a dead group takes an admission slot
   (:class:`~.admission.Admission`, refused whole with :class:`Overloaded` when the run or the
   server is at capacity) and, under a request id, is ranked once however often it is retried
   (:class:`~.admission.SingleFlight`; a request id reused for a different group is refused).
3. The group draws anchors from its prompt's pool (:class:`~.anchor_pools.AnchorPools`) and
   plays its tournament (:func:`..arena.ranking.rank_dead_group`), whose rounds go to the judge
   through the :class:`JudgeScheduler` (batched with every other group in flight, fair across
   runs).
4. Its traces enter the prompt's pool, and the run's statistics and metrics count the group
   (:class:`~.stats.Statistics`).

A judge failure fails only its groups (``status="judge_failed"``, the advantages they would
have had without the judge); a store failure is an error for the caller: nothing accepted is
silently lost.

Retention and readiness are the run registry's (:class:`~.runs.RunRegistry`,
:func:`~.runs.readiness`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence

import numpy as np

from trainer_client.types import Group, GroupResult, RunSettings

from ..arena import advantages
from ..arena.pools import Anchor
from ..arena.ranking import rank_dead_group
from ..comparators.base import Comparator
from ..metrics import Metrics
from ..store.base import Store
from ..store.redis_shared import shared_state
from .admission import Admission, SingleFlight
from .anchor_pools import AnchorPools
from .runs import RunRegistry, readiness, run_name
from .scheduler import JudgeScheduler
from .stats import Statistics
from .streaming import rank_stream
from .validation import Limits, check_group, check_groups, check_id

logger = logging.getLogger(__name__)


class ArenaService:
    """Ranks groups for runs. One instance per server; transports call it."""

    def __init__(
        self,
        *,
        comparator: Comparator,
        store: Store,
        scheduler: JudgeScheduler | None = None,
        limits: Limits | None = None,
        defaults: RunSettings | None = None,
        auto_create_runs: bool = True,
        max_stream_in_flight: int = 1024,
        max_groups_in_flight: int = 4096,
        max_run_groups_in_flight: int = 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self.comparator = comparator
        self.store = store
        self.limits = limits or Limits()
        self.max_stream_in_flight = max_stream_in_flight
        self.metrics = metrics or Metrics()
        self.scheduler = scheduler or JudgeScheduler(comparator)
        if self.scheduler.observe is None:
            self.scheduler.observe = self.metrics.batch_size.observe
        self.metrics.watch_scheduler(self.scheduler)
        self.stats = Statistics(self.metrics)
        self.runs = RunRegistry(
            store, comparator, limits=self.limits,
            defaults=defaults or RunSettings(run_id="default"),
            auto_create=auto_create_runs, on_forget=self.stats.forget,
            also_known=lambda: [*self.metrics.runs(), *self.stats.runs()],
        )
        self.admission = Admission(
            self.stats, max_groups_in_flight=max_groups_in_flight,
            max_run_groups_in_flight=max_run_groups_in_flight,
        )
        self.single_flight: SingleFlight[GroupResult] = SingleFlight(shared=shared_state(store)[0])
        self.pools = AnchorPools(store, self.metrics)
        # the run registry's calls, under the names the transports use
        self.create_run = self.runs.create
        self.get_run = self.runs.get
        self.open_run = self.runs.open
        self.delete_run = self.runs.delete
        self.list_runs = self.runs.list
        self.settings_for_new_run = self.runs.settings_for_new_run

    # -- statistics --------------------------------------------------------------------------

    async def run_stats(self, run_id: str, *, tenant: str | None = None) -> dict:
        """The run's figures (the ``RunStats`` message's fields) on this server."""
        settings = await self.runs.find(run_id, tenant=tenant)
        return await self._stats_view(settings.run_id, run_id)

    async def _stats_view(self, key: str, run_id: str) -> dict:
        prompts, anchors = await self.pools.size(key)
        return {**self.stats.of(key).view(prompts, anchors), "run_id": run_id}

    async def server_stats(self, *, tenant: str | None = None) -> dict:
        """Every run ``tenant`` may see, and the judge queue (``GET /v1/stats``)."""
        runs = await self.store.list_runs(tenant)  # already the tenant's: no check per run
        return {
            "runs": [await self._stats_view(r.run_id, run_name(r.run_id, tenant)) for r in runs],
            "queued_calls": self.scheduler.queued,
            "calls_in_flight": self.scheduler.in_flight,
            "groups_in_flight": self.admission.groups_in_flight,
            "judge": self.comparator.name,
        }

    # -- ranking -----------------------------------------------------------------------------

    async def rank(
        self, run_id: str, groups: Sequence[Group], *, tenant: str | None = None
    ) -> list[GroupResult]:
        """Rank every group of one request, results in its order; raises :class:`Overloaded`
        (nothing accepted) when its dead groups do not fit."""
        check_id(run_id, "run_id")
        check_groups(list(groups), self.limits)
        return await self._rank_checked(
            run_id, groups, tenant, [f"groups[{k}]" for k in range(len(groups))]
        )

    async def rank_group(
        self, run_id: str, group: Group, *, tenant: str | None = None
    ) -> GroupResult:
        check_id(run_id, "run_id")
        check_group(group, self.limits)
        (result,) = await self._rank_checked(run_id, [group], tenant, ["group"])
        return result

    async def _rank_checked(
        self, run_id: str, groups: Sequence[Group], tenant: str | None, fields: list[str]
    ) -> list[GroupResult]:
        settings = await self.runs.find(run_id, tenant=tenant, create=True)  # under its key
        digests = self.single_flight.check_groups(settings.run_id, groups, fields)
        slots = [self._needs_slot(settings, g) for g in groups]
        self.admission.admit(settings.run_id, sum(slots))
        return list(await asyncio.gather(*(
            self._rank_once(settings, g, slot, digest, f"{field}.request_id")
            for g, slot, digest, field in zip(groups, slots, digests, fields)
        )))

    def rank_stream(
        self, requests: AsyncIterable[tuple[str, Group]], *, tenant: str | None = None
    ) -> AsyncIterator[GroupResult]:
        """Rank ``(run_id, group)`` pairs as they arrive (:mod:`.streaming`)."""
        rank_group = functools.partial(self.rank_group, tenant=tenant)
        return rank_stream(rank_group, requests, max_in_flight=self.max_stream_in_flight)

    def _needs_slot(self, settings: RunSettings, group: Group) -> bool:
        """Whether ``group`` starts judge work: dead, and not done or under way already."""
        if group.request_id and (settings.run_id, group.request_id) in self.single_flight:
            return False
        return advantages.is_dead([t.reward for t in group.traces], eps=settings.dead_eps)

    async def _rank_once(
        self, settings: RunSettings, group: Group, slot: bool, digest: bytes, field: str
    ) -> GroupResult:
        """Rank a group, or return the result of an earlier try with the same request id
        (and ``digest``; ``field`` names the request id when another group used it).
        ``slot``: the group holds an admission slot, given back when its ranking ends."""
        release = functools.partial(self.admission.release, settings.run_id) if slot else None
        if not group.request_id:
            try:
                return await self._rank(settings, group)
            finally:
                if release is not None:
                    release()
        result = await self.single_flight.do(
            (settings.run_id, group.request_id), lambda: self._rank(settings, group),
            digest=digest, field=field, release=release,
        )
        return dataclasses.replace(result, group_id=group.group_id)

    async def _rank(self, settings: RunSettings, group: Group) -> GroupResult:
        started = time.perf_counter()
        rewards = np.array([t.reward for t in group.traces], dtype=float)
        if not advantages.is_dead(rewards, eps=settings.dead_eps):
            adv = advantages.group_relative(rewards, divide_by_std=settings.divide_by_std)
            result = GroupResult(
                group_id=group.group_id, advantages=tuple(adv.tolist()), routed=False
            )
            outcome = "live"
        else:
            result = await self._judge(settings, group)
            outcome = "judged" if result.status == "ok" else result.status
        latency = time.perf_counter() - started
        self.stats.answered(settings.run_id, outcome, result, latency)
        return dataclasses.replace(result, latency_ms=latency * 1e3)

    async def _judge(self, settings: RunSettings, group: Group) -> GroupResult:
        run_id = settings.run_id
        prompt_id = group.prompt_id or group.group_id
        drawn = await self.pools.draw(settings, prompt_id)

        ask = functools.partial(self.scheduler.compare_with_hits, run_id=run_id,
                                weight=settings.weight, cap=settings.max_calls_in_flight or None)
        ranked = await rank_dead_group(group, settings, drawn, ask,
                                       max_budget=self.limits.max_budget)
        self.stats.unread(run_id, ranked.unread, self.comparator.name)
        if ranked.result.status == "judge_failed":
            logger.warning("judge failed for run %s group %s: %s",
                           run_id, group.group_id, ranked.result.error)
        elif ranked.preferred:
            await self.pools.let_in(settings, group, prompt_id, ranked)
        return ranked.result

    async def pool_snapshot(
        self, run_id: str, *, tenant: str | None = None
    ) -> dict[str, list[Anchor]]:
        """Every prompt's anchors for a run (for tests and status pages)."""
        settings = await self.runs.find(run_id, tenant=tenant)
        return await self.pools.snapshot(settings.run_id)

    # -- lifecycle ---------------------------------------------------------------------------

    async def readiness(self) -> str | None:
        """None when ready to rank; else what is not (:func:`.runs.readiness`)."""
        return await readiness(self.comparator, self.store)

    async def check_health(self) -> bool:
        return await self.readiness() is None

    async def aclose(self) -> None:
        await self.single_flight.cancel()
        await self.scheduler.aclose()
        await self.comparator.aclose()
        await self.store.aclose()


__all__ = ["ArenaService"]
