"""Which waiting rounds go to the judge next: fair queuing of tournament rounds by run.

Every run's groups hand their tournament rounds to one judge. The judge is most efficient with
large batches, so rounds from every run share each batch; who gets the room in a batch is
decided here. No asyncio and no I/O: :mod:`judge_server.core.scheduler` drives these queues.

:class:`FairQueue`
    Start-time fair queuing (Goyal, Vin and Cheng, 1996) over runs, in comparisons. Each run
    has a FIFO of rounds; the round at its head carries a start tag
    ``S = max(V, F_run)`` and a finish tag ``F_run = S + size / weight``, where ``V`` (the
    virtual time) is the largest start tag served so far. Batches take head rounds in order
    of start tag, so over any stretch of time two busy runs are served comparisons in the
    ratio of their weights, give or take a round; a run that has been idle comes back at
    ``V``, ahead of every round already waiting: a quiet run waits behind at most one round
    of each other run, however many rounds a flooding run has queued. A run may have a cap
    on comparisons in flight (sent to the judge, not answered): while at it, its rounds wait
    and it earns no credit (it comes back at ``V`` like an idle run).
:class:`FifoQueue`
    One queue in arrival order; weights and caps are ignored. The baseline that
    ``arena-judge bench fairness`` measures the fair queue against.

Both keep rounds whole (a round is never split across batches; a round larger than the batch
goes alone) and keep each run's rounds in arrival order. A batch stops at the first round, in
the queue's order, that does not fit: filling the rest of it with later, smaller rounds would
let the virtual time run past the round left waiting, and that round's run would then win its
place back from everyone, a quiet run that just arrived included.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

POLICIES = ("fair", "fifo")
MIN_WEIGHT = 1e-3
"""Smallest weight a round may carry. A tag grows by ``size / weight``: a denormal weight
(``1e-320``) made a finish tag infinite, and a tiny one a tag so large that the other runs'
increments vanish in its rounding; either way every weight was ignored after it, server-wide.
At ``1e-3`` a tag grows by at most 1000 per comparison: about 2**53 / 1000 comparisons before
the increments of the smallest round lose precision."""
Policy = Literal["fair", "fifo"]


@dataclass(eq=False, slots=True)
class Round(Generic[T]):
    """A round waiting for (or at) the judge: ``size`` comparisons of one run.

    ``item`` is the caller's (the scheduler keeps the comparisons and the waiting future
    there). The queue hands the same object back from :meth:`FairQueue.pop_batch`, and takes it
    back in :meth:`FairQueue.settle` and :meth:`FairQueue.remove`.
    """

    run_id: str
    item: T
    size: int
    state: Literal["waiting", "in_flight", "settled", "removed"] = "waiting"


class _Counts:
    """Comparisons waiting and in flight, in all and per run: what both queues report."""

    def __init__(self) -> None:
        self.queued = 0
        self.in_flight = 0
        self.queued_by_run: dict[str, int] = {}
        self.in_flight_by_run: dict[str, int] = {}

    @staticmethod
    def _add(counts: dict[str, int], run_id: str, n: int) -> None:
        value = counts.get(run_id, 0) + n
        if value:
            counts[run_id] = value
        else:
            del counts[run_id]

    def waiting(self, run_id: str, n: int) -> None:
        self.queued += n
        self._add(self.queued_by_run, run_id, n)

    def sent(self, run_id: str, n: int) -> None:
        self.waiting(run_id, -n)
        self.in_flight += n
        self._add(self.in_flight_by_run, run_id, n)

    def answered(self, run_id: str, n: int) -> None:
        self.in_flight -= n
        self._add(self.in_flight_by_run, run_id, -n)


class _RoundQueue(Generic[T]):
    """What both policies share: pushing, counting, settling and removing rounds."""

    policy: Policy

    def __init__(self) -> None:
        self._counts = _Counts()
        self._rounds = 0

    @property
    def queued(self) -> int:
        """Comparisons waiting, every run together."""
        return self._counts.queued

    @property
    def in_flight(self) -> int:
        """Comparisons sent to the judge and not yet settled, every run together."""
        return self._counts.in_flight

    def queued_of(self, run_id: str) -> int:
        return self._counts.queued_by_run.get(run_id, 0)

    def in_flight_of(self, run_id: str) -> int:
        return self._counts.in_flight_by_run.get(run_id, 0)

    @property
    def runs_waiting(self) -> int:
        """Runs with at least one round waiting."""
        return len(self._counts.queued_by_run)

    def queued_by_run(self) -> dict[str, int]:
        """Comparisons waiting per run (runs with none left out)."""
        return dict(self._counts.queued_by_run)

    def __len__(self) -> int:
        """Rounds waiting."""
        return self._rounds

    def push(
        self, run_id: str, item: T, size: int, *, weight: float = 1.0, cap: int | None = None
    ) -> Round[T]:
        """Queue a round of ``size`` comparisons for ``run_id``; returns its handle.

        ``weight`` (finite, >= :data:`MIN_WEIGHT`) is the run's share of the judge relative to
        other runs; ``cap`` (None or >= 1) the most comparisons it may have in flight. The
        latest values given for a run hold for all of its waiting rounds.
        """
        if size < 1:
            raise ValueError(f"size: a round has at least one comparison, got {size}")
        if not (weight >= MIN_WEIGHT and math.isfinite(weight)):  # also refuses nan
            raise ValueError(f"weight: must be finite and >= {MIN_WEIGHT:g}, got {weight}")
        if cap is not None and cap < 1:
            raise ValueError(f"cap: must be None or >= 1, got {cap}")
        waiting = Round(run_id, item, size)
        self._counts.waiting(run_id, size)
        self._rounds += 1
        self._enqueue(waiting, weight, cap)
        return waiting

    def pop_batch(self, max_items: int) -> list[Round[T]]:
        """The next batch: whole rounds of at most ``max_items`` comparisons in all (a larger
        round alone), now in flight. Empty when nothing waiting may go."""
        if max_items < 1:
            raise ValueError(f"max_items: must be >= 1, got {max_items}")
        batch = []
        for taken in self._take(max_items):  # counted at once: the next may meet a cap
            taken.state = "in_flight"
            self._counts.sent(taken.run_id, taken.size)
            self._rounds -= 1
            batch.append(taken)
        return batch

    def settle(self, answered: Round[T]) -> None:
        """The judge is done with a round (answered or failed): it is no longer in flight."""
        if answered.state != "in_flight":
            raise ValueError(f"settle: the round is {answered.state}, not in flight")
        answered.state = "settled"
        self._counts.answered(answered.run_id, answered.size)
        self._settled(answered.run_id)

    def drain(self) -> list[Round[T]]:
        """Withdraw every waiting round (the scheduler is closing); returns them."""
        return [r for r in list(self._waiting_rounds()) if self.remove(r)]

    def remove(self, waiting: Round[T]) -> bool:
        """Withdraw a round nobody waits for any more; False when it has been sent already."""
        if waiting.state != "waiting":
            return False
        waiting.state = "removed"
        self._counts.waiting(waiting.run_id, -waiting.size)
        self._rounds -= 1
        self._withdraw(waiting)
        return True

    # -- the policy --------------------------------------------------------------------------

    def _enqueue(self, waiting: Round[T], weight: float, cap: int | None) -> None:
        raise NotImplementedError

    def _take(self, max_items: int) -> Iterator[Round[T]]:
        raise NotImplementedError

    def _withdraw(self, waiting: Round[T]) -> None:
        raise NotImplementedError

    def _waiting_rounds(self) -> Iterator[Round[T]]:
        raise NotImplementedError

    def _settled(self, run_id: str) -> None:
        """A round of ``run_id`` left the judge (a capped run may go again)."""


class FifoQueue(_RoundQueue[T]):
    """Rounds in arrival order, whatever their run; weights and caps are ignored."""

    policy: Policy = "fifo"

    def __init__(self) -> None:
        super().__init__()
        self._waiting: deque[Round[T]] = deque()

    def _enqueue(self, waiting: Round[T], weight: float, cap: int | None) -> None:
        self._waiting.append(waiting)

    def _take(self, max_items: int) -> Iterator[Round[T]]:
        room = max_items
        while self._waiting and (room == max_items or self._waiting[0].size <= room):
            taken = self._waiting.popleft()
            room -= taken.size
            yield taken

    def _withdraw(self, waiting: Round[T]) -> None:
        self._waiting.remove(waiting)

    def _waiting_rounds(self) -> Iterator[Round[T]]:
        return iter(self._waiting)


@dataclass(eq=False, slots=True)
class _Run:
    """One run's waiting rounds and its place in the fair order."""

    run_id: str
    weight: float = 1.0
    cap: int | None = None
    rounds: deque = field(default_factory=deque)
    start: float = 0.0  # start tag of the head round
    finish: float = 0.0  # finish tag of the head round (of the last one served when idle)
    ticket: int = -1  # the heap entry that is the head's; older entries are stale

    def at_cap(self, in_flight: int) -> bool:
        """Its head may not go: it would take the run past its cap (a round larger than the
        cap goes when the run has nothing in flight, or it could never go)."""
        return (
            self.cap is not None and in_flight > 0 and in_flight + self.rounds[0].size > self.cap
        )


class FairQueue(_RoundQueue[T]):
    """Start-time fair queuing of rounds by run, with per-run weights and caps (module doc)."""

    policy: Policy = "fair"

    def __init__(self) -> None:
        super().__init__()
        self.virtual_time = 0.0
        self._runs: dict[str, _Run] = {}
        self._heads: list[tuple[float, int, str]] = []  # (start tag, ticket, run id)
        self._tickets = itertools.count()
        self._idle: set[str] = set()  # runs with nothing waiting or in flight, kept for their tag

    def _enqueue(self, waiting: Round[T], weight: float, cap: int | None) -> None:
        run = self._runs.get(waiting.run_id)
        if run is None:
            run = self._runs[waiting.run_id] = _Run(waiting.run_id)
        run.weight, run.cap = weight, cap
        self._idle.discard(run.run_id)
        run.rounds.append(waiting)
        if len(run.rounds) == 1:  # idle until now: it comes back at the virtual time
            self._lead(run, max(self.virtual_time, run.finish))

    def _lead(self, run: _Run, start: float) -> None:
        """Make the run's first waiting round its head, with start tag ``start``."""
        run.start = start
        run.finish = start + run.rounds[0].size / run.weight
        run.ticket = next(self._tickets)
        heapq.heappush(self._heads, (start, run.ticket, run.run_id))

    def _take(self, max_items: int) -> Iterator[Round[T]]:
        room = max_items
        at_cap: list[_Run] = []
        while self._heads:
            start, ticket, run_id = self._heads[0]
            run = self._runs.get(run_id)
            if run is None or ticket != run.ticket:  # stale: that head was withdrawn
                heapq.heappop(self._heads)
                continue
            if run.at_cap(self.in_flight_of(run_id)):
                heapq.heappop(self._heads)
                at_cap.append(run)
                continue
            if room < max_items and run.rounds[0].size > room:
                break  # the batch is full as far as the fair order goes
            heapq.heappop(self._heads)
            taken = run.rounds.popleft()
            room -= taken.size
            self.virtual_time = max(self.virtual_time, start)
            if run.rounds:  # still busy: its next round follows on from this one
                self._lead(run, run.finish)
            yield taken
        for run in at_cap:  # no credit while capped: back at the virtual time at the earliest
            self._lead(run, max(self.virtual_time, run.start))
        for run_id in list(self._idle):  # the virtual time moved on
            self._forget_if_idle(self._runs[run_id])

    def _withdraw(self, waiting: Round[T]) -> None:
        run = self._runs[waiting.run_id]
        was_head = run.rounds[0] is waiting
        run.rounds.remove(waiting)
        if was_head and run.rounds:  # the next round takes the withdrawn one's place
            run.finish = run.start + run.rounds[0].size / run.weight
        elif was_head:
            run.ticket = -1  # its heap entry is stale now
            run.finish = run.start  # nothing was served: no debt
        self._forget_if_idle(run)

    def _waiting_rounds(self) -> Iterator[Round[T]]:
        for run in self._runs.values():
            yield from run.rounds

    def _settled(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            self._forget_if_idle(run)

    def _forget_if_idle(self, run: _Run) -> None:
        """Drop an idle run's state once it owes nothing (it would come back at ``V``), so
        that runs come and go without the queue growing."""
        if run.rounds or self.in_flight_of(run.run_id):
            return
        if run.finish <= self.virtual_time:
            del self._runs[run.run_id]
            self._idle.discard(run.run_id)
        else:
            self._idle.add(run.run_id)


def make_queue(policy: Policy = "fair") -> FairQueue | FifoQueue:
    """An empty queue of ``policy`` (one of :data:`POLICIES`)."""
    if policy == "fair":
        return FairQueue()
    if policy == "fifo":
        return FifoQueue()
    raise ValueError(f"policy: must be one of {POLICIES}, got {policy!r}")


__all__ = ["MIN_WEIGHT", "POLICIES", "FairQueue", "FifoQueue", "Policy", "Round", "make_queue"]
