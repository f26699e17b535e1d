"""The verdict cache: one judgement per question and run, shared by concurrent batches."""

from __future__ import annotations

import asyncio

import pytest

from judge_server.comparators.base import Comparator, Comparison
from judge_server.comparators.cached import CachedComparator, comparison_key
from judge_server.comparators.simulated import SimulatedComparator
from judge_server.errors import JudgeError


class Counting(Comparator):
    name = "counting"

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.asked: list[Comparison] = []
        self.delay = delay
        self.fail = fail
        self.closed = False

    async def compare(self, comparisons):
        self.asked += comparisons
        await asyncio.sleep(self.delay)
        if self.fail:
            raise JudgeError("counting: down")
        return [len(c.first) / (len(c.first) + len(c.second)) for c in comparisons]

    async def aclose(self):
        self.closed = True


def c(first: str, second: str, run: str = "r", reference: str | None = None) -> Comparison:
    return Comparison("problem", first, second, reference, run)


async def test_a_question_is_judged_once_per_run():
    inner = Counting()
    cache = CachedComparator(inner)
    first = await cache.compare([c("aa", "b"), c("b", "aa"), c("aa", "b")])
    again = await cache.compare([c("aa", "b"), c("aa", "b", run="other"),
                                 c("aa", "b", reference="r")])
    assert first == [2 / 3, 1 / 3, 2 / 3] and again[0] == 2 / 3
    # order matters, runs and references are part of the question, duplicates go once
    assert [(x.first, x.run_id, x.reference) for x in inner.asked] == [
        ("aa", "r", None), ("b", "r", None), ("aa", "other", None), ("aa", "r", "r")]
    assert (cache.hits, cache.misses) == (2, 4)
    assert comparison_key(c("a", "b")) != comparison_key(c("a", "b", reference=""))


async def test_concurrent_batches_share_a_judgement():
    inner = Counting(delay=0.05)
    cache = CachedComparator(inner)
    one, two = await asyncio.gather(cache.compare([c("aa", "b")]),
                                     cache.compare([c("x", "yy"), c("aa", "b")]))
    assert one == [2 / 3] and two == [1 / 3, 2 / 3]
    assert len(inner.asked) == 2


async def test_a_failure_is_not_cached_and_reaches_every_waiter():
    inner = Counting(delay=0.05, fail=True)
    cache = CachedComparator(inner)
    results = await asyncio.gather(cache.compare([c("aa", "b")]), cache.compare([c("aa", "b")]),
                                   return_exceptions=True)
    assert all(isinstance(r, JudgeError) for r in results)
    inner.fail = False
    assert await cache.compare([c("aa", "b")]) == [2 / 3]
    assert len(inner.asked) == 2


async def test_lru_bound_and_forgetting_a_run():
    inner = Counting()
    cache = CachedComparator(inner, max_entries=2)
    await cache.compare([c("a", "b"), c("a", "cc"), c("a", "ddd")])  # more than fit at once
    assert len(cache) == 2
    await cache.compare([c("a", "b")])  # evicted: judged again
    assert len(inner.asked) == 4
    await cache.compare([c("a", "b", run="gone")])
    assert cache.forget_run("gone") == 1 and len(cache) == 1
    await cache.aclose()
    assert inner.closed
    with pytest.raises(ValueError):
        CachedComparator(inner, max_entries=0)


def test_a_new_template_drops_the_runs_cached_verdicts_and_deleting_forgets_it():
    class Templated(SimulatedComparator):
        def __init__(self):
            super().__init__()
            self.templates = {}

        def set_run_template(self, run_id, template):
            self.templates[run_id] = template

        def forget_run(self, run_id):
            self.templates.pop(run_id, None)

    inner = Templated()
    cache = CachedComparator(inner)
    asyncio.run(cache.compare([Comparison("q", "a", "b", run_id="r")]))
    assert len(cache) == 1
    cache.set_run_template("r", "{problem} {reference} {first} {second}")
    assert len(cache) == 0 and "r" in inner.templates
    cache.forget_run("r")
    assert inner.templates == {}


async def test_an_unread_verdict_stays_unread_when_cached():
    from judge_server.comparators.base import UNREAD, is_unread

    class Unreadable(Comparator):
        async def compare(self, comparisons):
            return [UNREAD] * len(comparisons)

    cache = CachedComparator(Unreadable())
    first = await cache.compare([c("a", "b"), c("a", "b")])
    again = await cache.compare([c("a", "b")])
    assert first == [0.5, 0.5] and all(map(is_unread, first + again))


async def test_the_cache_says_which_answers_it_gave():
    inner = Counting(delay=0.05)
    cache = CachedComparator(inner)
    # a repeat within the batch is sent once: its first asking is the request
    first = await cache.compare_with_hits([c("aa", "b"), c("b", "aa"), c("aa", "b")])
    assert first.p == [2 / 3, 1 / 3, 2 / 3] and first.cached == [False, False, True]
    # answered before; and, in a concurrent batch, waited for while at the judge
    again, racing = await asyncio.gather(
        cache.compare_with_hits([c("aa", "b"), c("x", "yy")]),
        cache.compare_with_hits([c("x", "yy"), c("b", "aa")]),
    )
    assert again.cached == [True, False] and racing.cached == [True, True]
    assert racing.p == [1 / 3, 1 / 3]
    assert len(inner.asked) == 3 == sum(not hit for r in (first, again, racing)
                                        for hit in r.cached)
    assert (cache.hits, cache.misses) == (4, 3)


async def test_a_comparator_caches_nothing_by_default_and_a_cache_behind_a_cache_counts():
    inner = Counting()
    assert await inner.compare_with_hits([c("a", "b"), c("a", "b")]) == ([0.5, 0.5],
                                                                       [False, False], [1, 1])
    inner = Counting()
    behind = CachedComparator(inner)
    await behind.compare([c("a", "b")])
    front = CachedComparator(behind)  # does not know (a, b): asks behind, which answers it
    answers = await front.compare_with_hits([c("a", "b"), c("a", "cc")])
    assert answers.cached == [True, False] and len(inner.asked) == 2
