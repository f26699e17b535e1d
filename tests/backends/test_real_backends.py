"""Real engines on the tiny model: vLLM in-process, vLLM's OpenAI-compatible server, and
transformers, each giving the verdicts of the model's own logits for the same prompt."""

from __future__ import annotations

import json

import pytest

from judge_server.cli import main
from judge_server.comparators.openai import OpenAIComparator
from judge_server.comparators.transformers import TransformersComparator
from judge_server.errors import JudgeError

from .conftest import FIXED_NONCE_KEY, run_engine_helper
from .data import round_comparisons

TOLERANCE = 1e-4  # float32 on the CPU: different kernels, same numbers to ~1e-6


def assert_own_verdicts(judge, answers, reference_p, comparisons):
    inputs = judge.render(comparisons)
    expected = [reference_p(x.token_ids, judge.verdict_ids) for x in inputs]
    assert answers == pytest.approx(expected, abs=TOLERANCE)
    assert max(answers) - min(answers) > 0.01, "the tiny model should not be indifferent"
    return expected


def test_vllm_in_process(tiny_model, reference_p, tmp_path):
    comparisons = round_comparisons()
    job = {
        "comparisons": [[c.prompt, c.first, c.second, c.reference, c.run_id]
                        for c in comparisons],
        "batches": [[0, 1, 2, 3], [4, 5, 6]],
        "nonce_key": FIXED_NONCE_KEY.hex(),
        "overlong": True,
    }
    out = run_engine_helper(tiny_model, job, tmp_path)
    assert out["healthy_before"] is False and out["healthy"] is True  # started by the check
    assert out["format"] == "chat"
    expected = [reference_p(ids, out["verdict_ids"]) for ids in out["token_ids"]]
    assert out["p"] == pytest.approx(expected, abs=TOLERANCE)
    assert max(out["p"]) - min(out["p"]) > 0.01
    stats = out["stats"]
    assert stats["by_id"] == stats["comparisons"] == len(comparisons)
    assert stats["prompt_tokens"] == sum(map(len, out["token_ids"]))
    # the round shares its instructions and problem: the prefix cache served some of it
    assert stats["cached_prompt_tokens"] > 0
    # a prompt longer than the model's context fails its batch as a JudgeError, and the
    # engine goes on judging
    assert out["overlong_error"] == "JudgeError"
    assert out["healthy_after_error"] is True
    assert out["p_after_error"] == pytest.approx(out["p"][0], abs=1e-6)


@pytest.mark.parametrize("prompt_format", ["chat", "plain"])
async def test_openai_completions_on_a_vllm_server(vllm_server, tiny_model, reference_p,
                                                   prompt_format):
    comparisons = round_comparisons()
    judge = OpenAIComparator(vllm_server, str(tiny_model), prompt_format=prompt_format,
                             nonce_key=FIXED_NONCE_KEY)
    try:
        answers = await judge.compare(comparisons)
        again = await judge.compare(comparisons)
        assert await judge.check_health()
    finally:
        await judge.aclose()
    assert judge.prompt is not None and judge.prompt.format == prompt_format
    assert_own_verdicts(judge, answers, reference_p, comparisons)
    assert again == pytest.approx(answers, abs=1e-6)
    assert judge.stats.by_id == 2 * len(comparisons)
    assert judge.stats.cached_prompt_tokens > 0  # vLLM reports its prefix-cache hits


async def test_openai_chat_endpoint_on_a_vllm_server(vllm_server, tiny_model, reference_p):
    comparisons = round_comparisons()[:3]
    judge = OpenAIComparator(vllm_server, str(tiny_model), endpoint="chat",
                             nonce_key=FIXED_NONCE_KEY)
    try:
        answers = await judge.compare(comparisons)
    finally:
        await judge.aclose()
    # the server applies the same chat template to the same message
    assert_own_verdicts(judge, answers, reference_p, comparisons)


async def test_openai_top_k_by_text_on_a_vllm_server(vllm_server, tiny_model):
    judge = OpenAIComparator(vllm_server, str(tiny_model), tokenizer=False, top_logprobs=5)
    try:
        answers = await judge.compare(round_comparisons())
    finally:
        await judge.aclose()
    assert all(0.0 <= p <= 1.0 for p in answers)
    stats = judge.stats
    assert stats.by_top == len(answers) and stats.by_id == 0
    # a random model rarely lists a verdict in its top 5: no preference, counted
    assert answers.count(0.5) >= stats.undecided > 0


async def test_transformers_backend_agrees_with_the_model_and_with_vllm(
        vllm_server, tiny_model, reference_p):
    comparisons = round_comparisons()
    local = TransformersComparator(str(tiny_model), device="cpu", batch_size=3,
                                   nonce_key=FIXED_NONCE_KEY)
    served = OpenAIComparator(vllm_server, str(tiny_model), nonce_key=FIXED_NONCE_KEY)
    try:
        mine = await local.compare(comparisons)  # batches of 3, left-padded
        theirs = await served.compare(comparisons)
    finally:
        await local.aclose()
        await served.aclose()
    assert_own_verdicts(local, mine, reference_p, comparisons)
    assert mine == pytest.approx(theirs, abs=TOLERANCE)


async def test_transformers_backend_that_cannot_load_is_a_judge_error(tmp_path):
    judge = TransformersComparator(str(tmp_path / "no-such-model"))
    with pytest.raises(JudgeError, match="cannot start"):
        await judge.compare(round_comparisons()[:1])
    assert not await judge.check_health()
    await judge.aclose()


def test_bench_judge_on_a_served_model(vllm_server, tiny_model, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as f:
        for c in round_comparisons()[:4]:
            f.write(json.dumps({"prompt": c.prompt, "trace_a": c.first, "trace_b": c.second,
                                "better": "a", "reference": c.reference}) + "\n")
    code = main(["bench", "judge", "--pairs", str(pairs), "--json", "--comparator", "openai",
                 "--judge-base-url", vllm_server, "--judge-model", str(tiny_model)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_pairs"] == 4 and result["n_comparisons"] == 8
    assert result["comparator"] == "openai" and result["comparisons_per_s"] > 0
    assert result["judge_stats"]["by_id"] == 8
    assert 0.0 <= result["position_consistency"] <= 1.0


def test_bench_backend_through_the_server(vllm_server, tiny_model, capsys):
    from judge_server.bench.judge import DEFAULT_GSM8K_PATH

    if not DEFAULT_GSM8K_PATH.is_file():
        pytest.skip("GSM8K model solutions not found")
    code = main(["bench", "backend", "--json", "--groups", "4", "--concurrency", "2",
                 "--comparator", "openai", "--judge-base-url", vllm_server,
                 "--judge-model", str(tiny_model)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    server = result["server"]
    assert server["groups"] == 4 and server["failed_groups"] == 0 and server["comparisons"] > 0
    assert result["overhead_ratio"] > 0 and result["one_batch"]["comparisons_per_s"] > 0
    cache = result["prefix_cache"]
    assert 0 < cache["own_tokens_lower_bound"] < cache["prompt_tokens"]
    assert cache["uncached_tokens"] >= cache["own_tokens_lower_bound"] * 0.9


async def test_a_salted_run_shares_no_prefix_cache_on_a_vllm_server(vllm_server, tiny_model):
    """isolate_prefix_cache: the same prompt, salted with another run's salt, finds nothing in
    vLLM's prefix cache; salted again with the same salt, it does."""
    import dataclasses

    (comparison,) = round_comparisons()[:1]
    judge = OpenAIComparator(vllm_server, str(tiny_model), nonce_key=FIXED_NONCE_KEY)

    async def cached(c) -> int:
        before = judge.stats.cached_prompt_tokens
        await judge.compare([c])
        return judge.stats.cached_prompt_tokens - before

    try:
        salted = dataclasses.replace(comparison, cache_salt="0123456789abcdef")
        await cached(comparison)
        assert await cached(comparison) > 0  # unsalted: the second call hits the cache
        assert await cached(salted) == 0  # the salted run sees none of it
        assert await cached(salted) > 0  # but its own
    finally:
        await judge.aclose()
