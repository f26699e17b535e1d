"""The OpenAI-compatible judge against fake servers: requests, verdicts, every failure.

A fake server is a real HTTP server on loopback whose answers come from a plain function;
the judge's failures (server down, timeout, bad status, malformed response) must all be
JudgeError, and through the service a judge_failed group, never another exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time

import httpx
import pytest

from judge_server.app import build_service
from judge_server.bench.fake_judge import fake_server
from judge_server.comparators.base import Comparison, FailedComparisons
from judge_server.comparators.model import MAX_BACKOFF_S
from judge_server.comparators.openai import OpenAIComparator
from judge_server.errors import JudgeError
from judge_server.settings import ServerSettings
from trainer_client.types import Group, Trace

from ..ports import free_port

KEY = b"0123456789abcdef"
COMPARISON = Comparison("2 + 2?", "2 + 2 = 4", "2 + 2 = 5", "4", "r1")


def completion(top: dict[str, float], usage: dict | None = None) -> dict:
    return {
        "choices": [{"index": 0, "text": "", "logprobs": {
            "tokens": [next(iter(top))], "token_logprobs": [next(iter(top.values()))],
            "top_logprobs": [top], "text_offset": [0]}}],
        "usage": usage or {"prompt_tokens": 100, "completion_tokens": 1},
    }


def answers(top: dict[str, float]):
    def handler(method, path, body):
        if method == "GET":
            return 200, {"data": [{"id": "judge"}]}
        return 200, completion(top)
    return handler


async def test_text_prompt_and_top_k_verdict_without_a_tokenizer():
    top = {" A": math.log(0.3), " B": math.log(0.1), " the": math.log(0.4)}
    async with fake_server(answers(top)) as (url, seen):
        judge = OpenAIComparator(url + "/v1", "judge", nonce_key=KEY, api_key="sk-secret")
        try:
            assert await judge.compare([COMPARISON, COMPARISON]) == pytest.approx([0.75, 0.75])
            assert await judge.check_health()
        finally:
            await judge.aclose()
    method, path, headers, body = seen.requests[0]
    assert (method, path) == ("POST", "/v1/completions")
    assert headers["authorization"] == "Bearer sk-secret"
    assert body["model"] == "judge" and body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] == 20 and "logprob_token_ids" not in body
    assert body["prompt"].endswith("Verdict:") and "<<<TRACE A" in body["prompt"]
    assert judge.stats.by_top == 2 and judge.stats.prompt_tokens == 200
    assert "sk-secret" not in repr(judge)


async def test_chat_endpoint_sends_the_message():
    def handler(method, path, body):
        entry = [{"token": "A", "logprob": math.log(0.2)}, {"token": "B", "logprob": -9.0},
                 {"token": "Hello", "logprob": -0.5}]
        return 200, {"choices": [{"logprobs": {"content": [{"token": "Hello", "logprob": -0.5,
                                                            "top_logprobs": entry}]}}]}

    async with fake_server(handler) as (url, seen):
        judge = OpenAIComparator(url, "judge", endpoint="chat", nonce_key=KEY)
        try:
            [p] = await judge.compare([COMPARISON])
        finally:
            await judge.aclose()
    assert p == pytest.approx(1 / (1 + math.exp(-9.0 - math.log(0.2))))
    body = seen.bodies[0]
    assert seen.requests[0][1] == "/v1/chat/completions"
    assert body["messages"][0]["role"] == "user"
    assert body["messages"][0]["content"].endswith("Answer with a single letter.")
    assert body["logprobs"] is True and body["top_logprobs"] == 20


async def test_token_ids_and_verdict_ids_with_a_tokenizer(tiny_model, tiny_tokenizer):
    def handler(method, path, body):
        a, b = body["logprob_token_ids"]
        return 200, completion({f"token_id:{a}": -1.0, f"token_id:{b}": -2.0,
                                "token_id:5": -0.1},
                               {"prompt_tokens": 10, "prompt_tokens_details":
                                {"cached_tokens": 4}})

    async with fake_server(handler) as (url, seen):
        judge = OpenAIComparator(url, str(tiny_model), nonce_key=KEY)  # a local directory
        try:
            [p] = await judge.compare([COMPARISON])
        finally:
            await judge.aclose()
    body = seen.bodies[0]
    assert p == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert body["return_tokens_as_token_ids"] is True and body["logprobs"] == 2
    [rendered] = judge.render([COMPARISON])
    assert judge.verdict_ids is not None and rendered.token_ids is not None  # a tokenizer
    assert body["logprob_token_ids"] == list(judge.verdict_ids)
    assert body["prompt"] == list(rendered.token_ids)
    assert (judge.stats.by_id, judge.stats.prompt_tokens, judge.stats.cached_prompt_tokens) == (
        1, 10, 4)


async def test_retries_pass_a_passing_failure():
    calls = []

    def handler(method, path, body):
        calls.append(path)
        if len(calls) <= 2:
            return 503, {"error": "loading"}
        return 200, completion({" A": -1.0, " B": -1.0})

    async with fake_server(handler) as (url, _):
        judge = OpenAIComparator(url, "judge", retries=2, backoff_s=0.5)
        judge._sleep = waits = Waits()
        try:
            assert await judge.compare([COMPARISON]) == [0.5]
        finally:
            await judge.aclose()
    assert len(calls) == 3 and judge.stats.retries == 2 and judge.stats.calls == 3
    # exponential backoff, full jitter: the k-th wait is within [0, backoff_s * 2**(k-1)]
    assert len(waits) == 2 and 0 <= waits[0] <= 0.5 and 0 <= waits[1] <= 1.0


class Waits(list):
    """Stands in for ``asyncio.sleep`` between retries: records the wait, does not sleep."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def answering(*statuses: tuple[int, dict[str, str]]):
    """A mock transport answering these statuses (with these headers) in turn, then 200."""
    answers = iter(statuses)

    def handle(request: httpx.Request) -> httpx.Response:
        status, headers = next(answers, (200, {}))
        if status != 200:
            return httpx.Response(status, headers=headers, json={"error": "busy"})
        return httpx.Response(200, json=completion({" A": -1.0, " B": -1.0}))

    return httpx.MockTransport(handle)


async def test_retry_after_is_honoured_in_seconds_or_as_an_http_date_up_to_a_bound():
    soon = email.utils.formatdate(time.time() + 4, usegmt=True)
    transport = answering((429, {"Retry-After": "1.5"}), (503, {"Retry-After": soon}),
                          (503, {"Retry-After": "3600"}), (502, {"Retry-After": "soon"}))
    judge = OpenAIComparator("http://judge", "judge", retries=4, backoff_s=0.01,
                             transport=transport)
    judge._sleep = waits = Waits()
    try:
        assert await judge.compare([COMPARISON]) == [0.5]
    finally:
        await judge.aclose()
    assert (judge.stats.calls, judge.stats.retries) == (5, 4)
    assert waits[0] == 1.5
    assert 2.0 <= waits[1] <= 4.0  # the date has whole seconds: 3 to 4 s from now
    assert waits[2] == MAX_BACKOFF_S
    assert 0 <= waits[3] <= 0.08  # an unreadable Retry-After: the backoff


async def test_retries_are_bounded_and_the_last_failure_is_a_judge_error():
    transport = answering(*[(503, {"Retry-After": "1"})] * 3)
    judge = OpenAIComparator("http://judge", "judge", retries=2, transport=transport)
    judge._sleep = waits = Waits()
    try:
        with pytest.raises(JudgeError, match="HTTP 503.*after 3 tries"):
            await judge.compare([COMPARISON])
    finally:
        await judge.aclose()
    assert (judge.stats.calls, judge.stats.retries, waits) == (3, 2, [1.0, 1.0])


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_are_not_retried(status):
    calls = []

    def handler(method, path, body):
        calls.append(path)
        return status, {"error": {"message": "no such model"}}

    async with fake_server(handler) as (url, _):
        judge = OpenAIComparator(url, "judge", retries=3, api_key="sk-secret")
        judge._sleep = Waits()
        try:
            with pytest.raises(JudgeError, match=f"HTTP {status}") as caught:
                await judge.compare([COMPARISON])
        finally:
            await judge.aclose()
    assert len(calls) == 1 and "sk-secret" not in str(caught.value)


MALFORMED = [
    "this is not JSON",
    {"choices": []},
    {"choices": [{"text": "A"}]},
    {"choices": [{"logprobs": {"top_logprobs": [[" A", -1.0]]}}]},
    {"choices": [{"logprobs": {"top_logprobs": [{" A": "very likely"}]}}]},
    [1, 2, 3],
]


@pytest.mark.parametrize("garbage", MALFORMED)
async def test_malformed_responses_are_judge_errors_after_bounded_retries(garbage):
    async with fake_server(lambda m, p, b: (200, garbage)) as (url, seen):
        judge = OpenAIComparator(url, "judge", malformed_retries=2)
        try:
            with pytest.raises(FailedComparisons, match="malformed|not JSON") as caught:
                await judge.compare([COMPARISON])
        finally:
            await judge.aclose()
    assert len(seen.requests) == 3 and judge.stats.retries == 0  # asked again, not HTTP-retried
    assert judge.stats.malformed_retries == 2 and judge.stats.calls == 3
    assert caught.value.answers.requests == [3]


async def test_a_malformed_answer_fails_its_comparison_only_and_is_asked_again():
    asked: dict[str, int] = {}

    def handler(method, path, body):
        n = asked[body["prompt"]] = asked.get(body["prompt"], 0) + 1
        if "bad" in body["prompt"] and n <= 2:  # malformed twice, then a verdict
            return 200, {"choices": [{}]}
        if "never" in body["prompt"]:
            return 200, "not JSON"
        return 200, completion({" A": -1.0, " B": -2.0})

    other = Comparison("2 + 2?", "4", "5", None, "r1")
    bad = Comparison("2 + 2?", "bad 4", "5", None, "r1")
    never = Comparison("2 + 2?", "never 4", "5", None, "r1")
    async with fake_server(handler) as (url, seen):
        judge = OpenAIComparator(url, "judge", malformed_retries=2)
        try:
            answers = await judge.compare_with_hits([other, bad])
            assert answers.requests == [1, 3] and len(seen.requests) == 4
            with pytest.raises(FailedComparisons) as caught:
                await judge.compare_with_hits([never, other])
        finally:
            await judge.aclose()
    assert answers.p == pytest.approx([1 / (1 + math.exp(-1))] * 2)
    failed = caught.value
    assert isinstance(failed.errors[0], JudgeError) and failed.errors[1] is None
    assert failed.answers.p[1] == pytest.approx(1 / (1 + math.exp(-1)))
    assert failed.answers.requests == [3, 1]


async def test_a_hung_judge_fails_a_batch_in_a_time_independent_of_its_size():
    release = asyncio.Event()

    async def hung(method, path, body):
        await release.wait()
        return 200, completion({" A": -1.0})

    async with fake_server(hung) as (url, seen):
        judge = OpenAIComparator(url, "judge", timeout_s=0.2, retries=2, max_concurrency=4)
        judge._sleep = Waits()
        try:
            with pytest.raises(FailedComparisons, match="hung") as caught:
                await asyncio.wait_for(judge.compare([COMPARISON] * 40), 20)  # a hang guard
        finally:
            await judge.aclose()
            release.set()  # the server stops once its handlers return
    # One wave of max_concurrency requests was sent; the rest failed without waiting.
    assert caught.value.answers.requests_each().count(0) >= 40 - 2 * 4
    assert all(e is not None for e in caught.value.errors)


async def test_a_server_down_is_a_judge_error_and_unhealthy():
    judge = OpenAIComparator(f"http://127.0.0.1:{free_port()}", "judge", retries=1)
    judge._sleep = Waits()
    try:
        with pytest.raises(JudgeError, match="ConnectError.*after 2 tries"):
            await judge.compare([COMPARISON])
        await judge.start()  # the client starts; the server is still down
        assert not await judge.check_health()
    finally:
        await judge.aclose()


async def test_a_timeout_is_a_judge_error():
    async def slow(method, path, body):
        await asyncio.sleep(2)
        return 200, completion({" A": -1.0})

    async with fake_server(slow) as (url, _):
        judge = OpenAIComparator(url, "judge", timeout_s=0.2, retries=0)
        try:
            with pytest.raises(JudgeError, match="Timeout"):
                await judge.compare([COMPARISON])
        finally:
            await judge.aclose()


async def test_concurrency_is_bounded():
    in_flight = peak = 0

    async def handler(method, path, body):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return 200, completion({" A": -1.0, " B": -2.0})

    async with fake_server(handler) as (url, _):
        judge = OpenAIComparator(url, "judge", max_concurrency=3)
        try:
            await judge.compare([COMPARISON] * 12)
        finally:
            await judge.aclose()
    assert peak == 3


def dead(group_id: str, texts: list[str]) -> Group:
    return Group(group_id=group_id, prompt="2 + 2?", prompt_id=group_id,
                 traces=tuple(Trace(t, 1.0) for t in texts))


async def rank_through_the_service(base_url: str):
    settings = ServerSettings(store="memory", comparator="openai", judge_base_url=base_url,
                              judge_model="judge", judge_retries=0, judge_timeout_s=2)
    service = build_service(settings)
    try:
        return await service.rank("r1", [
            dead("g1", ["2 + 2 = 4", "2 + 2 = 5", "4"]),
            Group(group_id="g2", prompt="2 + 2?", traces=(Trace("4", 1.0), Trace("5", 0.0))),
        ])
    finally:
        await service.aclose()


async def test_the_service_fails_only_the_judged_group_when_the_server_is_down():
    dead_result, live_result = await rank_through_the_service(
        f"http://127.0.0.1:{free_port()}")
    assert dead_result.status == "judge_failed" and "ConnectError" in dead_result.error
    assert dead_result.advantages == (0.0, 0.0, 0.0)
    assert live_result.status == "ok" and not live_result.routed


@pytest.mark.parametrize("garbage", ["<html>bad gateway</html>", {"choices": [{}]}])
async def test_the_service_fails_the_group_on_garbage(garbage):
    async with fake_server(lambda m, p, b: (200, garbage)) as (url, _):
        dead_result, live_result = await rank_through_the_service(url)
    assert dead_result.status == "judge_failed" and "malformed" in dead_result.error
    assert live_result.status == "ok"


async def test_the_service_ranks_with_a_working_server():
    async with fake_server(answers({" A": -1.0, " B": -2.0})) as (url, seen):
        dead_result, _ = await rank_through_the_service(url)
    assert dead_result.status == "ok" and dead_result.routed
    assert dead_result.judge_requests == dead_result.comparisons == len(seen.bodies) > 0


async def test_a_run_can_have_its_own_template():
    async with fake_server(answers({" A": -1.0, " B": -2.0})) as (url, seen):
        judge = OpenAIComparator(url, "judge", nonce_key=KEY)
        judge.set_run_template("terse", "Q: {problem}\n1: {first}\n2: {second}\nBetter?")
        with pytest.raises(ValueError, match="missing slot"):
            judge.set_run_template("broken", "{problem} {first}")
        try:
            await judge.compare([COMPARISON, Comparison("2 + 2?", "4", "5", None, "terse")])
            judge.set_run_template("terse", None)
            await judge.compare([Comparison("2 + 2?", "4", "5", None, "terse")])
        finally:
            await judge.aclose()
    prompts = sorted(body["prompt"] for body in seen.bodies)
    assert prompts[0].startswith("Q: <<<PROBLEM") and prompts[0].endswith("Better?\n\nVerdict:")
    assert all("expert judge" in p for p in prompts[1:])


async def test_verdicts_missing_from_the_top_k_are_unread_counted_and_tie_the_group():
    async with fake_server(answers({" the": -0.1, " so": -3.0})) as (url, seen):
        service = build_service(ServerSettings(
            store="memory", comparator="openai", judge_base_url=url, judge_model="judge",
            judge_retries=0, judge_timeout_s=2))
        try:  # through the verdict cache and the scheduler, as a server judges
            (result,) = await service.rank("r1", [dead("g1", ["2 + 2 = 4", "2 + 2 = 5", "4"])])
            again = await service.rank("r1", [dead("g2", ["2 + 2 = 4", "2 + 2 = 5", "4"])])
            stats = await service.run_stats("r1")
        finally:
            await service.aclose()
    assert result.status == "ok" and result.tied and result.advantages == (0.0, 0.0, 0.0)
    assert again[0].tied  # cached verdicts are still unread ones
    assert stats["unread_verdicts"] == result.comparisons + again[0].comparisons > 0
    # through the server's verdict cache: what it answered never reached the model server
    assert stats["judge_requests"] == len(seen.bodies) == stats["comparisons"] - stats[
        "cached_comparisons"]
    assert stats["tied"] == 2


async def test_a_top_1_verdict_is_read_with_its_bound_not_as_a_tie():
    async with fake_server(answers({" A": -1e-4})) as (url, _):
        judge = OpenAIComparator(url, "judge", nonce_key=KEY)
        try:
            [p] = await judge.compare([COMPARISON])
        finally:
            await judge.aclose()
    assert p == pytest.approx(math.exp(-1e-4)) and p > 0.9999
    assert (judge.stats.partial, judge.stats.undecided) == (1, 0)
