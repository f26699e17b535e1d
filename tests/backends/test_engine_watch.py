"""A hung in-process engine is given up like a hung model server (comparators/health.py): its
batches fail within 1.5 x the judge's timeout, whatever their size and number; a slow engine
that makes progress (a forward pass, a prompt, an engine call) is never given up; and a judge
that is down (or silent) says it is not healthy, so /readyz and the gRPC health check say not
ready.

The engines are real where one runs here (transformers on the tiny model, its forward pass
made to block or to crawl), fakes where one needs a GPU (SGLang) or is slow to start (vLLM:
its engine's ``generate`` as the judge uses it)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from judge_server.app import build_model_comparator
from judge_server.bench.fake_judge import fake_server
from judge_server.comparators.base import Comparison, FailedComparisons
from judge_server.comparators.model import STALL_FACTOR, ModelComparator, load_tokenizer
from judge_server.comparators.openai import OpenAIComparator
from judge_server.comparators.sglang import SGLangEngineComparator
from judge_server.comparators.transformers import TransformersComparator
from judge_server.comparators.vllm import VLLMComparator
from judge_server.errors import JudgeError
from judge_server.settings import ServerSettings

from .test_openai_fake import Waits, completion
from .test_sglang_fake import KEY, FakeEngine

HUNG_TIMEOUT_S = 2.0  # the stall (3 s) is long beside a busy machine's event-loop delays
SLOW_TIMEOUT_S = 2.0  # the stall is 3 s; a slow engine's steps take SLOW_STEP of it
SLOW_STEP = 0.4  # of the stall (1.2 s): 1.8 s to spare for a busy machine's delays
HANG_GUARD_S = 60  # a test that would hang fails instead (not a bound)


def comparisons(n: int, run: str = "r") -> list[Comparison]:
    return [Comparison("2 + 2?", f"2 + 2 = {k}", "2 + 2 = 5", "4", run) for k in range(n)]


async def fail_together(judge: ModelComparator, *sizes: int) -> float:
    """Batches of ``sizes`` sent at once to a hung judge: each fails as hung. The seconds
    it took."""
    started = time.perf_counter()
    outcomes = await asyncio.wait_for(asyncio.gather(
        *(judge.compare(comparisons(n, f"r{k}")) for k, n in enumerate(sizes)),
        return_exceptions=True,
    ), HANG_GUARD_S)
    took = time.perf_counter() - started
    for outcome in outcomes:
        assert isinstance(outcome, FailedComparisons) and "hung" in str(outcome), outcome
        assert all(e is not None for e in outcome.errors)
    return took


async def cooled_down(judge: ModelComparator) -> None:
    while judge.watch.down_for() > 0:
        await asyncio.sleep(0.05)


def test_the_judge_timeout_reaches_the_in_process_engines():
    judges: list[dict[str, Any]] = [
        {"comparator": "transformers", "judge_model": "m"},
        {"comparator": "sglang", "judge_model": "m"},
        {"comparator": "vllm", "judge_model": "m"},
        {"comparator": "openai", "judge_model": "m", "judge_base_url": "http://j"},
    ]
    for options in judges:
        judge = build_model_comparator(ServerSettings(judge_timeout_s=4, **options))
        assert judge.timeout_s == 4 and judge.stall_s == STALL_FACTOR * 4, options
        assert judge.watch.cooldown_s == 4
    assert TransformersComparator("m").stall_s == STALL_FACTOR * 60  # the default
    with pytest.raises(ValueError, match="timeout_s"):
        TransformersComparator("m", timeout_s=0)


# -- transformers: a real model whose forward pass blocks or crawls -----------------------------


async def test_a_hung_forward_pass_fails_every_batch_within_the_deadline(tiny_model, monkeypatch):
    judge = TransformersComparator(str(tiny_model), device="cpu", batch_size=2,
                                   timeout_s=HUNG_TIMEOUT_S, nonce_key=KEY)
    await judge.start()
    forward, release, forwards = judge._forward, threading.Event(), []

    def first_hangs(*args):
        forwards.append(len(args[1]))
        if len(forwards) == 1:
            release.wait()
        return forward(*args)

    monkeypatch.setattr(judge, "_forward", first_hangs)
    try:
        took = await fail_together(judge, 6, 4)  # the second waits behind the hung first
        assert took < 2 * judge.stall_s  # the behaviour under test (about 1 x stall_s)
        assert judge.watch.trips == 1
        assert not await judge.check_health()  # down: not ready
        with pytest.raises(JudgeError, match="fail unsent"):
            await judge.compare(comparisons(1))

        # After the cooldown the forward pass still hangs and the engine owes its answer: the
        # next batch fails at once, without a forward pass, and the judge stays not ready.
        await cooled_down(judge)
        assert not await judge.check_health()
        await fail_together(judge, 1)
        assert judge.watch.trips == 2 and forwards == [2]

        # Released: the hung batch ends its forward passes (its answers are dropped); the
        # batches given up meanwhile never ran. After the cooldown the judge answers again.
        release.set()
        while judge.watch.outstanding:
            await asyncio.sleep(0.05)
        assert forwards == [2, 2, 2]
        await cooled_down(judge)
        assert await judge.check_health()
        assert len(await judge.compare(comparisons(3))) == 3
        assert judge.watch.trips == 2
    finally:
        release.set()
        await judge.aclose()


async def test_a_slow_forward_pass_that_makes_progress_is_never_given_up(tiny_model,
                                                                         monkeypatch):
    judge = TransformersComparator(str(tiny_model), device="cpu", batch_size=1,
                                   timeout_s=SLOW_TIMEOUT_S, nonce_key=KEY)
    await judge.start()
    forward = judge._forward

    def crawls(*args):  # each forward pass takes SLOW_STEP x stall_s, its own work included
        started = time.perf_counter()
        logprobs = forward(*args)
        time.sleep(max(0.0, SLOW_STEP * judge.stall_s - (time.perf_counter() - started)))
        return logprobs

    monkeypatch.setattr(judge, "_forward", crawls)
    try:
        # Six forward passes, one at a time: 2.4 x stall_s; the second batch waits 1.2 x
        # stall_s for its first, behind the first batch.
        first, second = await asyncio.wait_for(asyncio.gather(
            judge.compare(comparisons(3, "a")), judge.compare(comparisons(3, "b"))
        ), HANG_GUARD_S)
        assert len(first) == len(second) == 3 and judge.watch.trips == 0
        assert await judge.check_health()
    finally:
        await judge.aclose()


# -- SGLang's in-process engine (a fake: SGLang needs a GPU) -----------------------------------


class CrawlingEngine(FakeEngine):
    """``sglang.Engine`` serving one ``async_generate`` call at a time, each taking
    ``seconds_per_prompt`` per prompt; while ``hung`` is set (an event), calls never end."""

    def __init__(self, model_path: str, **kwargs) -> None:
        super().__init__(model_path, **kwargs)
        self.seconds_per_prompt = 0.0
        self.hung: asyncio.Event | None = None
        self.serving = asyncio.Lock()

    async def async_generate(self, **request):
        async with self.serving:
            await asyncio.sleep(self.seconds_per_prompt * len(request["input_ids"]))
            if self.hung is not None:
                await self.hung.wait()
            return await super().async_generate(**request)


async def test_a_hung_sglang_engine_fails_every_batch_within_the_deadline(tiny_model):
    judge = SGLangEngineComparator(str(tiny_model), engine_factory=CrawlingEngine,
                                   timeout_s=HUNG_TIMEOUT_S, nonce_key=KEY)
    await judge.start()
    engine = judge.engine
    engine.hung = asyncio.Event()
    try:
        took = await fail_together(judge, 200, 10)
        assert took < 2 * judge.stall_s  # the behaviour under test (about 1 x stall_s)
        assert judge.watch.trips == 1 and not await judge.check_health()
        engine.hung.set()
        engine.hung = None
        await cooled_down(judge)
        assert await judge.check_health()
        assert len(await judge.compare(comparisons(2))) == 2
    finally:
        await judge.aclose()


async def test_a_large_batch_on_a_slow_sglang_engine_is_never_given_up(tiny_model):
    """The engine's progress shows once per ``async_generate`` call: a batch goes in calls of
    at most 64 prompts, so a batch that takes longer than the stall still shows progress."""
    judge = SGLangEngineComparator(str(tiny_model), engine_factory=CrawlingEngine,
                                   timeout_s=SLOW_TIMEOUT_S, nonce_key=KEY)
    await judge.start()
    engine = judge.engine
    engine.seconds_per_prompt = SLOW_STEP * judge.stall_s / 64  # per call of 64
    try:
        answers = await asyncio.wait_for(judge.compare(comparisons(256)), HANG_GUARD_S)
        assert len(answers) == 256 and judge.watch.trips == 0  # 1.6 x stall_s in all
        assert [len(call["input_ids"]) for call in engine.calls] == [64] * 4
    finally:
        await judge.aclose()


# -- vLLM's in-process engine (a fake AsyncLLM.generate: the real one is slow to start) --------


class CrawlingVLLM:
    """``AsyncLLM.generate`` as the judge uses it: one final output per prompt, one prompt
    at a time, each after ``delay_s``; while ``hung`` is set, prompts never finish."""

    def __init__(self, judge: VLLMComparator) -> None:
        self.judge = judge
        self.delay_s = 0.0
        self.hung: asyncio.Event | None = None
        self.serving = asyncio.Lock()
        self.finished = 0

    async def generate(self, prompt, params, request_id):
        async with self.serving:
            await asyncio.sleep(self.delay_s)
            if self.hung is not None:
                await self.hung.wait()
        assert self.judge.verdict_ids is not None
        a, b = self.judge.verdict_ids
        self.finished += 1
        yield SimpleNamespace(
            prompt_token_ids=prompt["prompt_token_ids"], num_cached_tokens=0,
            outputs=[SimpleNamespace(logprobs=[{a: SimpleNamespace(logprob=-1.0),
                                                b: SimpleNamespace(logprob=-2.0)}])],
        )

    async def check_health(self) -> None:
        return None  # the engine is alive: only the watch says the judge is down

    def shutdown(self) -> None:
        pass


class FakeEngineVLLM(VLLMComparator):
    """The vLLM judge on :class:`CrawlingVLLM` (vLLM itself is not imported)."""

    async def _load(self):
        self.engine = CrawlingVLLM(self)
        return await asyncio.to_thread(load_tokenizer, self.model, extra=self.extra)

    async def _start(self) -> None:
        await ModelComparator._start(self)  # no SamplingParams: the fake takes none
        self._by_id = True


async def test_a_hung_vllm_engine_fails_every_batch_within_the_deadline(tiny_model):
    judge = FakeEngineVLLM(str(tiny_model), timeout_s=HUNG_TIMEOUT_S, nonce_key=KEY)
    await judge.start()
    judge.engine.hung = asyncio.Event()
    try:
        took = await fail_together(judge, 200, 10)
        assert took < 2 * judge.stall_s  # the behaviour under test (about 1 x stall_s)
        assert judge.watch.trips == 1 and not await judge.check_health()
        judge.engine.hung.set()
        judge.engine.hung = None
        await cooled_down(judge)
        assert await judge.check_health()
        assert len(await judge.compare(comparisons(2))) == 2
    finally:
        if judge.engine.hung is not None:
            judge.engine.hung.set()
        await judge.aclose()


async def test_a_slow_vllm_engine_that_finishes_prompts_is_never_given_up(tiny_model):
    judge = FakeEngineVLLM(str(tiny_model), timeout_s=SLOW_TIMEOUT_S, nonce_key=KEY)
    await judge.start()
    judge.engine.delay_s = SLOW_STEP * judge.stall_s
    try:
        answers = await asyncio.wait_for(judge.compare(comparisons(5)), HANG_GUARD_S)
        assert answers == pytest.approx([1 / (1 + math.exp(-1))] * 5)
        assert judge.watch.trips == 0 and judge.engine.finished == 5  # 2 x stall_s in all
    finally:
        await judge.aclose()


# -- a model server: not ready while down --------------------------------------------------------


async def test_a_model_server_taken_as_hung_is_not_ready_until_it_answers_again():
    release = asyncio.Event()

    async def hangs_on_judging(method, path, body):
        if method == "POST":
            await release.wait()
            return 200, completion({" A": -1.0, " B": -2.0})
        return 200, {"data": [{"id": "judge"}]}  # /v1/models answers all along

    async with fake_server(hangs_on_judging) as (url, _):
        judge = OpenAIComparator(url, "judge", timeout_s=0.5, retries=2, nonce_key=KEY)
        judge._sleep = Waits()  # retries do not wait: every try times out, none answers
        try:
            await judge.start()
            assert await judge.check_health()
            await fail_together(judge, 3)
            assert judge.watch.trips == 1
            assert not await judge.check_health()
            release.set()
            await cooled_down(judge)
            assert await judge.check_health()  # the next batch is the probe
            assert len(await judge.compare(comparisons(2))) == 2
        finally:
            release.set()
            await judge.aclose()
