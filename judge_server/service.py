"""The service core: groups in, advantages out. It knows no transport.

For each group: check it, find the run's settings (creating the run on first use when the
server allows it), and decide whether the group is dead. A live group gets standard
group-relative advantages at once. A dead group plays a tournament: its rounds go to the
comparator through the :class:`JudgeScheduler` (batched with every other group in flight), the
Bradley-Terry fit turns the verdicts into strengths, the strengths become advantages, and the
run's anchor pool for the prompt is updated in the store (an atomic read-modify-write, so
that replicas sharing a store never lose each other's anchors).

Tenants: every call takes the caller's ``tenant`` (``None`` on a server without API keys: no
checks). A run belongs to the tenant that created it; any other tenant gets
:class:`PermissionDenied` for it, whatever the call.

Admission: a dead group takes a slot until it is answered. A request is admitted whole while
its run has fewer than ``max_run_groups_in_flight`` groups in flight and the server fewer than
``max_groups_in_flight`` (so one request may overshoot a cap by its own size, and a request
larger than a cap still gets in once the run is idle); otherwise it is refused whole with
:class:`Overloaded` (RESOURCE_EXHAUSTED / 429 and a retry-after hint) before anything is
accepted. A group once admitted is always answered. Judge calls of every run go
through one fair scheduler (:mod:`judge_server.scheduler`): the per-run cap keeps a flooding
run from holding every slot, the scheduler keeps it from holding the judge.

What a dead group cost the judge is counted three ways, per group and per run: the comparisons
its tournament needed, those a verdict cache answered (the scheduler hands back, with each
round's answers, which ones the comparator's cache gave), and the requests that reached the
judge (the rest).

A judge failure fails only its groups, and each such group gets the advantages it would have
had without the judge (``status="judge_failed"``), and the cost of the rounds answered before
the failure. A store failure is an error for the caller: nothing is silently lost.

A judge that answers but says nothing is counted too. A dead group whose traces the judge told
apart in nothing comes back ``tied`` (status ``"ok"``, every advantage zero): every verdict of
its tournament was "no preference" (``p = 0.5``; then its advantages are zero even where pool
anchors would have pulled the traces' strengths apart, and its traces do not enter the pool),
or the fit left its traces level. A verdict the judge gave but that could not be read
(:data:`~.comparators.base.UNREAD`, e.g. an LLM judge's verdict tokens missing from its top-k)
counts as no preference and is counted per run (``unread_verdicts``) and logged, the first
time and then every :data:`UNREAD_LOG_EVERY`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Sequence

import numpy as np

from trainer_client.types import Group, GroupResult, RunSettings

from .arena import advantages, pools
from .arena.tournaments import Verdict, make_tournament
from .comparators.base import NO_PREFERENCE, Comparator, Comparison, is_unread
from .errors import (
    InvalidRequest,
    JudgeError,
    Overloaded,
    PermissionDenied,
    RunExists,
    RunNotFound,
)
from .metrics import Metrics
from .scheduler import JudgeScheduler
from .stats import RunStats
from .store.base import Store, StoredRun
from .validation import Limits, check_group, check_groups, check_id, check_settings

logger = logging.getLogger(__name__)

DONE_CACHE_SIZE = 10_000  # results kept by request id, so that a retried group is not judged twice
UNREAD_LOG_EVERY = 1000  # unread verdicts between two warnings about them (after the first)


def _seed(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


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
        self.defaults = defaults or RunSettings(run_id="default")
        self.auto_create_runs = auto_create_runs
        self.max_stream_in_flight = max_stream_in_flight
        self.max_groups_in_flight = max_groups_in_flight
        self.max_run_groups_in_flight = max_run_groups_in_flight
        self.metrics = metrics or Metrics()
        self.scheduler = scheduler or JudgeScheduler(comparator)
        if self.scheduler.observe is None:
            self.scheduler.observe = self.metrics.batch_size.observe
        self.metrics.watch_scheduler(self.scheduler)
        self.groups_in_flight = 0
        self._runs: dict[str, StoredRun] = {}  # cache, unless the store is shared
        self._stats: dict[str, RunStats] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task] = {}
        self._done: OrderedDict[tuple[str, str], GroupResult] = OrderedDict()
        self.unread_verdicts = 0  # all runs, for the warning's cadence

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, settings: RunSettings, *, tenant: str | None = None) -> RunSettings:
        check_settings(settings, self.limits)
        run = StoredRun(settings, tenant or "")
        if not await self.store.create_run(run):
            existing = await self.store.get_run(settings.run_id)
            if existing is not None:
                self._authorise(existing, tenant)
            raise RunExists(settings.run_id)
        try:
            self._apply_template(settings)
        except InvalidRequest:
            await self.store.delete_run(settings.run_id)
            raise
        self._runs[settings.run_id] = run
        return settings

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunSettings:
        check_id(run_id, "run_id")
        return (await self._stored(run_id, tenant)).settings

    async def _stored(self, run_id: str, tenant: str | None) -> StoredRun:
        """The run, authorised for ``tenant``; read from the store unless cached."""
        run = None if self.store.shared else self._runs.get(run_id)
        if run is None:
            run = await self.store.get_run(run_id)
            if run is None:
                if self._runs.pop(run_id, None) is not None:  # deleted by another replica
                    self.comparator.forget_run(run_id)
                raise RunNotFound(run_id)
            cached = self._runs.get(run_id)
            if cached is None or cached.settings != run.settings:
                try:  # a run new to this process: its template goes to the judge
                    self._apply_template(run.settings)
                except InvalidRequest as exc:
                    logger.warning("run %s keeps the server's judge prompt: %s", run_id, exc)
            self._runs[run_id] = run
        self._authorise(run, tenant)
        return run

    @staticmethod
    def _authorise(run: StoredRun, tenant: str | None) -> None:
        if tenant is not None and run.tenant != tenant:
            raise PermissionDenied(run.run_id)

    async def delete_run(self, run_id: str, *, tenant: str | None = None) -> bool:
        check_id(run_id, "run_id")
        try:
            await self._stored(run_id, tenant)
        except RunNotFound:
            return False
        self._runs.pop(run_id, None)
        self._stats.pop(run_id, None)
        self.metrics.forget_run(run_id)
        self.comparator.forget_run(run_id)
        return await self.store.delete_run(run_id)

    def _apply_template(self, settings: RunSettings) -> None:
        try:
            self.comparator.set_run_template(settings.run_id, settings.judge_template or None)
        except ValueError as exc:
            raise InvalidRequest("settings.judge_template", str(exc)) from None

    async def list_runs(self, *, tenant: str | None = None) -> list[RunSettings]:
        return [run.settings for run in await self.store.list_runs(tenant)]

    def settings_for_new_run(self, run_id: str) -> RunSettings:
        """The server's default settings under a new run id."""
        return dataclasses.replace(self.defaults, run_id=run_id)

    async def open_run(self, run_id: str, *, tenant: str | None = None) -> RunSettings:
        """The run's settings for ``tenant``; a new run gets the defaults when allowed."""
        check_id(run_id, "run_id")
        return await self._run(run_id, tenant)

    async def _run(self, run_id: str, tenant: str | None) -> RunSettings:
        try:
            return (await self._stored(run_id, tenant)).settings
        except RunNotFound:
            if not self.auto_create_runs:
                raise
        try:
            await self.create_run(self.settings_for_new_run(run_id), tenant=tenant)
        except RunExists:  # created concurrently by another request
            pass
        return (await self._stored(run_id, tenant)).settings

    # -- statistics --------------------------------------------------------------------------

    def _stats_of(self, run_id: str) -> RunStats:
        stats = self._stats.get(run_id)
        if stats is None:
            stats = self._stats[run_id] = RunStats(run_id)
        return stats

    async def run_stats(self, run_id: str, *, tenant: str | None = None) -> dict:
        """The run's figures (the ``RunStats`` message's fields) on this server."""
        check_id(run_id, "run_id")
        await self._stored(run_id, tenant)
        return await self._stats_view(run_id)

    async def _stats_view(self, run_id: str) -> dict:
        prompts, anchors = await self.store.pool_size(run_id)
        self.metrics.pool_anchors.labels(run_id).set(anchors)
        return self._stats_of(run_id).view(prompts, anchors)

    async def server_stats(self, *, tenant: str | None = None) -> dict:
        """Every run ``tenant`` may see, and the judge queue (``GET /v1/stats``)."""
        runs = await self.store.list_runs(tenant)  # already the tenant's: no check per run
        return {
            "runs": [await self._stats_view(run.run_id) for run in runs],
            "queued_calls": self.scheduler.queued,
            "calls_in_flight": self.scheduler.in_flight,
            "groups_in_flight": self.groups_in_flight,
            "judge": self.comparator.name,
        }

    # -- admission ---------------------------------------------------------------------------

    def _admit(self, run_id: str, n: int) -> None:
        """Take ``n`` slots for dead groups of ``run_id``, or refuse them all."""
        if n == 0:
            return
        stats = self._stats_of(run_id)
        if (
            stats.in_flight >= self.max_run_groups_in_flight
            or self.groups_in_flight >= self.max_groups_in_flight
        ):
            stats.refused += n
            self.metrics.refused.labels(run_id).inc(n)
            retry_after = min(10.0, max(0.05, stats.latency_ms(50) / 1e3))
            raise Overloaded(
                f"run {run_id!r}: the server is at capacity for {n} more dead groups "
                f"({stats.in_flight} of this run in flight, limit "
                f"{self.max_run_groups_in_flight}; {self.groups_in_flight} in all, limit "
                f"{self.max_groups_in_flight}); try again in {retry_after:.2f} s",
                retry_after_s=retry_after,
            )
        stats.in_flight += n
        self.groups_in_flight += n
        self.metrics.groups_in_flight.labels(run_id).set(stats.in_flight)

    def _release(self, run_id: str) -> None:
        stats = self._stats_of(run_id)
        stats.in_flight -= 1
        self.groups_in_flight -= 1
        self.metrics.groups_in_flight.labels(run_id).set(stats.in_flight)

    def _needs_slot(self, settings: RunSettings, group: Group) -> bool:
        """Whether ranking ``group`` starts new judge work (a dead group not already done or
        in flight under its request id)."""
        if group.request_id:
            key = (settings.run_id, group.request_id)
            if key in self._done or key in self._inflight:
                return False
        rewards = np.array([t.reward for t in group.traces], dtype=float)
        return bool(advantages.is_dead(rewards, eps=settings.dead_eps))

    # -- ranking -----------------------------------------------------------------------------

    async def rank(
        self, run_id: str, groups: Sequence[Group], *, tenant: str | None = None
    ) -> list[GroupResult]:
        """Rank every group of one request; results in the order of ``groups``.

        Raises :class:`Overloaded` (nothing accepted) when its dead groups do not fit.
        """
        check_id(run_id, "run_id")
        check_groups(list(groups), self.limits)
        settings = await self._run(run_id, tenant)
        slots = [self._needs_slot(settings, g) for g in groups]
        self._admit(settings.run_id, sum(slots))
        return list(await asyncio.gather(
            *(self._rank_once(settings, g, slot) for g, slot in zip(groups, slots))
        ))

    async def rank_group(
        self, run_id: str, group: Group, *, tenant: str | None = None
    ) -> GroupResult:
        check_id(run_id, "run_id")
        check_group(group, self.limits)
        settings = await self._run(run_id, tenant)
        slot = self._needs_slot(settings, group)
        self._admit(settings.run_id, int(slot))
        return await self._rank_once(settings, group, slot)

    async def rank_stream(
        self, requests: AsyncIterable[tuple[str, Group]], *, tenant: str | None = None
    ) -> AsyncIterator[GroupResult]:
        """Rank ``(run_id, group)`` pairs as they arrive; yield each result when it is ready.

        A bad group yields a result with ``status="invalid"`` naming the field at fault, and a
        group refused for load one with ``status="overloaded"`` and ``retry_after_s``; the
        stream goes on. A run of another tenant ends the stream (PermissionDenied). Results
        are not in arrival order. At most ``max_stream_in_flight`` groups of one stream are
        ranked at once; the stream is not read further until one ends.
        """
        results: asyncio.Queue[GroupResult | PermissionDenied | None] = asyncio.Queue()
        tasks: set[asyncio.Task] = set()
        room = asyncio.Semaphore(self.max_stream_in_flight)

        async def one(run_id: str, group: Group) -> None:
            try:
                result = await self.rank_group(run_id, group, tenant=tenant)
            except (InvalidRequest, RunNotFound) as exc:
                result = GroupResult(
                    group_id=group.group_id, advantages=(), routed=False,
                    status="invalid", error=str(exc),
                )
            except Overloaded as exc:
                result = GroupResult(
                    group_id=group.group_id, advantages=(), routed=False, status="overloaded",
                    error=str(exc), retry_after_s=exc.retry_after_s,
                )
            except PermissionDenied as exc:  # ends the stream: the caller is at fault
                result = exc
            finally:
                room.release()
            await results.put(result)

        async def feed() -> None:
            try:
                async for run_id, group in requests:
                    await room.acquire()  # read no further ahead than the stream's limit
                    task = asyncio.create_task(one(run_id, group))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.gather(*list(tasks))
            finally:
                await results.put(None)

        feeder = asyncio.create_task(feed())
        try:
            while (result := await results.get()) is not None:
                if isinstance(result, PermissionDenied):
                    raise result
                yield result
            await feeder  # re-raise a failure of the request stream or a group
        finally:
            feeder.cancel()
            for task in list(tasks):
                task.cancel()

    async def _rank_once(self, settings: RunSettings, group: Group, slot: bool) -> GroupResult:
        """Rank a group, or return the result of an earlier try with the same request id.

        ``slot``: the group holds an admission slot, given back when its ranking ends. A group
        with a request id is ranked in a task of its own, so that a client giving up on one try
        (cancelling it) does not cancel a retry waiting on the same work.
        """
        run_id = settings.run_id
        if not group.request_id:
            try:
                return await self._rank(settings, group)
            finally:
                if slot:
                    self._release(run_id)
        key = (run_id, group.request_id)
        if key in self._done:
            if slot:
                self._release(run_id)
            return dataclasses.replace(self._done[key], group_id=group.group_id)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._rank(settings, group))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._finished, key, slot))
        elif slot:
            self._release(run_id)
        result = await asyncio.shield(task)
        return dataclasses.replace(result, group_id=group.group_id)

    def _finished(self, key: tuple[str, str], slot: bool, task: asyncio.Task) -> None:
        self._inflight.pop(key, None)
        if slot:
            self._release(key[0])
        if task.cancelled() or task.exception() is not None:
            return
        self._done[key] = task.result()
        while len(self._done) > DONE_CACHE_SIZE:
            self._done.popitem(last=False)

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
        stats = self._stats_of(settings.run_id)
        stats.answered(outcome, latency)
        stats.judge_cost(result)
        if result.tied:
            stats.tied += 1
            self.metrics.tied.labels(settings.run_id).inc()
        self.metrics.groups.labels(settings.run_id, outcome).inc()
        self.metrics.judge_cost(settings.run_id, result)
        self.metrics.group_latency.labels(settings.run_id).observe(latency)
        return dataclasses.replace(result, latency_ms=latency * 1e3)

    async def _judge(self, settings: RunSettings, group: Group) -> GroupResult:
        run_id = settings.run_id
        prompt_id = group.prompt_id or group.group_id
        n = len(group.traces)
        drawn = pools.select(
            await self.store.load_anchors(run_id, prompt_id), settings.anchors_per_group
        )
        texts = [t.text for t in group.traces] + [a.text for a in drawn]
        rng = np.random.default_rng(_seed(run_id, group.group_id, *texts))
        tournament = make_tournament(
            settings.design,
            n,
            budget=settings.budget or None,
            min_tau_gain=settings.min_tau_gain,
            order=settings.order,
            anchor_strengths=[a.strength for a in drawn],
            anchor_stderr=[a.stderr for a in drawn],
            anchor_mode=settings.anchor_mode,
            lam=settings.lam,
            rng=rng,
        )
        salt = _seed(run_id, "prefix cache").to_bytes(8, "little").hex()
        rounds = 0
        cached = 0  # comparisons recorded that a verdict cache answered
        preferred = False  # whether any verdict preferred one side
        try:
            while pairs := tournament.next_round():
                rounds += 1
                asked = [
                    Comparison(
                        prompt=group.prompt, first=texts[i], second=texts[j],
                        reference=group.reference, run_id=run_id,
                        cache_salt=salt if settings.isolate_prefix_cache else None,
                    )
                    for i, j in pairs
                ]
                answers, hits = await self.scheduler.compare_with_hits(
                    asked, run_id=run_id, weight=settings.weight,
                    cap=settings.max_calls_in_flight or None,
                )
                self._count_unread(run_id, sum(map(is_unread, answers)))
                preferred = preferred or any(p != NO_PREFERENCE for p in answers)
                tournament.record(Verdict(i, j, p) for (i, j), p in zip(pairs, answers))
                cached += sum(hits)
        except JudgeError as exc:
            logger.warning("judge failed for run %s group %s: %s", run_id, group.group_id, exc)
            return GroupResult(
                group_id=group.group_id, advantages=(0.0,) * n, routed=True,
                comparisons=tournament.calls, cached_comparisons=cached,
                judge_requests=tournament.calls - cached, rounds=rounds,
                anchors_used=len(drawn), status="judge_failed", error=str(exc),
            )
        fit = tournament.fit()
        strengths = fit.strengths[:n]
        adv = advantages.from_strengths(
            strengths,
            normalisation=settings.normalisation,
            scale=settings.scale,
            covariance=None if fit.covariance is None else fit.covariance[:n, :n],
            stderr=fit.stderr[:n],
        )
        if preferred:
            await self._update_pool(settings, group, prompt_id, strengths, fit.stderr[:n])
        else:  # the judge said nothing: anchors alone must not tell the traces apart
            adv = np.zeros(n)
        return GroupResult(
            group_id=group.group_id,
            advantages=tuple(adv.tolist()),
            routed=True,
            strengths=tuple(strengths.tolist()),
            stderr=tuple(fit.stderr[:n].tolist()),
            comparisons=tournament.calls,
            cached_comparisons=cached,
            judge_requests=tournament.calls - cached,
            rounds=rounds,
            anchors_used=len(drawn),
            tied=not adv.any(),
        )

    def _count_unread(self, run_id: str, n: int) -> None:
        """Count ``n`` unread verdicts of ``run_id``; warn the first time, then every
        :data:`UNREAD_LOG_EVERY`."""
        if not n:
            return
        before = self.unread_verdicts
        self.unread_verdicts += n
        self._stats_of(run_id).unread_verdicts += n
        self.metrics.unread_verdicts.labels(run_id).inc(n)
        if before == 0 or before // UNREAD_LOG_EVERY != self.unread_verdicts // UNREAD_LOG_EVERY:
            logger.warning(
                "the %s judge gave %d verdicts that could not be read (%d so far, run %s has "
                "%d): taken as no preference. Its verdict tokens are missing from the "
                "log-probabilities it returns: give it more top log-probabilities, or a prompt "
                "it answers with A or B",
                self.comparator.name, n, self.unread_verdicts, run_id,
                self._stats_of(run_id).unread_verdicts,
            )

    # -- anchor pools ------------------------------------------------------------------------

    async def _update_pool(
        self,
        settings: RunSettings,
        group: Group,
        prompt_id: str,
        strengths: np.ndarray,
        stderr: np.ndarray,
    ) -> None:
        """The group's traces try to enter the prompt's pool with their fitted strengths and
        standard errors. The anchors it drew keep theirs: a later fit never writes back (with
        the old write-back, the pool's scale fell as the policy improved; issue 15)."""
        if settings.pool_per_prompt == 0 or settings.anchors_per_group == 0:
            return  # no pool: nothing would ever draw from it
        policy = pools.PoolPolicy(
            per_prompt=settings.pool_per_prompt,
            per_run=settings.pool_per_run,
            max_age=settings.pool_max_age,
            anchors_per_group=settings.anchors_per_group,
        )
        texts = [t.text for t in group.traces]

        def update(current: list[pools.Anchor]) -> list[pools.Anchor]:
            # Pure in ``current``: a shared store may call it again on a newer pool.
            step = group.step
            if step is None:  # no step from the trainer: each group of a prompt is one step
                step = max((a.step for a in current), default=-1) + 1
            return pools.after_group(current, texts, strengths, stderr, policy, step=step)

        written = await self.store.update_anchors(
            settings.run_id, prompt_id, update, per_run=policy.per_run
        )
        if written is not None:
            self.metrics.pool_anchors.labels(settings.run_id).set(written[1])

    async def pool_snapshot(
        self, run_id: str, *, tenant: str | None = None
    ) -> dict[str, list[pools.Anchor]]:
        """Every prompt's anchors for a run (for tests and status pages)."""
        await self._stored(run_id, tenant)
        return dict((await self.store.load_pool(run_id)).prompts)

    # -- lifecycle ---------------------------------------------------------------------------

    async def check_health(self) -> bool:
        return await self.comparator.check_health()

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.scheduler.aclose()
        await self.comparator.aclose()
        await self.store.aclose()


__all__ = ["ArenaService"]
