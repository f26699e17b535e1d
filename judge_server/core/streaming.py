"""Groups ranked as they arrive on a stream (gRPC's ``RankStream``), results as they are ready.

A bad group yields a result with ``status="invalid"`` naming the field at fault, and a group
refused for load one with ``status="overloaded"`` and ``retry_after_s``; the stream goes on. A
:class:`PermissionDenied` would end the stream (none is raised for runs: each tenant's runs
are its own, another tenant's run id is the caller's own run or :class:`RunNotFound`).
Results are not in arrival order. At most ``max_in_flight`` groups of one stream are ranked
at once; the stream is not read further until one ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

from trainer_client.types import Group, GroupResult

from ..errors import InvalidRequest, Overloaded, PermissionDenied, RunNotFound

RankGroup = Callable[[str, Group], Awaitable[GroupResult]]


async def rank_stream(
    rank_group: RankGroup, requests: AsyncIterable[tuple[str, Group]], *, max_in_flight: int
) -> AsyncIterator[GroupResult]:
    """Rank ``(run_id, group)`` pairs from ``requests`` with ``rank_group`` (module doc)."""
    results: asyncio.Queue[GroupResult | PermissionDenied | None] = asyncio.Queue()
    tasks: set[asyncio.Task] = set()
    room = asyncio.Semaphore(max_in_flight)

    async def one(run_id: str, group: Group) -> None:
        result: GroupResult | PermissionDenied
        try:
            result = await rank_group(run_id, group)
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


__all__ = ["rank_stream"]
