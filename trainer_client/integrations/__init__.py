"""Plug the judge into trainers. Each module imports its trainer only when it is imported.

``trainer_client.integrations.trl``
    :class:`~trainer_client.integrations.trl.ArenaReward` (and ``AsyncArenaReward``): a
    ``GRPOTrainer`` reward function; run with ``scale_rewards="none"``.
``trainer_client.integrations.verl``
    :class:`~trainer_client.integrations.verl.ArenaRewardManager`: a verl reward manager
    (registered as ``arena``); run with ``algorithm.norm_adv_by_std_in_grpo=False``.
``trainer_client.integrations.openrlhf``
    the flags that point OpenRLHF's remote reward URL at the judge server's per-sample route,
    and ``make_reward_func`` for its ``.py`` route; run with ``dr_grpo``.

Every integration hands the trainer, per sample, its verifiable reward plus the judge's
zero-mean advantage inside dead groups, and tells the trainer to subtract the group mean
without dividing by the group's standard deviation: the trainer's own advantages are then
the judge's for dead groups and unchanged for the others. A judge failure never stops
training: the samples keep their verifiable rewards.
"""
