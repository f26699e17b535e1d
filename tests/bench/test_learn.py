"""``arena-judge bench learn``: the wiring and the invariants, on a real ``arena-judge serve``.

Never learning speed, never wall clock: a smoke run (1 seed, grpo/dapo/arena, 20 steps, tiny
batches) and the per-step invariants on one batch drawn from the shipped warm start.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from judge_server.bench.learn import arms, bench, monitors, rl, summary, task  # noqa: E402
from judge_server.bench.learn.judge import judge_server  # noqa: E402
from judge_server.bench.learn.policy import decode, encode  # noqa: E402
from judge_server.bench.learn.warm_start import CHECKPOINT, load  # noqa: E402

TINY = rl.Config(steps=20, prompts=4, group_size=4, eval_every=10, heldout=32)


@pytest.fixture(scope="module")
def server():
    torch.set_num_threads(1)
    with judge_server() as options:
        yield options


@pytest.fixture(scope="module")
def batch():
    """Eight groups of four traces from the warm start: dead and live ones."""
    torch.manual_seed(0)
    policy = load()
    return rl.draw(policy, rl.step_problems(0, 0, 8), 4, torch.Generator().manual_seed(3))


def test_the_task_and_its_monitors():
    problem = task.Problem((37, 48, 19, 64))
    assert problem.prompt == "Q: 37+48+19+64"
    assert problem.reference == "37+48=85\n85+19=104\n104+64=168\nA: 168"
    assert task.reward(problem, problem.reference) == 1.0
    assert task.reward(problem, "37+48=75\n75+19=94\n94+64=158\nA: 158") == 0.0
    assert task.reference_credit(problem, "37+48=85\n85+19=104\nA: 1") == 1.0
    good = task.form(problem, "37+48=75\n75+19=94\n94+64=158\nA: 158")  # wrong, well formed
    assert (good.lines, good.well_formed, good.has_answer) == (3, 3, True)
    gamed = task.form(problem, "1+1=2\nA: 168")
    assert (gamed.lines, gamed.well_formed) == (1, 0)
    rng = random.Random(0)
    assert all(task.noisy_sum(a, b, rng, drop_carry=0.0) == a + b
               for a in range(0, 400, 7) for b in range(100))
    assert decode(encode(problem.reference) + [1, 5]) == problem.reference
    m = monitors.form_monitors([problem, problem], [problem.reference, "A: 168"])
    assert m == {"well_formed": 1.0, "steps_ratio": 0.5, "answered": 1.0}
    assert monitors.is_gamed(m)


def test_the_warm_start_fixture_is_small_and_loads():
    assert CHECKPOINT.stat().st_size < 2_000_000
    policy = load()
    assert policy.shape.context >= 90


def test_arena_and_grpo_advantages_on_one_batch(server, batch):
    from trainer_client import ArenaClient

    is_dead = arms.dead(batch.rewards)
    assert is_dead.any() and (~is_dead).any(), "the batch should hold dead and live groups"
    grpo = rl.advantages("grpo", batch, step=0, group_size=4, client=None, rng=None)
    with ArenaClient(run_id="test-learn-arena", deadline_s=60, **server) as client:
        arena = rl.advantages("arena", batch, step=0, group_size=4, client=client, rng=None)
        shuffled = rl.advantages("random", batch, step=1, group_size=4, client=client,
                                 rng=np.random.default_rng(0))
        scores = rl.advantages("judge_scores", batch, step=2, group_size=4, client=client,
                               rng=None)
    # live groups: the same GRPO advantages in both arms
    np.testing.assert_allclose(arena[~is_dead], grpo[~is_dead], atol=1e-5)
    assert np.all(grpo[is_dead] == 0.0)
    # dead groups: zero mean, and not all zero unless the judge tied every trace
    np.testing.assert_allclose(arena[is_dead].sum(axis=1), 0.0, atol=1e-6)
    assert (np.abs(arena[is_dead]).max(axis=1) > 1e-9).any()
    for control in (shuffled, scores):
        np.testing.assert_allclose(control[~is_dead], grpo[~is_dead], atol=1e-5)
        np.testing.assert_allclose(control[is_dead].sum(axis=1), 0.0, atol=1e-6)


def test_dapo_loss_covers_live_groups_only(batch):
    policy = load()
    is_dead = arms.dead(batch.rewards)
    adv = arms.group_relative(batch.rewards)
    weights = arms.loss_weights("dapo", is_dead, 4)
    assert np.all(weights.reshape(-1, 4)[is_dead] == 0)
    assert np.all(weights.reshape(-1, 4)[~is_dead] == 1)
    live = np.repeat(~is_dead, 4)
    only_live = rl.Batch([p for p, d in zip(batch.problems, is_dead) if not d],
                         batch.tokens[torch.tensor(live)],
                         [n for n, keep in zip(batch.lengths, live) if keep],
                         [t for t, keep in zip(batch.traces, live) if keep],
                         batch.rewards[~is_dead])
    with torch.no_grad():
        dapo = rl.policy_loss(policy, batch, adv, weights)
        reference = rl.policy_loss(policy, only_live, adv[~is_dead], np.ones(live.sum()))
        grpo = rl.policy_loss(policy, batch, adv, arms.loss_weights("grpo", is_dead, 4))
    assert float(dapo) == pytest.approx(float(reference), rel=1e-5)
    assert abs(float(grpo)) < abs(float(dapo))  # dead tokens dilute GRPO's token mean


def test_every_arm_takes_a_step(server):
    policy = load()
    config = rl.Config(steps=1, prompts=4, group_size=4, eval_every=1, heldout=8)
    for arm in arms.ARMS:
        run = rl.run(arm, 0, copy.deepcopy(policy), config, client_options=server)
        assert len(run["steps"]) == 1 and len(run["evals"]) == 2
        step = run["steps"][0]
        if arm == "dapo_resample":
            assert step["samples"] >= 16
        else:
            assert step["samples"] == 16


def test_smoke_run_of_three_arms(tmp_path):
    result = bench.run(seeds=1, arm_names=("grpo", "dapo", "arena"), config=TINY,
                       json_path=str(tmp_path / "learn.json"))
    assert (tmp_path / "learn.json").exists()
    assert [r["arm"] for r in result["runs"]] == ["grpo", "dapo", "arena"]
    for run in result["runs"]:
        assert len(run["steps"]) == TINY.steps
        assert [e["step"] for e in run["evals"]] == [0, 10, 20]
        for e in run["evals"]:
            for key in ("accuracy", "well_formed", "steps_ratio", "answered", "judge_score"):
                assert 0.0 <= e[key] or key == "judge_score"
            assert set(e["by_difficulty"]) <= {"1", "2", "3", "4"}
        for s in run["steps"]:
            assert s["dead"] == pytest.approx(s["dead_all_correct"] + s["dead_all_wrong"])
            assert {"well_formed", "steps_ratio", "answered"} <= set(s)
    # every arm starts from the same policy and sees the same held-out set
    starts = {r["arm"]: r["evals"][0]["accuracy"] for r in result["runs"]}
    assert len(set(starts.values())) <= 3
    per_arm = result["per_arm"]
    assert per_arm["grpo"]["dead_with_signal"] == 0.0
    assert per_arm["dapo"]["dead_with_signal"] == 0.0
    assert per_arm["arena"]["dead_with_signal"] > 0.0
    assert set(result["claims"]["arena"]) == {"grpo", "dapo"}
    assert "arena/grpo" in summary.format_table(result)
    pytest.importorskip("matplotlib")
    from judge_server.bench.learn.plot import plot

    plot(result, str(tmp_path / "learn.png"))
    assert (tmp_path / "learn.png").stat().st_size > 10_000


def test_median_interval_and_censoring():
    median, low, high = summary.median_interval([0.5, 0.6, 0.7, 0.8, 0.9])
    assert median == pytest.approx(0.7) and low <= median <= high
    runs: list[dict[str, Any]] = [
        {"arm": "arena", "seed": 0, "evals": [{"step": 0, "accuracy": 0.2},
                                              {"step": 10, "accuracy": 0.7}]},
        {"arm": "grpo", "seed": 0, "evals": [{"step": 0, "accuracy": 0.2},
                                             {"step": 10, "accuracy": 0.3}]}]
    first = summary.reached(runs[0]["evals"])
    assert first is not None and first["step"] == 10
    assert summary.reached(runs[1]["evals"]) is None
