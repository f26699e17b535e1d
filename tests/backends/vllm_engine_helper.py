"""Runs the in-process vLLM judge in a process of its own (the engine spawns workers).

    python vllm_engine_helper.py JOB.json OUT.json

JOB: ``{"model", "comparisons": [[prompt, first, second, reference, run_id], ...],
"batches": [[index, ...], ...], "prompt_format", "nonce_key" (hex), "overlong": bool}``.
OUT: ``{"p": [...] per comparison, "token_ids": [...], "verdict_ids", "healthy_before",
"healthy", "stats", "overlong_error"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys


async def main(job: dict) -> dict:
    from judge_server.comparators.base import Comparison
    from judge_server.comparators.vllm import VLLMComparator

    judge = VLLMComparator(
        job["model"],
        engine_args={"dtype": "float32", "max_model_len": 2048, "enforce_eager": True,
                     "gpu_memory_utilization": 0.1, "block_size": 32},
        prompt_format=job.get("prompt_format", "auto"),
        nonce_key=bytes.fromhex(job["nonce_key"]),
    )
    comparisons = [Comparison(*c) for c in job["comparisons"]]
    out: dict = {"p": [None] * len(comparisons)}
    try:
        out["healthy_before"] = await judge.check_health()  # starts the engine
        await judge.start()
        out["healthy"] = await judge.check_health()
        for batch in job["batches"]:
            answers = await judge.compare([comparisons[i] for i in batch])
            for i, p in zip(batch, answers):
                out["p"][i] = p
        assert judge.prompt is not None and judge.verdict_ids is not None  # started
        out["token_ids"] = [list(x.token_ids or ()) for x in judge.render(comparisons)]
        out["verdict_ids"] = list(judge.verdict_ids)
        out["format"] = judge.prompt.format
        out["stats"] = judge.stats.snapshot()
        if job.get("overlong"):
            long = Comparison("p", "x " * 5000, "y", None)
            try:
                await judge.compare([long, comparisons[0]])
                out["overlong_error"] = None
            except Exception as exc:  # noqa: BLE001 - the type is what the test checks
                out["overlong_error"] = type(exc).__name__
            out["healthy_after_error"] = await judge.check_health()
            out["p_after_error"] = (await judge.compare([comparisons[0]]))[0]
    finally:
        await judge.aclose()
    return out


if __name__ == "__main__":
    job_path, out_path = sys.argv[1], sys.argv[2]
    with open(job_path) as f:
        job = json.load(f)
    result = asyncio.run(main(job))
    with open(out_path, "w") as f:
        json.dump(result, f)
