"""The service core: groups in, advantages out. It knows no transport.

For each group: check it, find the run's settings (creating the run on first use when the
server allows it), and decide whether the group is dead. A live group gets standard
group-relative advantages at once. A dead group plays a tournament: its rounds go to the
comparator through the :class:`RoundBatcher` (batched with every other group in flight), the
Bradley-Terry fit turns the verdicts into strengths, the strengths become advantages, and the
run's anchor pool for the prompt is updated and written to the store.

A judge failure fails only its groups, and each such group gets the advantages it would have
had without the judge (``status="judge_failed"``). A store failure is an error for the caller:
nothing is silently lost.
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
from .batcher import RoundBatcher
from .comparators.base import Comparator, Comparison
from .errors import InvalidRequest, JudgeError, RunExists, RunNotFound, StoreError
from .metrics import Metrics
from .store.base import Store
from .validation import Limits, check_group, check_groups, check_id, check_settings

logger = logging.getLogger(__name__)

DONE_CACHE_SIZE = 10_000  # results kept by request id, so that a retried group is not judged twice


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
        limits: Limits | None = None,
        defaults: RunSettings | None = None,
        auto_create_runs: bool = True,
        max_batch: int = 1024,
        batch_window_s: float = 0.0,
        max_stream_in_flight: int = 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self.comparator = comparator
        self.store = store
        self.limits = limits or Limits()
        self.defaults = defaults or RunSettings(run_id="default")
        self.auto_create_runs = auto_create_runs
        self.max_stream_in_flight = max_stream_in_flight
        self.metrics = metrics or Metrics()
        self.batcher = RoundBatcher(
            comparator,
            max_batch=max_batch,
            window_s=batch_window_s,
            observe=self.metrics.batch_size.observe,
        )
        self._settings: dict[str, RunSettings] = {}
        self._pools: dict[str, pools.RunPool] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task] = {}
        self._done: OrderedDict[tuple[str, str], GroupResult] = OrderedDict()

    # -- runs --------------------------------------------------------------------------------

    async def create_run(self, settings: RunSettings) -> RunSettings:
        check_settings(settings)
        if not await self.store.create_run(settings):
            raise RunExists(settings.run_id)
        try:
            self._apply_template(settings)
        except InvalidRequest:
            await self.store.delete_run(settings.run_id)
            raise
        self._settings[settings.run_id] = settings
        return settings

    async def get_run(self, run_id: str) -> RunSettings:
        check_id(run_id, "run_id")
        settings = self._settings.get(run_id)
        if settings is None:
            settings = await self.store.get_run(run_id)
            if settings is None:
                raise RunNotFound(run_id)
            try:  # a run from before a restart: its template goes back to the judge
                self._apply_template(settings)
            except InvalidRequest as exc:
                logger.warning("run %s keeps the server's judge prompt: %s", run_id, exc)
            self._settings[run_id] = settings
        return settings

    async def delete_run(self, run_id: str) -> bool:
        check_id(run_id, "run_id")
        async with self._lock(run_id):
            self._settings.pop(run_id, None)
            self._pools.pop(run_id, None)
            self.comparator.forget_run(run_id)
            return await self.store.delete_run(run_id)

    def _apply_template(self, settings: RunSettings) -> None:
        try:
            self.comparator.set_run_template(settings.run_id, settings.judge_template or None)
        except ValueError as exc:
            raise InvalidRequest("settings.judge_template", str(exc)) from None

    async def list_runs(self) -> list[RunSettings]:
        return await self.store.list_runs()

    def settings_for_new_run(self, run_id: str) -> RunSettings:
        """The server's default settings under a new run id."""
        return dataclasses.replace(self.defaults, run_id=run_id)

    async def _run(self, run_id: str) -> RunSettings:
        try:
            return await self.get_run(run_id)
        except RunNotFound:
            if not self.auto_create_runs:
                raise
        settings = self.settings_for_new_run(run_id)
        try:
            await self.create_run(settings)
        except RunExists:  # created concurrently by another request
            pass
        return await self.get_run(run_id)

    # -- ranking -----------------------------------------------------------------------------

    async def rank(self, run_id: str, groups: Sequence[Group]) -> list[GroupResult]:
        """Rank every group of one request; results in the order of ``groups``."""
        check_id(run_id, "run_id")
        check_groups(list(groups), self.limits)
        settings = await self._run(run_id)
        return list(await asyncio.gather(*(self._rank_once(settings, g) for g in groups)))

    async def rank_group(self, run_id: str, group: Group) -> GroupResult:
        check_id(run_id, "run_id")
        check_group(group, self.limits)
        settings = await self._run(run_id)
        return await self._rank_once(settings, group)

    async def rank_stream(
        self, requests: AsyncIterable[tuple[str, Group]]
    ) -> AsyncIterator[GroupResult]:
        """Rank ``(run_id, group)`` pairs as they arrive; yield each result when it is ready.

        A bad group yields a result with ``status="invalid"`` naming the field at fault and the
        stream goes on. Results are not in arrival order. At most ``max_stream_in_flight``
        groups of one stream are ranked at once; the stream is not read further until one ends.
        """
        results: asyncio.Queue[GroupResult | None] = asyncio.Queue()
        tasks: set[asyncio.Task] = set()
        room = asyncio.Semaphore(self.max_stream_in_flight)

        async def one(run_id: str, group: Group) -> None:
            try:
                result = await self.rank_group(run_id, group)
            except (InvalidRequest, RunNotFound) as exc:
                result = GroupResult(
                    group_id=group.group_id, advantages=(), routed=False,
                    status="invalid", error=str(exc),
                )
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
                yield result
            await feeder  # re-raise a failure of the request stream or a group
        finally:
            feeder.cancel()
            for task in list(tasks):
                task.cancel()

    async def _rank_once(self, settings: RunSettings, group: Group) -> GroupResult:
        """Rank a group, or return the result of an earlier try with the same request id.

        A group with a request id is ranked in a task of its own, so that a client giving up
        on one try (cancelling it) does not cancel a retry waiting on the same work.
        """
        if not group.request_id:
            return await self._rank(settings, group)
        key = (settings.run_id, group.request_id)
        if key in self._done:
            return dataclasses.replace(self._done[key], group_id=group.group_id)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._rank(settings, group))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        result = await asyncio.shield(task)
        return dataclasses.replace(result, group_id=group.group_id)

    def _finished(self, key: tuple[str, str], task: asyncio.Task) -> None:
        self._inflight.pop(key, None)
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
        self.metrics.groups.labels(settings.run_id, outcome).inc()
        self.metrics.group_latency.observe(latency)
        return dataclasses.replace(result, latency_ms=latency * 1e3)

    async def _judge(self, settings: RunSettings, group: Group) -> GroupResult:
        run_id = settings.run_id
        prompt_id = group.prompt_id or group.group_id
        n = len(group.traces)
        pool = await self._pool(run_id)
        drawn = pools.select(pool.get(prompt_id), settings.anchors_per_group)
        texts = [t.text for t in group.traces] + [a.text for a in drawn]
        rng = np.random.default_rng(_seed(run_id, group.group_id, *texts))
        tournament = make_tournament(
            settings.design,
            n,
            budget=settings.budget or None,
            order=settings.order,
            anchor_strengths=[a.strength for a in drawn],
            anchor_mode=settings.anchor_mode,
            lam=settings.lam,
            rng=rng,
        )
        rounds = 0
        try:
            while pairs := tournament.next_round():
                rounds += 1
                asked = [
                    Comparison(
                        prompt=group.prompt, first=texts[i], second=texts[j],
                        reference=group.reference, run_id=run_id,
                    )
                    for i, j in pairs
                ]
                answers = await self.batcher.compare(asked)
                tournament.record(Verdict(i, j, p) for (i, j), p in zip(pairs, answers))
        except JudgeError as exc:
            logger.warning("judge failed for run %s group %s: %s", run_id, group.group_id, exc)
            self.metrics.judge_calls.labels(run_id).inc(tournament.calls)
            return GroupResult(
                group_id=group.group_id, advantages=(0.0,) * n, routed=True,
                judge_calls=tournament.calls, rounds=rounds, anchors_used=len(drawn),
                status="judge_failed", error=str(exc),
            )
        self.metrics.judge_calls.labels(run_id).inc(tournament.calls)
        fit = tournament.fit()
        strengths = fit.strengths[:n]
        adv = advantages.from_strengths(
            strengths, normalisation=settings.normalisation, scale=settings.scale
        )
        await self._update_pool(settings, group, prompt_id, strengths, drawn, fit.strengths[n:])
        return GroupResult(
            group_id=group.group_id,
            advantages=tuple(adv.tolist()),
            routed=True,
            strengths=tuple(strengths.tolist()),
            stderr=tuple(fit.stderr[:n].tolist()),
            judge_calls=tournament.calls,
            rounds=rounds,
            anchors_used=len(drawn),
        )

    # -- anchor pools ------------------------------------------------------------------------

    def _lock(self, run_id: str) -> asyncio.Lock:
        return self._locks.setdefault(run_id, asyncio.Lock())

    async def _pool(self, run_id: str) -> pools.RunPool:
        if run_id not in self._pools:
            async with self._lock(run_id):
                return await self._pool_locked(run_id)
        return self._pools[run_id]

    async def _pool_locked(self, run_id: str) -> pools.RunPool:
        """The run's pool, loaded from the store if need be; the caller holds the run's lock."""
        if run_id not in self._pools:
            self._pools[run_id] = await self.store.load_pool(run_id)
        return self._pools[run_id]

    async def _update_pool(
        self,
        settings: RunSettings,
        group: Group,
        prompt_id: str,
        strengths: np.ndarray,
        drawn: list[pools.Anchor],
        anchor_strengths: np.ndarray,
    ) -> None:
        if settings.pool_per_prompt == 0:
            return
        policy = pools.PoolPolicy(
            per_prompt=settings.pool_per_prompt,
            per_run=settings.pool_per_run,
            max_age=settings.pool_max_age,
            anchors_per_group=settings.anchors_per_group,
        )
        async with self._lock(settings.run_id):
            if self._settings.get(settings.run_id) is not settings:
                return  # the run was deleted (or replaced) while this group was judged
            pool = await self._pool_locked(settings.run_id)
            current = pool.get(prompt_id)
            step = group.step
            if step is None:  # no step from the trainer: each group of a prompt is one step
                step = max((a.step for a in current), default=-1) + 1
            candidates = [
                pools.Anchor(text=t.text, strength=float(s), step=step)
                for t, s in zip(group.traces, strengths)
            ]
            if settings.anchor_mode == "prior" and drawn:
                moved = {a.trace_id: a for a in pools.refit(drawn, anchor_strengths)}
                current = [moved.get(a.trace_id, a) for a in current]
            admitted = pools.admit(current, candidates, policy, step=step)
            changed = pool.put(prompt_id, admitted, policy)
            try:
                await self.store.save_pools(
                    settings.run_id, {pid: pool.get(pid) for pid in changed}
                )
            except StoreError:
                del self._pools[settings.run_id]  # reload what the store holds next time
                raise

    async def pool_snapshot(self, run_id: str) -> dict[str, list[pools.Anchor]]:
        """Every prompt's anchors for a run (for tests and status pages)."""
        return dict((await self._pool(run_id)).prompts)

    # -- lifecycle ---------------------------------------------------------------------------

    async def check_health(self) -> bool:
        return await self.comparator.check_health()

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.batcher.aclose()
        await self.comparator.aclose()
        await self.store.aclose()


__all__ = ["ArenaService"]
