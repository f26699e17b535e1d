"""The per-judge watch (judge_server.comparators.health) with a hand-stepped clock, and a
hung judge behind the scheduler: every batch fails at once, however many there are."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from judge_server.bench.fake_judge import fake_server
from judge_server.comparators.base import Comparison
from judge_server.comparators.health import JudgeWatch
from judge_server.comparators.openai import OpenAIComparator
from judge_server.core.scheduler import JudgeScheduler
from judge_server.errors import JudgeError

from .test_openai_fake import completion


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_judge_owing_answers_is_silent_after_stall_s_without_one():
    clock = Clock()
    watch = JudgeWatch(3.0, 2.0, clock=clock)
    clock.now += 50  # idle for long: not silent, and the first request starts the count
    watch.asked()
    clock.now += 2.9
    assert not watch.silent()
    watch.answered()  # an answer to anything restarts it
    watch.asked()
    clock.now += 2.9
    assert not watch.silent()
    clock.now += 0.1
    assert watch.silent() and watch.deadline() == clock.now


def test_an_idle_judge_is_never_silent_and_a_retry_does_not_restart_the_count():
    clock = Clock()
    watch = JudgeWatch(3.0, 2.0, clock=clock)
    watch.asked()
    watch.settled()
    clock.now += 10
    assert not watch.silent()  # nothing owed
    watch.asked()  # first try times out, the request is retried: still owed, no answer
    clock.now += 3.0
    assert watch.silent()


def test_a_trip_takes_the_judge_down_for_the_cooldown_and_counts_once():
    clock = Clock()
    watch = JudgeWatch(3.0, 2.0, clock=clock)
    watch.asked()
    clock.now += 3
    watch.trip()
    watch.trip()  # a second batch waking on the same silence
    assert watch.trips == 1 and watch.down_for() == 2.0
    clock.now += 1.5
    assert watch.down_for() == pytest.approx(0.5)
    clock.now += 0.5
    assert watch.down_for() == 0.0
    with pytest.raises(RuntimeError):
        JudgeWatch(3.0, 2.0).settled()
    with pytest.raises(ValueError):
        JudgeWatch(0.0, 1.0)


async def test_a_hung_judge_fails_ten_batches_within_three_timeouts_then_comes_back():
    """640 comparisons from ten runs: batches of at most max_concurrency (64), two at the
    judge at a time. Before the per-judge watch each batch was given up on its own, one pair
    after another (about 1.5 x the timeout per pair of batches)."""
    release = asyncio.Event()

    async def hung(method, path, body):
        if not release.is_set():
            await release.wait()
        return 200, completion({" A": math.log(0.6), " B": math.log(0.2)})

    timeout_s = 2.0  # long beside the event loop's own delays on a busy machine
    async with fake_server(hung) as (url, seen):
        judge = OpenAIComparator(url, "judge", timeout_s=timeout_s, retries=2,
                                 max_concurrency=64)
        scheduler = JudgeScheduler(judge, max_batch=1024, stall_s=timeout_s)
        assert scheduler.max_batch == 32  # what the judge takes at once, shared by 2 batches
        try:
            started = time.perf_counter()
            rounds = [scheduler.compare([Comparison("p", f"a{r}.{k}", "b", run_id=f"r{r}")
                                         for k in range(64)], run_id=f"r{r}")
                      for r in range(10)]
            outcomes = await asyncio.gather(*rounds, return_exceptions=True)
            took = time.perf_counter() - started
            assert all(isinstance(o, JudgeError) for o in outcomes)
            assert took < 3 * timeout_s  # the behaviour under test (about 1.5 x the timeout)
            assert scheduler.batches >= 10 and judge.watch.trips == 1
            assert len(seen.requests) <= 2 * 64  # only what was at the judge was ever sent

            # Down: a new batch fails unsent.
            sent = len(seen.requests)
            with pytest.raises(JudgeError, match="fail unsent"):
                await scheduler.compare([Comparison("p", "x", "y", run_id="r0")], run_id="r0")
            assert len(seen.requests) == sent

            # The judge is back; after the cooldown the next batch is sent and answered.
            release.set()
            while judge.watch.down_for() > 0:
                await asyncio.sleep(0.05)
            answer = await scheduler.compare([Comparison("p", "x", "y", run_id="r0")],
                                             run_id="r0")
            assert answer == pytest.approx([0.75])
            assert len(seen.requests) == sent + 1
        finally:
            await scheduler.aclose()
            await judge.aclose()
            release.set()
