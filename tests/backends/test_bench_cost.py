"""``arena-judge bench cost`` on the tiny model: a real vLLM engine, a tiny size, and figures
that agree with each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from judge_server.bench import cost
from judge_server.bench.judge import DEFAULT_GSM8K_PATH

from .conftest import VLLM_START_TIMEOUT_S, require


def test_bench_cost_figures_are_consistent():
    for module in ("torch", "transformers", "vllm"):
        require(module)
    if not DEFAULT_GSM8K_PATH.exists():
        pytest.skip(f"GSM8K model solutions not found at {DEFAULT_GSM8K_PATH}")
    done = subprocess.run(
        [sys.executable, "-m", "judge_server.cli", "bench", "cost", "--json", "--sizes", "8",
         "--groups", "2", "--trials", "8"],  # the tiny model, built by the benchmark
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}, capture_output=True, text=True,
        timeout=2 * VLLM_START_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    result = json.loads(done.stdout)
    (size,) = result["sizes"]
    q = size["quality"]
    live_label = cost.DESIGNS[0][0]
    assert q["target_tau"] == q["curves"][live_label][-1]["tau"]
    assert q["needed"][live_label]["calls"] == q["live_calls"] == 18
    by_design = {d["design"]: d for d in size["designs"]}
    assert set(by_design) == {design for _, design, _ in cost.DESIGNS}
    for d in size["designs"]:
        assert d["groups"] == 2 and d["comparisons"] == d["calls_per_group"] * 2
        assert 0 < d["bound_tokens"] < d["prompt_tokens"]
        # No cache does better than the infinite one; per token it is at least as good as
        # per block; every comparison computes its own second trace.
        assert d["ideal_uncached_token"] <= d["ideal_uncached_block"] <= d["uncached_tokens"]
        assert d["bound_tokens"] <= d["ideal_uncached_token"]
        assert d["uncached_tokens"] <= d["prompt_tokens"]
        assert d["uncached_per_group"] == pytest.approx(d["uncached_tokens"]
                                                        * d["calls_per_group"])
        assert d["hub_first_traces_per_group"] <= d["first_traces_per_group"]
    default, live = by_design[cost.DESIGNS[2][1]], by_design["live"]
    assert live["budget"] is None and live["calls_per_group"] == 18
    checks = size["checks"]
    assert checks["default_over_live"] == pytest.approx(
        default["uncached_per_group"] / live["uncached_per_group"])
    assert checks["uncached_over_bound"] == pytest.approx(
        default["uncached_tokens"] / default["bound_tokens"])
    at_default = size["default_budget"]
    assert at_default["calls_per_group"] == 18  # the default design's own budget at G = 8
    assert at_default["bound_tokens"] <= at_default["uncached_tokens"]
    assert checks["uncached_over_bound_at_default_budget"] == pytest.approx(
        at_default["uncached_tokens"] / at_default["bound_tokens"])
    assert result["engine"]["block_size"] == 32
    table = cost.format_table(result)
    assert "block size 32" in table and f"{checks['default_over_live']:.2f}" in table
