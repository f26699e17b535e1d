"""One judge, many runs: batches tournament rounds across runs and shares the judge fairly.

Each group's tournament hands its round of comparisons to :meth:`JudgeScheduler.compare` with
its run's id, weight and cap, and waits. Rounds wait in one queue
(:mod:`judge_server.core.scheduling`: fair by run, or FIFO) and leave it in batches of at most
``max_batch`` comparisons, whole rounds from every run together, because a model-backed
judge is most efficient with large batches.

At most ``batches_in_flight`` batches are at the judge at once. That bound is what makes the
queue, and so fairness, live here: with unlimited sends every round would go at once and wait
in the engine's own queue, in arrival order, where a flooding run's rounds come first. When the
judge is idle, rounds that arrive within ``window_s`` of the first join one batch (``0``:
those of the same turn of the event loop).

When a batch comes back, the next one is formed in the next turn of the event loop, after
the groups it answered have queued their next rounds: formed at once, it would leave each of
them a whole batch behind, every round. But while they compute those rounds the judge sits
idle; so the groups of a run with more than an equal share of a batch waiting wake only after
the next batch is formed: the run fills its share of it from what waits anyway. The others (a
quiet run's groups) still wake first and make the next batch.

Each round gets its answers back with the comparator's word on which of them a verdict cache
gave (:meth:`JudgeScheduler.compare_with_hits`), so that the service tells the comparisons a
group needed from the requests that reached the judge.

A comparator failure, or an answer that is not one ``p`` in [0, 1] per comparison, fails
every round of that batch with :class:`JudgeError`; the service turns it into per-group
failures. A caller that stops waiting (cancelled) withdraws its round if it has not been sent.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

from ..comparators.base import Answers, Comparator, Comparison, as_verdict
from ..errors import JudgeError
from .scheduling import Policy, Round, make_queue

DEFAULT_MAX_BATCH = 1024
DEFAULT_BATCHES_IN_FLIGHT = 2


async def ask_judge(comparator: Comparator, comparisons: Sequence[Comparison]) -> Answers:
    """The comparator's ``p`` for each comparison, and whether a verdict cache gave it,
    checked: every failure is a JudgeError. An unread verdict stays
    :data:`~..comparators.base.UNREAD`, so that it can be counted."""
    try:
        answers, cached = await comparator.compare_with_hits(comparisons)
        answers = [as_verdict(p) for p in answers]
        for what, count in (("verdicts", len(answers)), ("cache marks", len(cached))):
            if count != len(comparisons):
                raise JudgeError(
                    f"{comparator.name}: {count} {what} for {len(comparisons)} comparisons"
                )
        bad = [p for p in answers if not (math.isfinite(p) and 0.0 <= p <= 1.0)]
        if bad:
            raise JudgeError(f"{comparator.name}: verdict {bad[0]} is not in [0, 1]")
    except JudgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of the judge is a JudgeError
        raise JudgeError(f"{comparator.name}: {type(exc).__name__}: {exc}") from exc
    return Answers(answers, [bool(hit) for hit in cached])


_Waiting = tuple[Sequence[Comparison], asyncio.Future]


class JudgeScheduler:
    """Sends every run's rounds to one comparator, in fair batches (module doc)."""

    def __init__(
        self,
        comparator: Comparator,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        window_s: float = 0.0,
        batches_in_flight: int = DEFAULT_BATCHES_IN_FLIGHT,
        policy: Policy = "fair",
        observe: Callable[[int], object] | None = None,
    ) -> None:
        if max_batch < 1 or batches_in_flight < 1 or window_s < 0:
            raise ValueError("max_batch and batches_in_flight must be >= 1, window_s >= 0")
        self.comparator = comparator
        self.max_batch = max_batch
        self.window_s = window_s
        self.batches_in_flight = batches_in_flight
        self.policy = policy
        self.observe = observe  # called with each batch's size (a metrics histogram)
        self.batches = 0
        self._queue = make_queue(policy)
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._in_window = False  # the pending dispatch waits for the window to close
        self._sending: set[asyncio.Task] = set()
        self._closed = False

    @property
    def queued(self) -> int:
        """Comparisons waiting for a batch."""
        return self._queue.queued

    @property
    def in_flight(self) -> int:
        """Comparisons sent to the judge and not answered yet."""
        return self._queue.in_flight

    def queued_of(self, run_id: str) -> int:
        return self._queue.queued_of(run_id)

    def in_flight_of(self, run_id: str) -> int:
        return self._queue.in_flight_of(run_id)

    async def compare(
        self,
        comparisons: Sequence[Comparison],
        *,
        run_id: str,
        weight: float = 1.0,
        cap: int | None = None,
    ) -> list[float]:
        """``p`` for each comparison of one round of ``run_id`` (see
        :meth:`compare_with_hits`)."""
        answers = await self.compare_with_hits(
            comparisons, run_id=run_id, weight=weight, cap=cap
        )
        return answers.p

    async def compare_with_hits(
        self,
        comparisons: Sequence[Comparison],
        *,
        run_id: str,
        weight: float = 1.0,
        cap: int | None = None,
    ) -> Answers:
        """``p`` for each comparison of one round of ``run_id``, judged in a batch with
        whatever else is waiting, and whether a verdict cache gave it. ``weight``: the run's
        share of the judge against other runs'; ``cap``: the most of its comparisons at the
        judge at once (None: no cap)."""
        if not comparisons:
            return Answers([], [])
        if self._closed:
            raise JudgeError("the judge scheduler is closed")
        future: asyncio.Future[Answers] = asyncio.get_running_loop().create_future()
        waiting = self._queue.push(
            run_id, (comparisons, future), len(comparisons), weight=weight, cap=cap
        )
        self._arrived()
        try:
            return await future
        except asyncio.CancelledError:
            self._queue.remove(waiting)  # not sent yet: nobody needs it; sent: it is answered
            raise

    def _arrived(self) -> None:
        if len(self._sending) >= self.batches_in_flight:
            return  # the next batch is formed when one comes back
        if self._timer is None:
            self._dispatch_soon(window=self.window_s > 0 and self.queued < self.max_batch)
        elif self._in_window and self.queued >= self.max_batch:
            self._dispatch_soon(window=False)  # a full batch need not wait for the window

    def _dispatch_soon(self, *, window: bool) -> None:
        """Form batches after ``window_s``, or at the end of this turn of the event loop."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._in_window = window
        self._timer = (
            loop.call_later(self.window_s, self._dispatch) if window
            else loop.call_soon(self._dispatch)
        )

    def _dispatch(self) -> None:
        """Send batches from the queue while there is room at the judge."""
        self._timer = None
        loop = asyncio.get_running_loop()
        while not self._closed and len(self._sending) < self.batches_in_flight:
            batch = self._queue.pop_batch(self.max_batch)
            if not batch:
                return  # empty, or only runs at their cap wait: an answer will call again
            task = loop.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Round[_Waiting]]) -> None:
        flat = [c for r in batch for c in r.item[0]]
        self.batches += 1
        if self.observe is not None:
            self.observe(len(flat))
        task = asyncio.current_task()
        try:
            answers = await ask_judge(self.comparator, flat)
        except JudgeError as error:
            for r in batch:
                _fail(r.item[1], error)
            self._done(task, batch)
            return
        except asyncio.CancelledError:  # aclose: nobody will be answered
            for r in batch:
                _fail(r.item[1], JudgeError("the judge scheduler is closed"))
            self._done(task, batch)
            raise
        now: list[tuple[Round[_Waiting], Answers]] = []
        later: list[tuple[Round[_Waiting], Answers]] = []
        end = 0
        share = self.max_batch / max(1, self._queue.runs_waiting)
        for r in batch:
            # A run with more than an equal share of a batch waiting fills the next batch
            # from its queue: its groups wake once that batch is at the judge (module doc).
            backlogged = self._queue.queued_of(r.run_id) > share
            mine = Answers(answers.p[end : end + r.size], answers.cached[end : end + r.size])
            (later if backlogged else now).append((r, mine))
            end += r.size
        _answer(now)
        self._done(task, batch)
        if later:  # after _done's dispatch: their groups then wake after the send starts
            asyncio.get_running_loop().call_soon(_answer, later)

    def _done(self, task: asyncio.Task | None, batch: list[Round[_Waiting]]) -> None:
        """The judge is done with ``batch``: make room, and form the next batch in the next
        turn of the loop, after the groups answered so far (woken before it) have queued
        their next rounds."""
        for r in batch:
            self._queue.settle(r)
        self._sending.discard(task)
        if not self._closed:
            self._dispatch_soon(window=False)

    async def aclose(self) -> None:
        """Fail every round waiting and cancel the batches at the judge.

        The service has cancelled its groups: nobody waits on these batches any more, and a
        judge that never answers must not hold the server's stop forever.
        """
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = JudgeError("the judge scheduler is closed")
        for r in self._queue.drain():
            _fail(r.item[1], error)
        for task in list(self._sending):
            task.cancel()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


def _answer(answered: list[tuple[Round[_Waiting], Answers]]) -> None:
    for r, answers in answered:
        future = r.item[1]
        if not future.done():
            future.set_result(answers)


def _fail(future: asyncio.Future, error: JudgeError) -> None:
    if not future.done():
        future.set_exception(error)


__all__ = ["DEFAULT_BATCHES_IN_FLIGHT", "DEFAULT_MAX_BATCH", "JudgeScheduler", "ask_judge"]
