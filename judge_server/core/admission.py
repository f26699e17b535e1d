"""Admission of dead groups, and single flight of groups retried under one request id.

:class:`Admission`: a dead group takes a slot until it is answered. A request is admitted whole
while its run has fewer than ``max_run_groups_in_flight`` groups in flight and the server fewer
than ``max_groups_in_flight`` (so one request may overshoot a cap by its own size, and a
request larger than a cap still gets in once the run is idle); otherwise it is refused whole
with :class:`Overloaded` (RESOURCE_EXHAUSTED / 429 and a retry-after hint) before anything is
accepted. The per-run cap keeps a flooding run from holding every slot; the judge scheduler
keeps it from holding the judge.

:class:`SingleFlight`: a group sent again under the same request id (a trainer's retry) is
ranked once; the retry waits for the first try or gets its result, kept for the last
:data:`DONE_CACHE_SIZE` request ids. Each group is ranked in a task of its own, so that a
client giving up on one try (cancelling it) does not cancel a retry waiting on the same work.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from ..errors import Overloaded
from .stats import Statistics

DONE_CACHE_SIZE = 10_000  # results kept by request id, so that a retried group is not judged twice

T = TypeVar("T")


class Admission:
    """Slots for dead groups, per run and in all (module doc)."""

    def __init__(
        self, stats: Statistics, *, max_groups_in_flight: int, max_run_groups_in_flight: int
    ) -> None:
        self.stats = stats
        self.max_groups_in_flight = max_groups_in_flight
        self.max_run_groups_in_flight = max_run_groups_in_flight
        self.groups_in_flight = 0

    def admit(self, run_id: str, n: int) -> None:
        """Take ``n`` slots for dead groups of ``run_id``, or refuse them all."""
        if n == 0:
            return
        run = self.stats.of(run_id)
        if (
            run.in_flight >= self.max_run_groups_in_flight
            or self.groups_in_flight >= self.max_groups_in_flight
        ):
            self.stats.refused(run_id, n)
            retry_after = min(10.0, max(0.05, run.latency_ms(50) / 1e3))
            raise Overloaded(
                f"run {run_id!r}: the server is at capacity for {n} more dead groups "
                f"({run.in_flight} of this run in flight, limit "
                f"{self.max_run_groups_in_flight}; {self.groups_in_flight} in all, limit "
                f"{self.max_groups_in_flight}); try again in {retry_after:.2f} s",
                retry_after_s=retry_after,
            )
        self.groups_in_flight += n
        self.stats.in_flight(run_id, n)

    def release(self, run_id: str) -> None:
        """Give back one slot of ``run_id``."""
        self.groups_in_flight -= 1
        self.stats.in_flight(run_id, -1)


class SingleFlight(Generic[T]):
    """Work done once per key; its result kept for the last ``keep`` keys (module doc)."""

    def __init__(self, keep: int = DONE_CACHE_SIZE) -> None:
        self.keep = keep
        self._running: dict[Hashable, asyncio.Task[T]] = {}
        self._done: OrderedDict[Hashable, T] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key``'s work is done or under way."""
        return key in self._done or key in self._running

    async def do(
        self,
        key: Hashable,
        work: Callable[[], Awaitable[T]],
        *,
        release: Callable[[], None] | None = None,
    ) -> T:
        """The result of ``work()`` for ``key``, started only if no try of ``key`` is done or
        under way. ``release`` is called once this try no longer needs its admission slot: at
        once when another try does the work, else when the work ends."""
        if key in self._done:
            if release is not None:
                release()
            return self._done[key]
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(functools.partial(self._finished, key, release))
        elif release is not None:
            release()
        return await asyncio.shield(task)

    def _finished(
        self, key: Hashable, release: Callable[[], None] | None, task: asyncio.Task[T]
    ) -> None:
        self._running.pop(key, None)
        if release is not None:
            release()
        if task.cancelled() or task.exception() is not None:
            return
        self._done[key] = task.result()
        while len(self._done) > self.keep:
            self._done.popitem(last=False)

    async def cancel(self) -> None:
        """Cancel the work under way (the server is stopping) and wait for it to end."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["DONE_CACHE_SIZE", "Admission", "SingleFlight"]
