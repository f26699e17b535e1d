"""verl: the reward manager through verl's own reward loop, registry and GRPO estimator.

verl's ``RewardLoopWorker`` (made directly, not as a Ray actor) loads the manager from the
config, scores a batch sample by sample (``compute_score_batch``: one ``run_single`` per sample,
all at once) with verl's default GSM8K scorer; the manager's samples meet on a real judge server
(the embedded judge) in groups by their ``uid``; verl assembles the token-level scores and its
registered ``grpo`` estimator (``norm_adv_by_std_in_grpo=False``) makes the advantages.
"""

from __future__ import annotations

import importlib.resources
import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.trainer.ppo.reward import resolve_reward_manager_cls

from judge_server.bench.tiny_model import build
from trainer_client.integrations.verl import REGISTERED_NAME, ArenaRewardManager

EGGS = "Janet has 16 eggs, eats 3 and bakes with 4. She sells the rest at $2 each. How much?"
GROUPS = [  # (prompt, ground truth, responses): dead (all right), live, dead (all wrong)
    (EGGS, "18", [
        "16 - 3 - 4 = 9 eggs\n9 * 2 = 18 dollars\n#### 18",
        "16 - 3 - 4 = 9 eggs\n9 * 2 = 20 dollars\n#### 18",
        "She has 16 - 7 = 9 eggs\n9 * 2 = 18 dollars\n#### 18",
        "16 - 3 = 12 eggs\n12 - 4 = 8 eggs\n8 * 2 = 18 dollars\n#### 18",
    ]),
    ("What is 2 + 2?", "4", ["2 + 2 = 4\n#### 4", "2 + 2 = 5\n#### 5", "#### 4", "#### 3"]),
    ("What is 7 * 6?", "42", ["7 * 6 = 48\n#### 48", "7 * 6 = 36\n#### 36", "#### 41",
                              "7 * 6 = 42\n#### 24"]),
]
WRONG_ARITHMETIC = {1, 3}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny"))


def trainer_config(tokenizer_dir, **reward_kwargs):
    """verl's generated PPO config, set up as the module docstring says."""
    files = importlib.resources.files("verl") / "trainer/config/_generated_ppo_trainer.yaml"
    config = OmegaConf.load(str(files))
    with open_dict(config):
        config.actor_rollout_ref.model.path = str(tokenizer_dir)
        config.actor_rollout_ref.rollout.n = 4
        config.algorithm.adv_estimator = "grpo"
        config.algorithm.norm_adv_by_std_in_grpo = False
        config.reward.reward_manager.source = "importlib"
        config.reward.reward_manager.name = "ArenaRewardManager"
        config.reward.reward_manager.module.path = "pkg://trainer_client.integrations.verl"
        config.reward.reward_kwargs = reward_kwargs
    return config


def rollout_batch(tokenizer, groups, *, seed=0) -> DataProto:
    """A batch as verl's trainer holds it after generation: prompts left-padded, responses
    right-padded, one uid per prompt, rows shuffled (verl balances batches across ranks)."""
    rows: list[tuple[str, str, str, str]] = []
    for prompt, truth, responses in groups:
        uid = f"uid-{len(rows)}"
        for response in responses:
            rows.append((uid, prompt, truth, response))
    random.Random(seed).shuffle(rows)
    pad = tokenizer.pad_token_id
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for _, p, _, _ in rows]
    response_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                    for *_, r in rows]
    plen, rlen = max(map(len, prompt_ids)), max(map(len, response_ids)) + 2
    prompts = torch.tensor([[pad] * (plen - len(p)) + p for p in prompt_ids])
    responses = torch.tensor([r + [pad] * (rlen - len(r)) for r in response_ids])
    mask = torch.tensor(
        [[0] * (plen - len(p)) + [1] * (len(p) + len(r)) + [0] * (rlen - len(r))
         for p, r in zip(prompt_ids, response_ids)]
    )
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, responses], dim=1)},
        non_tensors={
            "uid": np.array([u for u, *_ in rows], dtype=object),
            "data_source": np.array(["openai/gsm8k"] * len(rows), dtype=object),
            "reward_model": np.array([{"ground_truth": t} for _, _, t, _ in rows], dtype=object),
            "extra_info": np.array([{"index": k} for k in range(len(rows))], dtype=object),
        },
    ), rows


def test_it_is_in_verls_registry():
    assert get_reward_manager_cls(REGISTERED_NAME) is ArenaRewardManager
    registered = OmegaConf.create({"reward": {"reward_manager": {"source": "register",
                                                                 "name": "arena"}}})
    assert resolve_reward_manager_cls(registered) is ArenaRewardManager


async def test_verl_reward_loop_and_grpo_give_dead_groups_judge_advantages(
    start_server, tokenizer_dir
):
    server = await start_server()
    config = trainer_config(tokenizer_dir, arena_url=server.http_url, arena_run_id="verl")
    worker = RewardLoopWorker(config)  # verl loads the manager from the config
    assert isinstance(worker.reward_manager, ArenaRewardManager)
    assert worker.reward_manager.scorer.group_size == 4  # rollout.n

    data, rows = rollout_batch(worker.input_tokenizer, GROUPS)
    outputs = await worker.compute_score_batch(data)  # every sample at once, as verl does
    scores = [o["reward_score"] for o in outputs]
    token_scores = ArenaRewardManager.assemble_rm_scores(data, scores)
    response_mask = data.batch["attention_mask"][:, data.batch["prompts"].shape[1]:]
    estimator = get_adv_estimator_fn(config.algorithm.adv_estimator)
    advantages, _ = estimator(
        token_level_rewards=token_scores, response_mask=response_mask,
        index=data.non_tensor_batch["uid"],
        norm_adv_by_std_in_grpo=config.algorithm.norm_adv_by_std_in_grpo,
    )
    per_sample = advantages.sum(-1) / response_mask.sum(-1)

    by_group: dict[str, list[tuple[str, float, float, dict]]] = {}
    for (uid, _, _, response), score, adv, out in zip(rows, scores, per_sample.tolist(),
                                                      outputs):
        by_group.setdefault(uid, []).append((response, score, adv, out["reward_extra_info"]))

    eggs = by_group["uid-0"]
    assert all(info["acc"] == 1.0 and info["arena_judged"] == 1.0 for *_, info in eggs)
    assert len({round(a, 6) for _, _, a, _ in eggs}) > 1  # the dead group has advantages
    assert sum(a for _, _, a, _ in eggs) == pytest.approx(0.0, abs=1e-5)
    wrong = {GROUPS[0][2][k] for k in WRONG_ARITHMETIC}
    assert max(a for r, _, a, _ in eggs if r in wrong) < min(
        a for r, _, a, _ in eggs if r not in wrong)

    live = by_group["uid-4"]
    assert sorted(s for _, s, _, _ in live) == [0.0, 0.0, 1.0, 1.0]  # GSM8K's own scorer
    assert all(info["arena_judged"] == 0.0 for *_, info in live)
    assert sorted(round(a, 6) for _, _, a, _ in live) == [-0.5, -0.5, 0.5, 0.5]  # plain r - mean

    dead_wrong = by_group["uid-8"]
    assert all(info["acc"] == 0.0 and info["arena_judged"] == 1.0 for *_, info in dead_wrong)
    assert len({round(a, 6) for _, _, a, _ in dead_wrong}) > 1
    assert server.service.metrics.groups.labels("verl", "judged")._value.get() == 2


async def test_a_judge_that_is_down_leaves_the_verifiable_rewards(tokenizer_dir):
    config = trainer_config(tokenizer_dir, arena_url="http://127.0.0.1:9", arena_timeout_s=2)
    worker = RewardLoopWorker(config)
    data, _ = rollout_batch(worker.input_tokenizer, GROUPS[:1])
    outputs = await worker.compute_score_batch(data)
    assert [o["reward_score"] for o in outputs] == [1.0] * 4
    assert all(o["reward_extra_info"]["arena_fell_back"] == 1.0 for o in outputs)
