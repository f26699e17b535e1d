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
:data:`DONE_CACHE_SIZE` request ids. A try is known by a digest of its group
(:func:`group_digest`: prompt, reference, step, traces and rewards): a request id sent again
with a different group is refused (:class:`InvalidRequest` naming ``request_id``) instead of
being answered with the first group's result. With ``shared`` (the redis store's claims), the
first replica to claim a request id ranks its group and the others wait for its result,
or take the claim over when that try fails or its replica dies. Each group is ranked in a
task of its own, so that a client giving up on one try (cancelling it) does not cancel a
retry waiting on the same work.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from trainer_client.types import Group

from ..errors import InvalidRequest, Overloaded
from .stats import Statistics

DONE_CACHE_SIZE = 10_000  # results kept by request id, so that a retried group is not judged twice

T = TypeVar("T")


class SharedFlights(Protocol):
    """Claims on request ids that several replicas share (:mod:`..store.redis_shared`): the
    work is done by the first replica to claim ``key``; the others wait for its result."""

    def do(
        self, key: tuple[str, str], digest: bytes, work: Callable[[], Awaitable[Any]],
        field: str, refused: Callable[[], InvalidRequest],
    ) -> Awaitable[Any]: ...

    async def aclose(self) -> None:
        """Give back what this replica still claims (the server is stopping)."""


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


def group_digest(group: Group) -> bytes:
    """What identifies a group's try, whatever its ``group_id`` (a retry may rename it): its
    prompt id, prompt, reference, step, and traces with their rewards, exactly."""
    h = hashlib.blake2b(digest_size=16)
    for part in (group.prompt_id, group.prompt, group.reference, group.step):
        h.update(repr(part).encode("utf-8", "surrogatepass") + b"\0")
    for trace in group.traces:
        text = trace.text.encode("utf-8", "surrogatepass")
        h.update(struct.pack("<dQ", trace.reward, len(text)) + text)
    return h.digest()


class SingleFlight(Generic[T]):
    """Work done once per key; its result kept for the last ``keep`` keys (module doc)."""

    def __init__(self, keep: int = DONE_CACHE_SIZE, *, shared: SharedFlights | None = None) -> None:
        self.keep = keep
        self.shared = shared  # the claims replicas share (redis store), or None: this process
        self._running: dict[Hashable, asyncio.Task[T]] = {}
        self._done: OrderedDict[Hashable, T] = OrderedDict()
        self._digests: dict[Hashable, bytes] = {}  # of every key running or done

    def check(self, key: Hashable, digest: bytes, field: str = "request_id") -> None:
        """Raise :class:`InvalidRequest` naming ``field`` when ``key`` is done or under way
        for work of another digest (a request id reused for a different group)."""
        known = self._digests.get(key)
        if known is not None and known != digest:
            raise self._refused(key, field)

    @staticmethod
    def _refused(key: Hashable, field: str) -> InvalidRequest:
        return InvalidRequest(
            field,
            f"request id {key[-1] if isinstance(key, tuple) else key!r} was used for a "
            "different "
            "group (its traces, rewards, prompt, reference or step differ): a retry must "
            "send the same group; a new group needs a new request id",
        )

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key``'s work is done or under way."""
        return key in self._done or key in self._running

    def check_groups(self, run_id: str, groups: Sequence[Group], fields: list[str]) -> list[bytes]:
        """The digests of a request's groups under their request ids ``(run_id, request_id)``
        (``b""`` without one); :class:`InvalidRequest` naming ``fields[k].request_id``, before
        anything is accepted, when a request id was used for a different group, earlier or
        in this request."""
        digests: list[bytes] = []
        here: dict[tuple[str, str], bytes] = {}
        for group, field in zip(groups, fields):
            if not group.request_id:
                digests.append(b"")
                continue
            digest, key = group_digest(group), (run_id, group.request_id)
            self.check(key, digest, f"{field}.request_id")
            if here.setdefault(key, digest) != digest:
                raise InvalidRequest(
                    f"{field}.request_id",
                    f"request id {group.request_id!r} is given to two different groups",
                )
            digests.append(digest)
        return digests

    async def do(
        self,
        key: Hashable,
        work: Callable[[], Awaitable[T]],
        *,
        digest: bytes = b"",
        field: str = "request_id",
        release: Callable[[], None] | None = None,
    ) -> T:
        """The result of ``work()`` for ``key``, started only if no try of ``key`` is done or
        under way; refused (:meth:`check`) when that try's ``digest`` differs. ``release`` is
        called once this try no longer needs its admission slot: at once when another try
        does the work (or it is refused), else when the work ends."""
        try:
            self.check(key, digest, field)
        except InvalidRequest:
            if release is not None:
                release()
            raise
        if key in self._done:
            if release is not None:
                release()
            return self._done[key]
        task = self._running.get(key)
        if task is None:
            shared = self.shared
            if shared is not None and isinstance(key, tuple):
                work = functools.partial(shared.do, key, digest, work, field,
                                         functools.partial(self._refused, key, field))
            task = asyncio.ensure_future(work())
            self._running[key] = task
            self._digests[key] = digest
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
            self._digests.pop(key, None)
            return
        self._done[key] = task.result()
        while len(self._done) > self.keep:
            old, _ = self._done.popitem(last=False)
            if old not in self._running:
                self._digests.pop(old, None)

    async def cancel(self) -> None:
        """Cancel the work under way (the server is stopping) and wait for it to end; give
        back the shared claims' lease."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.shared is not None:
            await self.shared.aclose()


__all__ = ["DONE_CACHE_SIZE", "Admission", "SingleFlight", "group_digest"]
