"""``arena-judge bench fairness`` end to end with tiny numbers: the figures are there and
sane. Timing ratios are not asserted: they are the benchmark's to report, and CI machines
are noisy."""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
import pytest

from judge_server.bench import fairness
from judge_server.cli import main
from judge_server.comparators.base import Comparison

TINY = ["--groups", "12", "--rate", "40", "--flood-factor", "3", "--base-ms", "2",
        "--per-item-ms", "0.05", "--max-batch", "32", "--flood-max-in-flight", "16"]


def test_bench_fairness_prints_json_with_both_policies(capsys):
    assert main(["bench", "fairness", "--json", *TINY]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy"] == "fair" and set(result["policies"]) == {"fair", "fifo"}
    assert result["p99_ratio"] == result["policies"]["fair"]["p99_ratio"]
    for figures in result["policies"].values():
        for key in ("quiet_alone", "quiet_under_flood"):
            quiet = figures[key]
            assert quiet["groups"] == 12 and quiet["failed"] == quiet["refused"] == 0
            assert 0 < quiet["p50_ms"] <= quiet["p99_ms"]
        assert figures["flood"]["groups"] > 0 and figures["flood"]["failed"] == 0
        assert math.isfinite(figures["p99_ratio"]) and figures["p99_ratio"] > 0
        assert figures["judge_under_flood"]["comparisons_per_s"] > 0
        assert 0 < figures["judge_under_flood"]["busy_fraction"] <= 1.0
    judge = result["judge"]
    assert (judge["base_ms"], judge["per_item_ms"], judge["max_batch"]) == (2, 0.05, 32)
    assert judge["full_batch_ms"] == pytest.approx(2 + 0.05 * 32)


def test_the_table_names_the_judge_and_each_policy():
    result = fairness.run(policy="fair", groups=6, rate=40, flood_factor=2, base_ms=1,
                          per_item_ms=0.01, max_batch=16, progress=False)
    assert set(result["policies"]) == {"fair"}
    table = fairness.format_table(result)
    assert "p99_ratio" in table and "quiet, under flood" in table and "1 ms + 0.01 ms" in table


def test_a_bad_policy_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "fairness", "--policy", "lottery"])
    with pytest.raises(ValueError, match="rate"):
        fairness.run(rate=0, progress=False)


async def test_the_simulated_gpu_serves_one_batch_at_a_time():
    judge = fairness.SimulatedGpuJudge(base_s=0.05, per_item_s=0.001)
    batch = [Comparison("q", f"a{k}", f"b{k}") for k in range(10)]
    started = time.perf_counter()
    answers = await asyncio.gather(judge.compare(batch), judge.compare(batch))
    assert time.perf_counter() - started >= 2 * 0.06 - 0.005
    assert all(0 <= p <= 1 for a in answers for p in a) and len(answers[0]) == 10
    assert (judge.batches, judge.comparisons) == (2, 20)


def test_arrival_times_are_poisson_at_the_rate():
    times = fairness.arrival_times(50.0, 5000, np.random.default_rng(0))
    assert times[0] == 0 and np.all(np.diff(times) >= 0) and len(times) == 5000
    assert 5000 / times[-1] == pytest.approx(50.0, rel=0.05)
