"""Batches tournament rounds from every group in flight into one call of the comparator.

Superseded by :class:`judge_server.scheduler.JudgeScheduler` (the same batching, with a fair
share of the judge per run); kept until nothing imports it.

Each group's tournament hands its round of comparisons to :meth:`RoundBatcher.compare` and
waits. Rounds that arrive within ``window_s`` of each other (by default: in the same turn of
the event loop) go to the comparator as one batch, so a model-backed judge sees large batches
even though every group plays its own tournament. A comparator failure fails every round of
that batch with :class:`JudgeError`; the groups turn it into per-group failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .comparators.base import Comparator, Comparison
from .errors import JudgeError
from .scheduler import ask_judge


class RoundBatcher:
    def __init__(
        self,
        comparator: Comparator,
        *,
        max_batch: int = 1024,
        window_s: float = 0.0,
        observe: Callable[[int], object] | None = None,
    ) -> None:
        self.comparator = comparator
        self.observe = observe
        self.max_batch = max_batch
        self.window_s = window_s
        self._queue: list[tuple[Sequence[Comparison], asyncio.Future]] = []
        self._queued = 0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._sending: set[asyncio.Task] = set()
        self.batches = 0

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        """``p`` for each comparison, judged in a batch with whatever else is waiting."""
        if not comparisons:
            return []
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((comparisons, future))
        self._queued += len(comparisons)
        if self._queued >= self.max_batch:
            self._flush()
        elif self._timer is None:
            if self.window_s > 0:
                self._timer = loop.call_later(self.window_s, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue, self._queued = self._queue, [], 0
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Sequence[Comparison], asyncio.Future]]) -> None:
        flat = [c for comparisons, _ in batch for c in comparisons]
        self.batches += 1
        if self.observe is not None:
            self.observe(len(flat))
        try:
            answers = await ask_judge(self.comparator, flat)
        except JudgeError as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for comparisons, future in batch:
            if not future.done():
                future.set_result(answers[start : start + len(comparisons)])
            start += len(comparisons)

    async def aclose(self) -> None:
        # The service has cancelled its groups: nobody waits on these batches any more, and a
        # judge that never answers must not hold the server's stop forever.
        for task in list(self._sending):
            task.cancel()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
