"""A run's anchor pools in the store: the anchors a dead group draws, and its traces let in.

The rules are pure and live in :mod:`..arena.pools`; this module applies them to the store. A
pool is written by an atomic read-modify-write (:meth:`~..store.base.Store.update_anchors`), so
that replicas sharing a store never lose each other's anchors. A run without a pool
(``anchors_per_group`` 0, the default, or ``pool_per_prompt`` 0) reads and writes nothing.
"""

from __future__ import annotations

import functools

from trainer_client.types import Group, RunSettings

from ..arena import pools
from ..arena.ranking import Ranked
from ..metrics import Metrics
from ..store.base import Store


class AnchorPools:
    """Every run's pools in ``store``; the pool sizes go to ``metrics``."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    async def draw(self, settings: RunSettings, prompt_id: str) -> list[pools.Anchor]:
        """The anchors a group of ``prompt_id`` plays against, spread over the pool's range."""
        if settings.anchors_per_group == 0:
            return []
        anchors = await self.store.load_anchors(settings.run_id, prompt_id)
        return pools.select(anchors, settings.anchors_per_group)

    async def let_in(
        self, settings: RunSettings, group: Group, prompt_id: str, ranked: Ranked
    ) -> None:
        """The group's traces try to enter the prompt's pool (:func:`..arena.pools.after_group`:
        the anchors it drew keep their strengths, a later fit never writes back)."""
        if settings.pool_per_prompt == 0 or settings.anchors_per_group == 0:
            return  # no pool: nothing would ever draw from it
        policy = pools.PoolPolicy(
            per_prompt=settings.pool_per_prompt, per_run=settings.pool_per_run,
            max_age=settings.pool_max_age, anchors_per_group=settings.anchors_per_group,
        )
        update = functools.partial(
            pools.after_group, texts=[t.text for t in group.traces], strengths=ranked.strengths,
            stderr=ranked.stderr, policy=policy, step=group.step,
        )
        written = await self.store.update_anchors(
            settings.run_id, prompt_id, update, per_run=policy.per_run
        )
        if written is not None:
            self.metrics.of_run(self.metrics.pool_anchors, settings.run_id).set(written[1])

    async def size(self, run_id: str) -> tuple[int, int]:
        """``(prompts, anchors)`` in the run's pool."""
        prompts, anchors = await self.store.pool_size(run_id)
        self.metrics.of_run(self.metrics.pool_anchors, run_id).set(anchors)
        return prompts, anchors

    async def snapshot(self, run_id: str) -> dict[str, list[pools.Anchor]]:
        """Every prompt's anchors of a run."""
        return dict((await self.store.load_pool(run_id)).prompts)


__all__ = ["AnchorPools"]
