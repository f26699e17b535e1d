"""The transformers judge on a GPU: its verdicts against the CPU's, and its throughput.

Run on a machine with CUDA (not in CI): ``python scripts/gpu_transformers_check.py [OUT.json]``.
It builds random-weight models locally (``judge_server.bench.tiny_model``, no download): the
tiny test judge, to compare verdicts in float32 and bfloat16 with the CPU's, and a Llama of
about 250M parameters for comparisons per second at prompts of about 1,350 tokens.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NONCE_KEY = b"tests-nonce-key!"


def trace(rng: random.Random, steps: int) -> str:
    lines = []
    for _ in range(steps):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        lines.append(f"{a} * {b} = {a * b}, then we add {b} to get {a * b + b}.")
    return "\n".join(lines) + f"\nThe answer is {rng.randint(1, 999)}."


def comparisons(n: int, steps: int, seed: int = 0) -> list[Any]:
    from judge_server.comparators.base import Comparison

    rng = random.Random(seed)
    return [
        Comparison(f"Tom has {rng.randint(2, 50)} apples and buys {rng.randint(2, 50)} more. "
                   f"How many? (#{k // 8})", trace(rng, steps), trace(rng, steps), None,
                   f"run-{k % 3}")
        for k in range(n)
    ]


async def per_second(judge: Any, batch: list[Any], repeats: int = 3) -> float:
    """Comparisons per second, the best of ``repeats`` (after a warm-up)."""
    await judge.compare(batch[:8])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        await judge.compare(batch)
        best = min(best, time.perf_counter() - started)
    return round(len(batch) / best, 1)


async def main() -> dict[str, Any]:
    import torch

    from judge_server.bench import tiny_model
    from judge_server.comparators.transformers import TransformersComparator

    def judge(path: Path, device: str, dtype: str, batch_size: int) -> TransformersComparator:
        return TransformersComparator(str(path), device=device, dtype=dtype,
                                      batch_size=batch_size, nonce_key=NONCE_KEY)

    out: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    tmp = Path(tempfile.mkdtemp())
    tiny = tiny_model.build(tmp / "tiny")
    small = comparisons(48, 6)
    p = {}
    for name, device, dtype in (("cpu", "cpu", "float32"), ("fp32", "cuda", "float32"),
                                ("bf16", "cuda", "bfloat16")):
        j = judge(tiny, device, dtype, 16)
        p[name] = await j.compare(small)
        await j.aclose()
    for name in ("fp32", "bf16"):
        out[f"max_abs_diff_{name}_vs_cpu"] = max(abs(a - b) for a, b in zip(p["cpu"], p[name]))
    big = comparisons(1024, 12, seed=1)
    mid = tiny_model.build(tmp / "mid", hidden_size=1024, heads=16, layers=24,
                           initializer_range=0.02)
    for batch_size in (32, 128):
        j = judge(mid, "cuda", "bfloat16", batch_size)
        out[f"bf16_batch{batch_size}_comparisons_per_s"] = await per_second(j, big)
        tokens = [len(x.token_ids or ()) for x in j.render(big[:64])]
        out["prompt_tokens_mean"] = round(sum(tokens) / len(tokens), 1)
        out["parameters_M"] = round(sum(t.numel() for t in j.model.parameters()) / 1e6, 1)
        await j.aclose()
    return out


if __name__ == "__main__":
    result = asyncio.run(main())
    print(json.dumps(result, indent=1))
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(result, indent=1))
