"""The judge scheduler on a real event loop, with a judge the test answers batch by batch."""

from __future__ import annotations

import asyncio

import pytest

from judge_server.comparators.base import Answers, Comparator, Comparison
from judge_server.core.scheduler import JudgeScheduler
from judge_server.errors import JudgeError


class ManualJudge(Comparator):
    """Holds every batch until the test answers it: ``p = 0.01 * int(first)``, or a failure."""

    name = "manual"

    def __init__(self) -> None:
        self.pending: list[tuple[list[Comparison], asyncio.Future]] = []
        self.batches: list[list[Comparison]] = []

    async def compare(self, comparisons):
        future = asyncio.get_running_loop().create_future()
        self.batches.append(list(comparisons))
        self.pending.append((list(comparisons), future))
        return await future

    def answer(self, k: int = 0, answers=None) -> list[Comparison]:
        comparisons, future = self.pending.pop(k)
        future.set_result(answers if answers is not None else [p_of(c) for c in comparisons])
        return comparisons

    def fail(self, k: int, error: BaseException) -> None:
        _, future = self.pending.pop(k)
        future.set_exception(error)

    def runs_of(self, batch: int) -> list[str]:
        return [c.run_id for c in self.batches[batch]]


def p_of(c: Comparison) -> float:
    return 0.01 * int(c.first)


def round_of(run_id: str, n: int, first: int = 1) -> list[Comparison]:
    return [Comparison("q", str(first + k), "x", run_id=run_id) for k in range(n)]


async def turns(n: int = 10) -> None:
    """Let the event loop run ``n`` turns: the callers queue, batches go out."""
    for _ in range(n):
        await asyncio.sleep(0)


def ask(scheduler, run_id, n, first=1, **kw) -> asyncio.Task:
    return asyncio.create_task(scheduler.compare(round_of(run_id, n, first), run_id=run_id, **kw))


async def test_rounds_of_every_run_share_one_batch_and_each_gets_its_own_answers():
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge)
    calls = [ask(scheduler, run_id, 3, first=10 * k) for k, run_id in enumerate("abc")]
    await turns()
    assert len(judge.pending) == 1 and sorted(set(judge.runs_of(0))) == ["a", "b", "c"]
    assert scheduler.in_flight == 9 and scheduler.in_flight_of("b") == 3
    judge.answer()
    for k, call in enumerate(calls):
        assert await call == pytest.approx([0.01 * (10 * k + i) for i in range(3)])
    assert scheduler.in_flight == 0 and scheduler.batches == 1


async def test_an_empty_round_is_answered_at_once():
    assert await JudgeScheduler(ManualJudge()).compare([], run_id="a") == []


async def test_at_most_batches_in_flight_go_to_the_judge_and_the_rest_waits():
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=2, max_batch=4)
    calls = [ask(scheduler, "a", 4) for _ in range(5)]
    await turns()
    assert len(judge.pending) == 2 and scheduler.queued == 12 and scheduler.in_flight == 8
    judge.answer(0)
    await turns()  # the next batch went as soon as one came back
    assert len(judge.pending) == 2 and scheduler.queued == 8
    while judge.pending:
        judge.answer(0)
        await turns()
    await asyncio.gather(*calls)
    assert scheduler.batches == 5


@pytest.mark.parametrize("policy, quiet_batch", [("fair", 1), ("fifo", 20)])
async def test_a_flood_delays_a_quiet_run_by_one_batch_at_most_unless_fifo(policy, quiet_batch):
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=1, max_batch=8, policy=policy)
    flood = [ask(scheduler, "flood", 4) for _ in range(40)]  # 20 batches' worth
    await turns()
    quiet = ask(scheduler, "quiet", 4)
    await turns()
    batch = 0
    while not quiet.done():
        judge.answer(0)
        await turns()
        batch += 1
    assert "quiet" in judge.runs_of(quiet_batch) and batch == quiet_batch + 1
    while judge.pending:
        judge.answer(0)
        await turns()
    await asyncio.gather(*flood)


async def test_the_next_round_of_a_group_just_answered_joins_the_next_batch():
    """A tournament sends its rounds one after the other: under a flood, its next round must
    not miss the batch that follows the one that answered it."""
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=1, max_batch=8)
    flood = [ask(scheduler, "flood", 4) for _ in range(40)]
    await turns()

    async def tournament() -> None:
        for first in (1, 11, 21):
            await scheduler.compare(round_of("quiet", 4, first), run_id="quiet")

    quiet = asyncio.create_task(tournament())
    await turns()
    batches = 0
    while not quiet.done():
        judge.answer(0)
        await turns()
        batches += 1
    assert batches == 4  # the flood's first batch, then one batch per round
    while judge.pending:
        judge.answer(0)
        await turns()
    await asyncio.gather(*flood)


async def test_a_backlogged_runs_groups_wake_after_the_next_batch_is_formed():
    """The judge need not wait for them: their run fills the next batch from its queue."""
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=1, max_batch=8)
    woke_with_batches: list[int] = []

    async def flood_group(k: int) -> None:
        await scheduler.compare(round_of("flood", 4), run_id="flood")
        woke_with_batches.append(len(judge.batches))

    flood = [asyncio.create_task(flood_group(k)) for k in range(20)]
    await turns()
    judge.answer(0)
    await turns()
    assert woke_with_batches == [2, 2]  # the second batch was at the judge before they woke
    while judge.pending:
        judge.answer(0)
        await turns()
    await asyncio.gather(*flood)


async def test_weights_share_the_judge():
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=1, max_batch=40)
    busy = ask(scheduler, "c", 1)  # the judge is busy while both runs queue their rounds
    await turns()
    calls = [ask(scheduler, run_id, 2, weight=w) for run_id, w in (("a", 3.0), ("b", 1.0))
             for _ in range(100)]
    await turns()
    judge.answer(0)
    await busy
    await turns()
    served = {"a": 0, "b": 0}
    for _ in range(4):
        for c in judge.answer(0):
            served[c.run_id] += 1
        await turns()
    assert served == {"a": 120, "b": 40}
    while judge.pending:
        judge.answer(0)
        await turns()
    await asyncio.gather(*calls)


async def test_a_run_never_has_more_than_its_cap_at_the_judge():
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=4, max_batch=100)
    capped = [ask(scheduler, "capped", 2, cap=4) for _ in range(10)]
    free = [ask(scheduler, "free", 2) for _ in range(10)]
    await turns()
    seen = 0
    while judge.pending:
        assert scheduler.in_flight_of("capped") <= 4
        seen = max(seen, scheduler.in_flight_of("capped"))
        judge.answer(0)
        await turns()
    await asyncio.gather(*capped, *free)
    assert seen == 4
    assert judge.runs_of(0).count("free") == 20  # the others were not held back


@pytest.mark.parametrize(
    "failure, message",
    [
        (JudgeError("model server down"), "model server down"),
        (RuntimeError("boom"), "manual: RuntimeError: boom"),
    ],
)
async def test_a_failed_batch_fails_its_rounds_only(failure, message):
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=2, max_batch=4)
    first = [ask(scheduler, "a", 2), ask(scheduler, "b", 2)]
    await turns()
    second = ask(scheduler, "b", 2)
    await turns()
    assert len(judge.pending) == 2
    judge.fail(0, failure)
    judge.answer(0)
    for call in first:
        with pytest.raises(JudgeError, match=message):
            await call
    assert await second == pytest.approx([0.01, 0.02])
    third = ask(scheduler, "a", 1)  # and the scheduler goes on
    await turns()
    judge.answer(0)
    assert await third == [0.01]


@pytest.mark.parametrize(
    "answers, message", [([0.5], "1 verdicts for 2"), ([0.5, float("nan")], "not in"),
                         ([1.5, 0.2], "not in"), (["yes", 0.1], "ValueError")]
)
async def test_a_malformed_answer_is_a_judge_failure(answers, message):
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge)
    call = ask(scheduler, "a", 2)
    await turns()
    judge.answer(0, answers)
    with pytest.raises(JudgeError, match=message):
        await call


async def test_a_cancelled_caller_withdraws_its_round_if_it_was_not_sent():
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=1, max_batch=4)
    sent = ask(scheduler, "a", 4)
    await turns()
    waiting, other = ask(scheduler, "b", 3), ask(scheduler, "c", 2, first=7)
    await turns()
    assert scheduler.queued == 5
    waiting.cancel()
    await turns()
    assert scheduler.queued == 2 and scheduler.queued_of("b") == 0
    sent.cancel()  # already at the judge: the batch is answered all the same
    await turns()
    judge.answer(0)
    await turns()
    assert judge.runs_of(1) == ["c", "c"]  # b's round never went
    judge.answer(0)
    assert await other == pytest.approx([0.07, 0.08])
    assert scheduler.in_flight == scheduler.queued == 0
    assert sent.cancelled() and waiting.cancelled()


async def test_rounds_within_the_window_join_one_batch():
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, window_s=0.05)
    first = ask(scheduler, "a", 2)
    await asyncio.sleep(0.01)
    second = ask(scheduler, "b", 2)
    await turns()
    assert judge.pending == []
    await asyncio.sleep(0.1)
    assert len(judge.pending) == 1 and judge.runs_of(0) == ["a", "a", "b", "b"]
    judge.answer(0)
    await asyncio.gather(first, second)


async def test_a_full_batch_goes_without_waiting_for_the_window():
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, window_s=10.0, max_batch=4)
    call = ask(scheduler, "a", 4)
    await turns()
    assert len(judge.pending) == 1
    judge.answer(0)
    await call


async def test_aclose_fails_waiting_rounds_and_cancels_a_judge_that_never_answers():
    judge = ManualJudge()
    scheduler = JudgeScheduler(judge, batches_in_flight=1, max_batch=2)
    at_judge, waiting = ask(scheduler, "a", 2), ask(scheduler, "b", 2, cap=1)
    await turns()
    await asyncio.wait_for(scheduler.aclose(), 5)
    for call in (at_judge, waiting):
        with pytest.raises(JudgeError, match="closed"):
            await call
    assert scheduler.queued == scheduler.in_flight == 0
    with pytest.raises(JudgeError, match="closed"):
        await scheduler.compare(round_of("a", 1), run_id="a")


def test_bad_options_are_refused():
    for options in (dict(max_batch=0), dict(batches_in_flight=0), dict(window_s=-1),
                    dict(policy="lottery")):
        with pytest.raises(ValueError):
            JudgeScheduler(ManualJudge(), **options)


class MarkingJudge(Comparator):
    """Answers at once, and says a cache gave the answers whose ``first`` is even."""

    name = "marking"

    def __init__(self, marks=None) -> None:
        self.marks = marks  # given: the marks of every batch, whatever its size

    async def compare(self, comparisons):
        return [p_of(c) for c in comparisons]

    async def compare_with_hits(self, comparisons):
        marks = self.marks
        if marks is None:
            marks = [int(c.first) % 2 == 0 for c in comparisons]
        return Answers(await self.compare(comparisons), marks)


async def test_each_round_gets_the_cache_marks_of_its_own_answers():
    scheduler = JudgeScheduler(MarkingJudge())
    rounds = [round_of(run_id, n, first) for run_id, n, first in
              (("a", 3, 1), ("b", 2, 10), ("a", 1, 7))]
    answers = await asyncio.gather(*[
        scheduler.compare_with_hits(r, run_id=r[0].run_id) for r in rounds
    ])
    assert scheduler.batches == 1
    assert [a.cached for a in answers] == [[False, True, False], [True, False], [False]]
    assert answers[1].p == pytest.approx([0.10, 0.11])
    assert await scheduler.compare(round_of("a", 2, 4), run_id="a") == pytest.approx([0.04, 0.05])
    assert await scheduler.compare_with_hits([], run_id="a") == ([], [], [])


async def test_cache_marks_that_do_not_match_the_comparisons_are_a_judge_failure():
    scheduler = JudgeScheduler(MarkingJudge(marks=[True]))
    with pytest.raises(JudgeError, match="1 cache marks for 2 comparisons"):
        await scheduler.compare_with_hits(round_of("a", 2), run_id="a")
