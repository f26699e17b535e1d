"""verl: a reward manager that rescues dead groups with the judge.

Where the hook is. verl (0.9) computes rewards in its reward loop: a reward manager
(``RewardManagerBase``, ``async run_single(data)``) is called once per sample, in one of
several Ray workers (``reward.num_workers``), sometimes while the rest of the batch is still
generating. Each sample carries its group's id, ``non_tensor_batch["uid"]`` (verl gives each
prompt a uuid and repeats it over its ``rollout.n`` responses), and the manager decodes the
response text. A registered advantage estimator (``@register_adv_est``) sees the groups too,
but no text: the judge needs the texts, so the reward manager is the hook.

Since the samples of one group reach different workers one at a time, :class:`ArenaRewardManager`
does what verl's own managers do (the verifiable reward, from ``compute_score``: your
``reward.custom_reward_function`` or verl's default for the ``data_source``) and then posts the
sample to the judge server's per-sample route with its uid as the group id and its verifiable
reward. The server buffers the group until its ``rollout.n`` samples are there, judges it once,
and answers each sample: verifiable reward + the judge's zero-mean advantage when the group
was dead. GRPO without the division by the std then turns those values into the advantages::

    algorithm.adv_estimator=grpo
    algorithm.norm_adv_by_std_in_grpo=False          # r - mean(group) only (Dr. GRPO)
    reward.reward_manager.source=importlib
    reward.reward_manager.name=ArenaRewardManager
    reward.reward_manager.module.path=pkg://trainer_client.integrations.verl
    +reward.reward_kwargs.arena_url=http://judge:8000
    +reward.reward_kwargs.arena_run_id=exp-1         # optional (default: "default")
    +reward.reward_kwargs.arena_timeout_s=150        # optional: wait per sample
    +reward.reward_kwargs.arena_group_size=8         # optional: default rollout.n

Or through verl's registry, with the module imported in every process (verl imports the
modules in ``VERL_USE_EXTERNAL_MODULES`` when it is imported; put it in the Ray runtime
environment's ``env_vars`` on a cluster)::

    VERL_USE_EXTERNAL_MODULES=trainer_client.integrations.verl
    reward.reward_manager.name=arena                 # source=register, the default

``ARENA_URL`` and ``ARENA_RUN_ID`` in the workers' environment stand in for the first two
``reward_kwargs``. Keep ``algorithm.filter_groups`` (DAPO's dynamic sampling) off, or filter
on the final reward: on the verifiable reward (``acc``) it drops the very groups the judge
rescues. The judge server's ``assembly_timeout_s`` (120 s) bounds how long a sample waits for
the rest of its group; set ``arena_timeout_s`` above it. A judge that is down or slow never
stops training: the sample keeps its verifiable reward (``arena_fell_back`` = 1).

Each sample's ``reward_extra_info`` (verl logs it): ``acc`` (the verifiable reward, as verl's
naive manager reports it), ``arena_judge`` (the judge's part), ``arena_judged``,
``arena_fell_back``.

Needs verl (``pip install 'reasoning-arena[verl]'``).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

try:
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager import register
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "trainer_client.integrations.verl needs verl: pip install 'reasoning-arena[verl]'"
    ) from exc

from ._common import DEFAULT_SAMPLE_TIMEOUT_S, SampleScorer, finite

logger = logging.getLogger("trainer_client")

REGISTERED_NAME = "arena"


def _option(options: Any, name: str, env: str | None = None, default: Any = None) -> Any:
    value = options.get(name) if options is not None else None
    if value is None and env is not None:
        value = os.environ.get(env)
    return default if value is None else value


def _label(ground_truth: Any) -> str | None:
    """The ground truth as the judge's reference: strings and numbers only."""
    if isinstance(ground_truth, (str, int, float)) and not isinstance(ground_truth, bool):
        return str(ground_truth)
    return None


@register(REGISTERED_NAME)
class ArenaRewardManager(RewardManagerBase):
    """verl's reward manager for the judge: ``compute_score``'s reward, plus the judge's
    zero-mean advantage when the sample's group (its ``uid``) was dead."""

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
        **_: Any,
    ) -> None:
        super().__init__(config, tokenizer, compute_score)
        if compute_score is None:
            from verl.utils.reward_score import default_compute_score

            compute_score = default_compute_score
        self.compute_score = compute_score
        self.is_async_reward_score = inspect.iscoroutinefunction(compute_score)
        self.reward_router_address = reward_router_address
        self.reward_model_tokenizer = reward_model_tokenizer
        options = config.reward.get("reward_kwargs", None) if "reward" in config else None
        group_size = _option(options, "arena_group_size")
        if group_size is None:
            group_size = config.actor_rollout_ref.rollout.n
        self.scorer = SampleScorer(
            str(_option(options, "arena_url", "ARENA_URL", "http://localhost:8000")),
            run_id=str(_option(options, "arena_run_id", "ARENA_RUN_ID", "default")),
            group_size=int(group_size),
            timeout_s=float(_option(options, "arena_timeout_s", None, DEFAULT_SAMPLE_TIMEOUT_S)),
        )

    async def _decode(self, ids: Any) -> str:
        return await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(ids, skip_special_tokens=True)
        )

    async def _verifiable(self, **kwargs: Any) -> Any:
        if self.reward_router_address is not None:
            kwargs["reward_router_address"] = self.reward_router_address
            kwargs["reward_model_tokenizer"] = self.reward_model_tokenizer
        if self.is_async_reward_score:
            return await self.compute_score(**kwargs)
        return await self.loop.run_in_executor(None, lambda: self.compute_score(**kwargs))

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1:][0]  # multi-sequence outputs: the last sequence is the response
        prompt_ids = item.batch["prompts"]
        response_ids = item.batch["responses"]
        prompt_length = prompt_ids.shape[-1]
        response_length = response_ids.shape[-1]
        mask = item.batch["attention_mask"]
        valid_prompt = int(mask[:prompt_length].sum())
        valid_response = int(mask[-response_length:].sum())
        prompt = await self._decode(prompt_ids[prompt_length - valid_prompt :])
        response = await self._decode(response_ids[:valid_response])

        info = item.non_tensor_batch
        ground_truth = (info.get("reward_model") or {}).get("ground_truth")
        extra_info = dict(info.get("extra_info") or {})
        result = await self._verifiable(
            data_source=info.get("data_source"), solution_str=response,
            ground_truth=ground_truth, extra_info=extra_info,
        )
        extra: dict[str, Any] = {}
        if isinstance(result, dict):
            extra.update(result)
            result = result["score"]
        else:
            extra["acc"] = result
        verifiable = finite(result)
        if verifiable is None:
            raise ValueError(f"compute_score returned {result!r}: not a finite number")

        uid = info.get("uid")
        if uid is None:  # not grouped (validation without uids): nothing to judge
            scored = None
        else:
            body = SampleScorer.body(
                prompt + response, prompt, _label(ground_truth), group_id=str(uid),
                reward=verifiable,
            )
            scored = await self.scorer.ascore(body, fallback=verifiable)
        extra.update(
            arena_judge=0.0 if scored is None else scored.judge,
            arena_judged=float(scored is not None and scored.judged),
            arena_fell_back=float(scored is not None and scored.fell_back),
        )
        value = verifiable if scored is None else scored.value
        return {"reward_score": value, "reward_extra_info": extra}


__all__ = ["REGISTERED_NAME", "ArenaRewardManager"]
