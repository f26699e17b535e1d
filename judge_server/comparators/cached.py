"""A verdict cache in front of any comparator: the same question is judged once per run.

Two comparisons are the same question when they have the same run, prompt, reference, first
trace and second trace (order matters: ``(a, b)`` and ``(b, a)`` are two questions, as the
judge's position bias makes them). :class:`CachedComparator` keeps the answers in one LRU of
``max_entries`` keyed by ``(run_id, hash of the rest)``; the judge is the wrapped comparator,
so a cache never mixes judges. Within a batch, repeated questions are sent once; a question
already being judged by a concurrent batch is waited for rather than sent again. A failed
batch caches nothing, and every caller waiting on it gets the same :class:`JudgeError`; when
the judge fails only some comparisons (:class:`~.base.FailedComparisons`), the others are
cached, and only the comparisons that asked a failed question fail.
:meth:`CachedComparator.compare_with_hits` says which answers the cache gave (each of those
three ways) and how many requests the judge received for the others, so that the service
counts the requests that reached the judge.

Where repeats come from: pool anchors meet the same traces again in later tournaments of a
prompt, a trainer retries a group, ``order="both"`` designs that revisit a pair, and
benchmarks that replay pairs.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from ..errors import JudgeError
from .base import NO_PREFERENCE, Answers, Comparator, Comparison, FailedComparisons, as_verdict

Key = tuple[str, bytes]


def comparison_key(comparison: Comparison) -> Key:
    """``(run_id, 16-byte digest of prompt, reference, first, second)``."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        comparison.prompt,
        "\x00" if comparison.reference is None else "\x01" + comparison.reference,
        comparison.first,
        comparison.second,
    ):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return comparison.run_id, digest.digest()


class CachedComparator(Comparator):
    """``inner`` with a per-run verdict cache of at most ``max_entries`` answers (LRU)."""

    def __init__(self, inner: Comparator, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.inner = inner
        self.name = inner.name
        self.batch_limit = inner.batch_limit
        self.max_entries = max_entries
        self._answers: OrderedDict[Key, float] = OrderedDict()
        self._pending: dict[Key, asyncio.Future] = {}
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"CachedComparator({self.inner!r}, max_entries={self.max_entries})"

    def __len__(self) -> int:
        return len(self._answers)

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        return (await self.compare_with_hits(comparisons)).p

    async def compare_with_hits(self, comparisons: Sequence[Comparison]) -> Answers:
        """The answers, and which of them the cache gave: a question answered before, one
        being judged for a concurrent batch (waited for), or a repeat within this batch (sent
        once, its first asking counts as the request). A question sent to ``inner`` is cached
        when ``inner`` says so (a cache behind a cache)."""
        keys = [comparison_key(c) for c in comparisons]
        out: list[float | None] = [None] * len(comparisons)
        cached = [True] * len(comparisons)
        waiting: dict[int, asyncio.Future] = {}
        to_ask: dict[Key, int] = {}  # key -> index of the first comparison asking it
        got: dict[Key, float] = {}
        for i, key in enumerate(keys):
            if key in self._answers:
                self._answers.move_to_end(key)
                out[i] = self._answers[key]
                self.hits += 1
            elif key in self._pending:
                waiting[i] = self._pending[key]
                self.hits += 1
            elif key in to_ask:
                self.hits += 1
            else:
                to_ask[key] = i
                self.misses += 1
        requests = [0] * len(comparisons)
        errors: list[JudgeError | None] = [None] * len(comparisons)
        failed: dict[Key, JudgeError] = {}
        if to_ask:
            loop = asyncio.get_running_loop()
            mine = {key: loop.create_future() for key in to_ask}
            self._pending.update(mine)
            try:
                try:
                    answered = await self.inner.compare_with_hits(
                        [comparisons[i] for i in to_ask.values()]
                    )
                    inner_errors: list[JudgeError | None] = [None] * len(to_ask)
                except FailedComparisons as exc:
                    answered, inner_errors = exc.answers, exc.errors
                inner_requests = answered.requests_each()
                if {len(answered.p), len(answered.cached), len(inner_requests),
                        len(inner_errors)} != {len(to_ask)}:
                    raise ValueError(
                        f"{self.name}: {len(answered.p)} verdicts for {len(to_ask)} comparisons"
                    )
            except BaseException as exc:
                for key, future in mine.items():
                    self._pending.pop(key, None)
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: a waiter may or may not exist
                raise
            for (key, i), p, hit, n, error in zip(
                to_ask.items(), answered.p, answered.cached, inner_requests, inner_errors
            ):
                self._pending.pop(key, None)
                cached[i] = bool(hit)
                requests[i] = n
                if error is not None:  # not cached: the next asking tries again
                    failed[key] = error
                    mine[key].set_exception(error)
                    mine[key].exception()
                    continue
                mine[key].set_result(p)
                got[key] = p
                self._store(key, p)
        for i, future in waiting.items():
            try:
                out[i] = await future
            except JudgeError as error:
                errors[i] = error
        for i, key in enumerate(keys):
            if out[i] is None and key in failed:
                errors[i] = failed[key]
        # None: asked in this batch, maybe more than once
        answered_p = [
            NO_PREFERENCE if errors[i] is not None else got[key] if p is None else p
            for i, (p, key) in enumerate(zip(out, keys))
        ]
        answers = Answers([as_verdict(p) for p in answered_p], cached, requests)
        if any(e is not None for e in errors):
            raise FailedComparisons(answers, errors)
        return answers

    def _store(self, key: Key, p: float) -> None:
        self._answers[key] = p
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def _drop_answers(self, run_id: str) -> int:
        stale = [key for key in self._answers if key[0] == run_id]
        for key in stale:
            del self._answers[key]
        return len(stale)

    def forget_run(self, run_id: str) -> int:
        """Drop a run's answers and what the judge keeps for it; returns how many answers."""
        self.inner.forget_run(run_id)
        return self._drop_answers(run_id)

    def set_run_template(self, run_id: str, template) -> None:
        self.inner.set_run_template(run_id, template)
        self._drop_answers(run_id)  # verdicts under the old template no longer hold

    async def check_health(self) -> bool:
        return await self.inner.check_health()

    async def aclose(self) -> None:
        await self.inner.aclose()


__all__ = ["CachedComparator", "comparison_key"]
