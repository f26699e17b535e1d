"""The SGLang judge against fakes: SGLang needs CUDA, so its shapes are checked, not run.

The fake ``/generate`` speaks SGLang's documented native API (``GenerateReqInput`` in,
``{"text", "meta_info"}`` out): ``meta_info.output_token_ids_logprobs[0]`` and
``meta_info.output_top_logprobs[0]`` are lists of ``[logprob, token_id, text-or-null]``, one
list per output position; ``prompt_tokens`` and ``cached_tokens`` count the prompt. The fake
engine stands in for ``sglang.Engine.async_generate`` (batched lists in, a list of the same
dicts out).
"""

from __future__ import annotations

import math

import pytest

from judge_server.bench.fake_judge import fake_server
from judge_server.comparators.base import Comparison
from judge_server.comparators.sglang import SGLangComparator, SGLangEngineComparator
from judge_server.errors import JudgeError

from ..ports import free_port

KEY = b"0123456789abcdef"
COMPARISONS = [Comparison("2 + 2?", "2 + 2 = 4", "2 + 2 = 5", "4", "r1"),
               Comparison("2 + 2?", "2 + 2 = 5", "2 + 2 = 4", "4", "r1")]


def logprob_a(request: dict) -> float:
    """The fake model's log P(A): depends on the prompt, so answers can be told apart."""
    prompt = request.get("input_ids") or request.get("text")
    assert prompt is not None
    return -1.0 - (len(prompt) % 7) / 10


def generate_answer(request: dict) -> dict:
    lp_a, lp_b = logprob_a(request), -2.0
    meta = {"prompt_tokens": len(request.get("input_ids") or "x"), "cached_tokens": 3,
            "completion_tokens": 1, "finish_reason": {"type": "length", "length": 1},
            "output_token_logprobs": [[-0.5, 42, None]]}
    if "token_ids_logprob" in request:
        a, b = request["token_ids_logprob"]
        meta["output_token_ids_logprobs"] = [[[lp_a, a, None], [lp_b, b, None]]]
    if request.get("top_logprobs_num"):
        meta["output_top_logprobs"] = [[[-0.5, 42, " the"], [lp_a, 43, " A"],
                                        [lp_b, 44, " B"]]]
    return {"text": " the", "meta_info": meta}


def handler(method: str, path: str, body):
    if method == "GET":
        return 200, ""  # /health: an empty 200
    return 200, generate_answer(body)


def expected(request: dict) -> float:
    return 1 / (1 + math.exp(-2.0 - logprob_a(request)))


async def test_generate_by_token_ids(tiny_model):
    async with fake_server(handler) as (url, seen):
        judge = SGLangComparator(url, model=str(tiny_model), nonce_key=KEY)
        try:
            answers = await judge.compare(COMPARISONS)
            assert await judge.check_health()
        finally:
            await judge.aclose()
    posts = [(path, body) for method, path, _, body in seen.requests if method == "POST"]
    assert {path for path, _ in posts} == {"/generate"}
    by_prompt = {tuple(body["input_ids"]): body for _, body in posts}
    inputs = judge.render(COMPARISONS)
    assert judge.verdict_ids is not None  # a tokenizer
    for x, p in zip(inputs, answers):
        assert x.token_ids is not None
        body = by_prompt[x.token_ids]
        assert p == pytest.approx(expected(body))
        assert body["sampling_params"] == {"max_new_tokens": 1, "temperature": 0.0}
        assert body["return_logprob"] is True and body["logprob_start_len"] == -1
        assert body["token_ids_logprob"] == list(judge.verdict_ids)
        assert "text" not in body and "top_logprobs_num" not in body
    assert judge.stats.by_id == 2 and judge.stats.cached_prompt_tokens == 6


async def test_generate_by_text_and_top_logprobs():
    async with fake_server(handler) as (url, seen):
        judge = SGLangComparator(url, nonce_key=KEY)  # no tokenizer: text, top-k by text
        try:
            answers = await judge.compare(COMPARISONS)
        finally:
            await judge.aclose()
    for body in seen.bodies:
        assert body["text"].endswith("Verdict:") and "input_ids" not in body
        assert body["top_logprobs_num"] == 20 and body["return_text_in_logprobs"] is True
        assert "token_ids_logprob" not in body
    assert sorted(answers) == pytest.approx(sorted(expected(b) for b in seen.bodies))
    assert judge.stats.by_top == 2


@pytest.mark.parametrize("garbage", [
    {"text": "A"},
    {"meta_info": {"output_token_ids_logprobs": []}},
    {"meta_info": {"output_token_ids_logprobs": [[[None, 1, None]]]}},
    "not json",
])
async def test_malformed_generate_answers_are_judge_errors(tiny_model, garbage):
    async with fake_server(lambda m, p, b: (200, garbage)) as (url, _):
        judge = SGLangComparator(url, model=str(tiny_model))
        try:
            with pytest.raises(JudgeError):
                await judge.compare(COMPARISONS)
        finally:
            await judge.aclose()


async def test_sglang_down_is_a_judge_error():
    judge = SGLangComparator(f"http://127.0.0.1:{free_port()}", retries=0)
    try:
        with pytest.raises(JudgeError, match="ConnectError"):
            await judge.compare(COMPARISONS)
    finally:
        await judge.aclose()


class FakeEngine:
    """``sglang.Engine`` as far as the judge uses it."""

    instances: list[FakeEngine] = []

    def __init__(self, model_path: str, **kwargs) -> None:
        self.model_path = model_path
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.shut = False
        FakeEngine.instances.append(self)

    async def async_generate(self, **request):
        self.calls.append(request)
        return [
            generate_answer({"input_ids": ids, "token_ids_logprob": wanted})
            for ids, wanted in zip(request["input_ids"], request["token_ids_logprob"])
        ]

    def shutdown(self) -> None:
        self.shut = True


async def test_in_process_engine_gets_one_batched_call(tiny_model):
    judge = SGLangEngineComparator(str(tiny_model), engine_args={"mem_fraction_static": 0.5},
                                   engine_factory=FakeEngine, nonce_key=KEY)
    try:
        answers = await judge.compare(COMPARISONS)
    finally:
        await judge.aclose()
    engine = FakeEngine.instances[-1]
    assert engine.model_path == str(tiny_model) and engine.shut
    assert engine.kwargs == {"mem_fraction_static": 0.5}
    [call] = engine.calls
    assert call["return_logprob"] is True and call["logprob_start_len"] == -1
    assert call["sampling_params"] == {"max_new_tokens": 1, "temperature": 0.0}
    inputs = judge.render(COMPARISONS)
    assert judge.verdict_ids is not None  # a tokenizer
    assert sorted(map(tuple, call["input_ids"])) == sorted(x.token_ids or () for x in inputs)
    assert call["token_ids_logprob"] == [list(judge.verdict_ids)] * 2
    for x, p in zip(inputs, answers):
        assert p == pytest.approx(expected({"input_ids": x.token_ids}))


async def test_in_process_engine_without_sglang_names_the_extra(tiny_model):
    pytest.importorskip("torch")
    try:
        import sglang  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("sglang is installed here")
    judge = SGLangEngineComparator(str(tiny_model))
    with pytest.raises(ImportError, match=r"reasoning-arena\[sglang\]"):
        judge.check_installed()
    with pytest.raises(JudgeError, match=r"reasoning-arena\[sglang\]"):
        await judge.compare(COMPARISONS)
