"""TRL: the reward function on its own, split over processes, and in a real GRPOTrainer run.

The judge is a real server (simulated comparator: a trace's strength is a hash of its text, so
that random completions of a random model are told apart) on loopback, in a thread of its own.
"""

from __future__ import annotations

import asyncio
import math
import pickle
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from trainer_client import ArenaClient, ClientConfig
from trainer_client.integrations.trl import ArenaReward, AsyncArenaReward


def always_one(prompts, completions, **kwargs):
    """A verifier under which every group is dead."""
    return [1.0] * len(completions)


def by_length(prompts, completions, **kwargs):
    """Long completions right, short ones wrong: some groups dead, some not."""
    return [float(len(c) > 3) for c in completions]


def batch(groups: dict[str, list[str]]):
    prompts, completions = [], []
    for prompt, texts in groups.items():
        prompts += [prompt] * len(texts)
        completions += texts
    return prompts, completions


def config(judge, **options) -> ClientConfig:
    return ClientConfig(target=judge.grpc_address, run_id="trl", deadline_s=30, **options)


def scored(values: list[float | None]) -> list[float]:
    """``values`` (rewards of an ArenaReward call), checked to have no unscored completion."""
    assert None not in values, values
    return [v for v in values if v is not None]


def sums(values, size):
    return [sum(values[k : k + size]) for k in range(0, len(values), size)]


@pytest.fixture
def judge(threaded_judge):
    return threaded_judge(comparator="simulated")


def test_dead_groups_get_zero_mean_judge_values_added(judge):
    prompts, completions = batch({
        "p1": ["a strength=2", "b strength=-1", "c strength=0.5", "d strength=0"],  # dead
        "p2": ["ab", "abcde", "xy", "wxyz"],  # live under by_length
        "p3": ["long one", "longer one", "longest one", "long two"],  # dead
    })
    logged: dict[str, float] = {}
    reward = ArenaReward(by_length, num_generations=4, client=config(judge))
    values = scored(reward(prompts, completions, log_metric=logged.__setitem__,
                           trainer_state=SimpleNamespace(global_step=3)))
    reward.close()

    p1, p2, p3 = values[:4], values[4:8], values[8:]
    assert p2 == [0.0, 1.0, 0.0, 1.0]  # live: the verifier's rewards, untouched
    assert sums(values, 4) == pytest.approx([4.0, 2.0, 4.0])  # group means unchanged
    assert len(set(p1)) == 4 and len(set(p3)) > 1
    assert max(p1) == p1[0] and min(p1) == p1[1]  # the judge's order (strength tags)
    assert logged["arena/groups"] == 3 and logged["arena/dead"] == 2
    assert logged["arena/judged"] == 2 and logged["arena/fell_back"] == 0
    assert logged["arena/partial_groups"] == 0


def test_chat_completions_references_and_none_rewards(judge):
    prompts = [[{"role": "user", "content": "What is 2 + 2?"}]] * 4 + [[{"role": "user",
                                                                        "content": "3 + 3?"}]] * 4
    completions: list[list[dict[str, Any]]] = [
        [{"role": "assistant", "content": f"It is 4, take {k}"}] for k in range(4)]
    completions += [[{"role": "assistant", "content": [{"type": "text", "text": f"6 ({k})"}]}]
                    for k in range(4)]

    def with_a_none(prompts, completions, answer, **kwargs):
        assert answer == ["4"] * 4 + ["6"] * 4  # dataset columns reach the verifier
        return [1.0] * 4 + [1.0, None, 1.0, 1.0]

    reward = ArenaReward(with_a_none, num_generations=4, client=config(judge),
                         reference_column="answer")
    values = reward(prompts, completions, answer=["4"] * 4 + ["6"] * 4)
    reward.close()
    assert len(set(values[:4])) > 1 and sum(scored(values[:4])) == pytest.approx(4.0)
    assert values[4:] == [1.0, None, 1.0, 1.0]  # a group with an unscored completion: not sent


def test_a_call_that_sees_part_of_a_group_keeps_its_rewards(judge):
    # The slice of process 1 of 2 (TRL: rank * len): the end of p1's group, all of p2's.
    prompts, completions = batch({"p1": ["x1", "x2"], "p2": ["y1", "y2", "y3", "y4"]})
    prompts, completions = prompts + ["p3"] * 2, completions + ["z1", "z2"]
    logged: dict[str, float] = {}
    reward = ArenaReward(always_one, num_generations=4, client=config(judge))
    plan = reward._plan(reward._batch(prompts, completions, [1.0] * 8, {}), offset=2, step=None)
    assert plan.spans == [(2, 6)] and plan.partial == 2

    values = reward(prompts, completions, log_metric=logged.__setitem__)  # offset 0: misaligned
    reward.close()
    assert values[:2] == [1.0, 1.0] and values[6:] == [1.0, 1.0]
    assert logged["arena/partial_groups"] >= 2


def test_a_judge_that_is_down_leaves_the_rewards():
    reward = ArenaReward(always_one, num_generations=2,
                         client=ClientConfig(target="127.0.0.1:9", deadline_s=1, retries=0))
    logged: dict[str, float] = {}
    values = reward(*batch({"p": ["a", "b"]}), log_metric=logged.__setitem__)
    reward.close()
    assert values == [1.0, 1.0]
    assert logged["arena/fell_back"] == 1 and logged["arena/judged"] == 0


def test_it_pickles_with_its_client_as_a_config(judge):
    reward = ArenaReward(always_one, num_generations=4, client=ArenaClient(config(judge)))
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.config == reward.config and copy._client is None and copy.__name__ == "arena"
    values = scored(copy(*batch({"p": ["a strength=1", "b strength=-1", "c", "d"]})))
    copy.close()
    assert values[0] > values[1] and sum(values) == pytest.approx(4.0)
    assert isinstance(reward._client, ArenaClient)
    reward._client.close()
    assert pickle.loads(pickle.dumps(AsyncArenaReward(always_one, num_generations=2)))


async def test_the_async_variant(judge):
    async def verifier(prompts, completions, **kwargs):
        return [0.0] * len(completions)

    reward = AsyncArenaReward(verifier, num_generations=4, client=config(judge))
    values = scored(await reward(*batch({"p": ["a strength=1", "b strength=-1", "c", "d"]})))
    await reward.aclose()
    assert values[0] > values[1] and sum(values) == pytest.approx(0.0, abs=1e-9)


# -- several processes: a group split between them -------------------------------------------


def _split_worker(rank: int, world: int, port: int, target: str, out: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    # The batch [p1 x4, p2 x4, p3 x4] split in two: p2's group is split between the processes.
    prompts, completions = batch({
        "p1": [f"a{k} strength={k}" for k in range(4)],
        "p2": [f"b{k} strength={-k}" for k in range(4)],
        "p3": [f"c{k} strength={k % 2}" for k in range(4)],
    })
    mine = slice(rank * 6, rank * 6 + 6)
    results = {}
    for gather in (None, False):
        logged: dict[str, float] = {}
        reward = ArenaReward(always_one, num_generations=4, gather=gather,
                             client=ClientConfig(target=target, run_id="dist", deadline_s=30))
        results[str(gather)] = {
            "values": reward(prompts[mine], completions[mine], log_metric=logged.__setitem__),
            "logged": logged,
        }
        reward.close()
    with open(f"{out}/{rank}.json", "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


def test_a_group_split_between_processes_is_gathered(judge, tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_split_worker, args=(2, port, judge.grpc_address, str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]

    gathered = results[0]["None"]["values"] + results[1]["None"]["values"]
    assert sums(gathered, 4) == pytest.approx([4.0, 4.0, 4.0])
    assert all(len(set(gathered[k : k + 4])) > 1 for k in (0, 4, 8))  # p2 too
    assert gathered[4] > gathered[5] > gathered[6] > gathered[7]  # its strengths: 0, -1, -2, -3
    assert results[1]["None"]["logged"] == results[0]["None"]["logged"]
    assert results[0]["None"]["logged"]["arena/judged"] == 3

    alone = results[0]["False"]["values"] + results[1]["False"]["values"]
    assert alone[4:8] == [1.0] * 4  # not gathered: each process saw half of p2, kept it
    assert results[0]["False"]["logged"]["arena/partial_groups"] == 1
    assert all(len(set(alone[k : k + 4])) > 1 for k in (0, 8))


# -- a real GRPOTrainer --------------------------------------------------------------------------


class Recording(ArenaReward):
    """ArenaReward that keeps what it returned (to check it, not TRL)."""

    returned: list[list[float | None]]

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        values = super().__call__(prompts, completions, **kwargs)
        self.returned.append(values)
        return values


class AsyncRecording(AsyncArenaReward):
    returned: list[list[float | None]]

    async def __call__(  # type: ignore[override]  # async, as AsyncArenaReward's
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        values = await super().__call__(prompts, completions, **kwargs)
        self.returned.append(values)
        return values


@pytest.mark.slow
@pytest.mark.parametrize("kind", [Recording, AsyncRecording], ids=["sync", "async"])
def test_grpo_trainer_gets_advantages_for_dead_groups(judge, tmp_path, kind):
    import datasets
    import trl
    from trl.trainer.utils import is_async_callable

    from judge_server.bench.tiny_model import build

    model = build(tmp_path / "model", hidden_size=64)
    train = datasets.Dataset.from_list(
        [{"prompt": f"What is {a} + {a}?", "answer": str(2 * a)} for a in range(2, 14)]
    )
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4,
        max_completion_length=12, max_steps=3, learning_rate=1e-3, logging_steps=1,
        scale_rewards="none", report_to="none", use_cpu=True, bf16=False, save_strategy="no",
        seed=0,
    )
    reward = kind(always_one, num_generations=4, client=config(judge), reference_column="answer")
    reward.returned = []
    assert is_async_callable(reward) == (kind is AsyncRecording)  # TRL runs it as it should
    trainer = trl.GRPOTrainer(model=str(model), reward_funcs=reward, args=args,
                              train_dataset=train)
    trainer.train()
    if isinstance(reward, AsyncArenaReward):
        asyncio.run(reward.aclose())
    else:
        reward.close()

    assert len(reward.returned) >= 3
    for values in reward.returned:  # every group is dead under always_one ...
        assert len(values) % 4 == 0
        for k in range(0, len(values), 4):
            group = values[k : k + 4]
            assert len(set(group)) > 1  # ... and comes back with values that differ
            assert sum(group) / 4 == pytest.approx(1.0, abs=1e-6)

    steps = [log for log in trainer.state.log_history if "reward_std" in log]
    assert len(steps) == 3
    for log in steps:  # what TRL itself measured
        assert log["frac_reward_zero_std"] == 0.0  # no group has zero advantages
        assert log["reward_std"] > 0 and log["rewards/arena/std"] > 0
        assert log["reward"] == pytest.approx(1.0, abs=1e-5)
        assert log["arena/judged"] > 0 and log["arena/dead_fraction"] == 1.0
        assert log["arena/fell_back"] == 0
    assert any(log["grad_norm"] > 0 for log in steps if "grad_norm" in log)
    assert not any(math.isnan(log["loss"]) for log in steps)
