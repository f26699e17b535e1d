"""TEMPORARY stand-in (being replaced by the fair scheduler): RoundBatcher with the
JudgeScheduler interface, so the rest of the server can be tested meanwhile."""

from __future__ import annotations

from .batcher import RoundBatcher


class JudgeScheduler(RoundBatcher):
    def __init__(self, comparator, *, max_batch=1024, window_s=0.0, batches_in_flight=4,
                 policy="fair", observe=None):
        super().__init__(comparator, max_batch=max_batch, window_s=window_s, observe=observe)
        self.in_flight = 0

    @property
    def queued(self):
        return self._queued

    async def compare(self, comparisons, *, run_id="", weight=1.0, cap=None):
        return await super().compare(comparisons)
