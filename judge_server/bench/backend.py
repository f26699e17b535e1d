"""An LLM judge behind the judge server: judged comparisons/s, server overhead, prefix cache.

:func:`run` builds the LLM judge of the settings (by default vLLM in-process on the tiny
random model of :mod:`.tiny_model`, built in a temporary directory), starts it, and measures
three phases on the same engine, emptying its prefix cache before each where the backend can
(in-process vLLM; a vLLM server started with ``VLLM_SERVER_DEV_MODE=1``; elsewhere the later
phases find the prompts cached, and ``prefix_cache.cache_reset_between_phases`` is false):

``server``
    a :class:`~judge_server.server.JudgeServer` in this process (memory store, the judge with
    no verdict cache) driven over HTTP with dead GSM8K groups (the four model solutions of a
    problem, all rewarded 1, the reference answer shown), one group per ``POST /v1/rank``,
    ``concurrency`` groups in flight. Every comparison the server sends the judge is
    recorded, batch by batch;
``direct``
    the same comparisons, in the same batches, one batch after the other, straight to the
    judge (no transport, no tournament, no fit): ``overhead_ratio`` is the server's
    comparisons/s over this one's (1.0: the server costs nothing; above 1: the server kept
    several batches in flight where the replay has one);
``one_batch``
    the same comparisons in a single call: what the engine does with every prompt at once.

Prefix cache (from the server phase; backends that report cached tokens: vLLM in-process,
SGLang, OpenAI-compatible servers that fill ``usage.prompt_tokens_details``):
``prompt_tokens`` per comparison, ``uncached_tokens`` per comparison (prompt minus cache
hits), and the lower bound ``own_tokens``: the tokens from the second trace's block to the
end of the prompt, which no cache can hold when every comparison brings a new second trace.
vLLM caches whole blocks (``block_size`` tokens; 128 on its CPU build by default, 32 here:
the smallest its CPU attention takes), so up to a block per prompt is recomputed even at best.

Run it as ``arena-judge bench backend``; figures on the tiny model and a CPU are throughput,
not judge quality.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from judge_server.comparators.base import Comparator, Comparison

from .judge import DEFAULT_GSM8K_PATH, gsm8k_problems, remove_final_answer_line
from .judge import strip_calculator_annotations as strip

TINY = "tiny"
TINY_ENGINE_ARGS = {
    "dtype": "float32",
    "max_model_len": 4096,
    "enforce_eager": True,
    "gpu_memory_utilization": 0.1,
    "kv_cache_memory_bytes": 1 << 30,
    "block_size": 32,  # the smallest vLLM's CPU attention takes (a multiple of 32)
}


def gsm8k_groups(
    n: int, *, path: str | Path = DEFAULT_GSM8K_PATH, group_size: int = 4
) -> list[dict]:
    """``n`` dead groups (JSON bodies of ``/v1/rank``) from GSM8K's model solutions."""
    groups: list[dict] = []
    for k, problem in enumerate(gsm8k_problems(path)):
        if len(groups) >= n:
            break
        texts = [remove_final_answer_line(strip(s["text"])) for s in problem["solutions"]]
        texts = texts[:group_size]
        if len(texts) < 2 or len(set(texts)) < len(texts):
            continue
        groups.append({
            "group_id": f"gsm8k-{k}",
            "prompt_id": f"gsm8k-{k}",
            "prompt": problem["question"],
            "reference": str(problem["reference_answer"]),
            "texts": texts,
            "rewards": [1.0] * len(texts),
        })
    if len(groups) < n:
        raise ValueError(f"{path} has only {len(groups)} usable problems, not {n}")
    return groups


class RecordingComparator(Comparator):
    """Passes batches to ``inner`` and keeps them; closing it leaves ``inner`` open."""

    def __init__(self, inner: Comparator) -> None:
        self.inner = inner
        self.name = inner.name
        self.batch_limit = inner.batch_limit
        self.batches: list[list[Comparison]] = []

    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        self.batches.append(list(comparisons))
        return await self.inner.compare(comparisons)

    async def check_health(self) -> bool:
        return await self.inner.check_health()

    async def aclose(self) -> None:
        return None


async def _reset_cache(judge: Any) -> bool:
    reset = getattr(judge, "reset_prefix_cache", None)
    return bool(reset is not None and await reset())


def _delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, (int, float))}


async def _drive(url: str, groups: list[dict], run_id: str, concurrency: int,
                 progress: bool) -> tuple[float, int]:
    import httpx
    from tqdm import tqdm

    bodies = iter(groups)
    failed = 0
    bar = tqdm(total=len(groups), desc="server", unit="group", file=sys.stderr,
               disable=not progress)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failed
        for group in bodies:
            response = await client.post("/v1/rank", json={"run_id": run_id, "group": group})
            failed += response.status_code != 200 or response.json()["status"] != "ok"
            bar.update()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False,
                                 limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    bar.close()
    return wall, failed


async def _measure(settings: Any, groups: list[dict], concurrency: int, progress: bool) -> dict:
    from judge_server.app import build_model_comparator, build_service
    from judge_server.server import JudgeServer

    judge = build_model_comparator(settings)
    judge.check_installed()
    try:
        await judge.start()
        await judge.compare([Comparison("warm-up", "1 + 1 = 2", "1 + 1 = 3", "2")])
        recorder = RecordingComparator(judge)
        service = build_service(settings, comparator=recorder)

        # -- through the server
        resettable = await _reset_cache(judge)
        before = judge.stats.snapshot()
        server = JudgeServer(service, host="127.0.0.1")
        await server.start()
        try:
            wall, failed = await _drive(server.http_url, groups, "bench-backend", concurrency,
                                        progress)
        finally:
            await server.stop(grace=5.0)
        served = _delta(judge.stats.snapshot(), before)
        batches = recorder.batches
        comparisons = [c for batch in batches for c in batch]
        n = len(comparisons)
        result: dict[str, Any] = {
            "server": {
                "groups": len(groups),
                "failed_groups": failed,
                "comparisons": n,
                "batches": len(batches),
                "mean_batch": n / max(1, len(batches)),
                "wall_s": wall,
                "comparisons_per_s": n / wall,
                "groups_per_s": len(groups) / wall,
            }
        }

        # -- the same batches, straight to the judge
        await _reset_cache(judge)
        started = time.perf_counter()
        for batch in batches:
            await judge.compare(batch)
        direct = time.perf_counter() - started
        result["direct"] = {"wall_s": direct, "comparisons_per_s": n / direct}

        # -- everything at once
        await _reset_cache(judge)
        started = time.perf_counter()
        await judge.compare(comparisons)
        once = time.perf_counter() - started
        result["one_batch"] = {"wall_s": once, "comparisons_per_s": n / once}
        result["overhead_ratio"] = result["server"]["comparisons_per_s"] / (n / direct)

        # -- prefix cache, from the server phase
        inputs = judge.render(comparisons)
        assert judge.prompt is not None  # made when the judge started
        own = [judge.prompt.own_tokens(x) for x in inputs]
        prompt_tokens = sum(len(x.token_ids or ()) for x in inputs) / n
        reported = served.get("reported_tokens", 0)
        cache: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "own_tokens_lower_bound": sum(own) / n,
            "cache_reset_between_phases": resettable,
        }
        if reported and served.get("cached_prompt_tokens") is not None:
            uncached = (served["prompt_tokens"] - served["cached_prompt_tokens"]) / reported
            cache["uncached_tokens"] = uncached
            cache["uncached_over_lower_bound"] = uncached / cache["own_tokens_lower_bound"]
            cache["cached_fraction"] = served["cached_prompt_tokens"] / served["prompt_tokens"]
        engine = getattr(judge, "engine", None)
        block = getattr(getattr(getattr(engine, "vllm_config", None), "cache_config", None),
                        "block_size", None)
        if block:
            cache["block_size"] = block
        result["prefix_cache"] = cache
        result["judge_stats"] = served
        return result
    finally:
        await judge.aclose()


def tiny_judge(settings: Any, stack: contextlib.ExitStack) -> tuple[Any, str]:
    """``settings`` with the tiny model built (in a temporary directory that ``stack``
    removes) when their judge model is :data:`TINY`, and :data:`TINY_ENGINE_ARGS` unless they
    give engine arguments; and the model's name for reports."""
    if settings.judge_model != TINY:
        return settings, settings.judge_model
    from . import tiny_model

    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="tiny-judge-"))
    update: dict[str, Any] = {"judge_model": str(tiny_model.build(directory))}
    if not settings.judge_engine_args:
        update["judge_engine_args"] = TINY_ENGINE_ARGS
    return settings.model_copy(update=update), "tiny (random, 2 layers, hidden 128)"


def run(
    *,
    settings: Any = None,
    groups: int = 64,
    concurrency: int = 16,
    data: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Measure the LLM judge of ``settings`` (default: vLLM on the tiny model; see the module
    docstring). ``settings`` is a :class:`~judge_server.settings.ServerSettings`."""
    from judge_server.settings import ServerSettings

    if groups < 1 or concurrency < 1:
        raise ValueError("groups and concurrency must be at least 1")
    settings = settings or ServerSettings(comparator="vllm", judge_model=TINY)
    overrides: dict[str, Any] = {"store": "memory", "judge_cache_entries": 0,
                                 "log_level": "warning"}
    bodies = gsm8k_groups(groups, path=data or DEFAULT_GSM8K_PATH)
    with contextlib.ExitStack() as stack:
        settings, model = tiny_judge(settings.model_copy(update=overrides), stack)
        figures = asyncio.run(_measure(settings, bodies, concurrency, progress))
    return {
        **figures,
        "comparator": settings.comparator,
        "model": model,
        "groups": groups,
        "group_size": len(bodies[0]["texts"]),
        "design": settings.design,
        "order": settings.order,
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
    }


def format_table(result: dict) -> str:
    s, d, o, c = result["server"], result["direct"], result["one_batch"], result["prefix_cache"]
    lines = [
        f"{result['comparator']} judge, model {result['model']}; {result['groups']} dead GSM8K "
        f"groups of {result['group_size']} ({result['design']}, order {result['order']}), "
        f"{result['concurrency']} in flight; "
        f"{result['cpus']} CPUs",
        "",
        f"{'phase':<36}{'comparisons/s':>14}{'wall s':>9}",
        f"{'server (HTTP, tournaments, fits)':<36}{s['comparisons_per_s']:>14.1f}"
        f"{s['wall_s']:>9.1f}",
        f"{'direct (same batches, no server)':<36}{d['comparisons_per_s']:>14.1f}"
        f"{d['wall_s']:>9.1f}",
        f"{'one batch (engine, all at once)':<36}{o['comparisons_per_s']:>14.1f}"
        f"{o['wall_s']:>9.1f}",
        "",
        f"server / direct: {result['overhead_ratio']:.2f}; {s['comparisons']} comparisons in "
        f"{s['batches']} batches (mean {s['mean_batch']:.1f}); {s['failed_groups']} groups "
        "failed",
        f"prompt tokens per comparison {c['prompt_tokens']:.0f}; lower bound of uncached "
        f"(second trace onwards) {c['own_tokens_lower_bound']:.0f}",
    ]
    if "uncached_tokens" in c:
        lines.append(
            f"uncached per comparison {c['uncached_tokens']:.0f} "
            f"({c['uncached_over_lower_bound']:.2f} x the bound; "
            f"{100 * c['cached_fraction']:.0f}% of prompt tokens from the cache"
            + (f"; block size {c['block_size']})" if "block_size" in c else ")")
        )
    return "\n".join(lines)


__all__ = ["RecordingComparator", "format_table", "gsm8k_groups", "run", "tiny_judge"]
