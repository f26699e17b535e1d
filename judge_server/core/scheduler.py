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

A judge that works on at most so many comparisons at once (an HTTP judge's connection limit,
:attr:`~..comparators.base.Comparator.batch_limit`) gets batches of at most that limit shared
by the ``batches_in_flight``: what is sent is then at the judge, not waiting inside the
comparator in arrival order, where a flooding run's batch would keep a quiet run's later batch
waiting for all of it. (Measured with the fake judge of ``bench abuse``: a bystander's p99
behind 200 groups 4.4 s with batches of 1,024, 1-2 s with 64, 0.85-1.3 s with 32.)

Each round gets its answers back with the comparator's word on which of them a verdict cache
gave (:meth:`JudgeScheduler.compare_with_hits`), so that the service tells the comparisons a
group needed from the requests that reached the judge.

A failure fails only the rounds that needed it: a comparison the judge could not answer
(:class:`~..comparators.base.FailedComparisons`), or an answer that is not a ``p`` in
[0, 1], fails its round, with what the judge said of the round's other comparisons; the rest
of the batch is answered. A comparator that fails as a whole (or answers the wrong number of
comparisons) fails every round of the batch. The service turns failed rounds into per-group
failures. A caller that stops waiting (cancelled) withdraws its round if it has not been sent.

A batch at the judge for longer than ``stall_s`` stops holding its place among the
``batches_in_flight``: a hung judge (or one run's comparisons that hang it) cannot stall every
other run's rounds behind it. Its rounds are still answered (or failed) when it comes back; a
model-backed judge gives a hung batch up by itself (:mod:`..comparators.model`).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Sequence

from ..comparators.base import (
    NO_PREFERENCE,
    Answers,
    Comparator,
    Comparison,
    FailedComparisons,
    as_verdict,
)
from ..errors import JudgeError
from .scheduling import Policy, Round, make_queue

DEFAULT_MAX_BATCH = 1024
DEFAULT_BATCHES_IN_FLIGHT = 2


async def ask_judge(comparator: Comparator, comparisons: Sequence[Comparison]) -> Answers:
    """The comparator's ``p`` for each comparison, whether a verdict cache gave it and the
    requests it took, checked: every failure is a JudgeError, and one that touched some
    comparisons only is a :class:`FailedComparisons` (a ``p`` outside [0, 1] fails its
    comparison). An unread verdict stays :data:`~..comparators.base.UNREAD`, so that it can be
    counted."""
    errors: list[JudgeError | None] = [None] * len(comparisons)
    try:
        try:
            answers = await comparator.compare_with_hits(comparisons)
        except FailedComparisons as failed:
            answers, errors = failed.answers, list(failed.errors)
        p = [as_verdict(x) for x in answers.p]
        requests = answers.requests_each()
        for what, count in (("verdicts", len(p)), ("cache marks", len(answers.cached)),
                            ("request counts", len(requests)), ("failures", len(errors))):
            if count != len(comparisons):
                raise JudgeError(
                    f"{comparator.name}: {count} {what} for {len(comparisons)} comparisons"
                )
        for i, x in enumerate(p):
            if errors[i] is None and not (math.isfinite(x) and 0.0 <= x <= 1.0):
                errors[i] = JudgeError(f"{comparator.name}: verdict {x} is not in [0, 1]")
                p[i] = NO_PREFERENCE
    except JudgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of the judge is a JudgeError
        raise JudgeError(f"{comparator.name}: {type(exc).__name__}: {exc}") from exc
    checked = Answers(p, [bool(hit) for hit in answers.cached], requests)
    if any(e is not None for e in errors):
        raise FailedComparisons(checked, errors)
    return checked


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
        stall_s: float | None = None,
    ) -> None:
        if max_batch < 1 or batches_in_flight < 1 or window_s < 0:
            raise ValueError("max_batch and batches_in_flight must be >= 1, window_s >= 0")
        if stall_s is not None and stall_s <= 0:
            raise ValueError("stall_s must be positive (or None)")
        self.stall_s = stall_s  # a batch at the judge longer than this frees its place
        self.comparator = comparator
        limit = comparator.batch_limit  # shared by the batches in flight (module doc)
        self.max_batch = min(max_batch, max(1, limit // batches_in_flight) if limit else max_batch)
        self.window_s = window_s
        self.batches_in_flight = batches_in_flight
        self.policy = policy
        self.observe = observe  # called with each batch's size (a metrics histogram)
        self.batches = 0
        self._queue = make_queue(policy)
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._in_window = False  # the pending dispatch waits for the window to close
        self._sending: set[asyncio.Task] = set()
        self._stalled: set[asyncio.Task] = set()  # at the judge for longer than stall_s
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
            return Answers([], [], [])
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

    @property
    def _busy(self) -> int:
        """Batches at the judge that hold a place (those not stalled)."""
        return len(self._sending) - len(self._stalled)

    def _arrived(self) -> None:
        if self._busy >= self.batches_in_flight:
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
        while not self._closed and self._busy < self.batches_in_flight:
            batch = self._queue.pop_batch(self.max_batch)
            if not batch:
                return  # empty, or only runs at their cap wait: an answer will call again
            task = loop.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            task.add_done_callback(self._stalled.discard)
            if self.stall_s is not None:
                timer = loop.call_later(self.stall_s, self._stall, task)
                task.add_done_callback(functools.partial(_cancel_timer, timer))

    def _stall(self, task: asyncio.Task) -> None:
        """``task``'s batch has been at the judge for ``stall_s``: it frees its place."""
        if task.done() or self._closed:
            return
        self._stalled.add(task)
        self._dispatch_soon(window=False)

    async def _send(self, batch: list[Round[_Waiting]]) -> None:
        flat = [c for r in batch for c in r.item[0]]
        self.batches += 1
        if self.observe is not None:
            self.observe(len(flat))
        task = asyncio.current_task()
        errors: list[JudgeError | None] = [None] * len(flat)
        try:
            try:
                answers = await ask_judge(self.comparator, flat)
            except FailedComparisons as failed:  # checked by ask_judge: one per comparison
                answers, errors = failed.answers, failed.errors
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
        now: list[tuple[Round[_Waiting], Answers | JudgeError]] = []
        later: list[tuple[Round[_Waiting], Answers | JudgeError]] = []
        end = 0
        share = self.max_batch / max(1, self._queue.runs_waiting)
        requests = answers.requests_each()
        for r in batch:
            # A run with more than an equal share of a batch waiting fills the next batch
            # from its queue: its groups wake once that batch is at the judge (module doc).
            backlogged = self._queue.queued_of(r.run_id) > share
            part = slice(end, end + r.size)
            got = Answers(answers.p[part], answers.cached[part], requests[part])
            mine: Answers | JudgeError = got
            if any(e is not None for e in errors[part]):  # the round failed, alone
                mine = FailedComparisons(got, errors[part])
                backlogged = False
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


def _answer(answered: list[tuple[Round[_Waiting], Answers | JudgeError]]) -> None:
    for r, answers in answered:
        future = r.item[1]
        if isinstance(answers, JudgeError):
            _fail(future, answers)
        elif not future.done():
            future.set_result(answers)


def _cancel_timer(timer: asyncio.TimerHandle, _: object) -> None:
    timer.cancel()


def _fail(future: asyncio.Future, error: JudgeError) -> None:
    if not future.done():
        future.set_exception(error)


__all__ = ["DEFAULT_BATCHES_IN_FLIGHT", "DEFAULT_MAX_BATCH", "JudgeScheduler", "ask_judge"]
