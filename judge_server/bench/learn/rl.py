"""One run: one arm, one seed, on-policy policy gradient from the warm start.

Each step samples ``G`` traces for each of the step's ``prompts`` problems (the same problems
for every arm at a given seed and step), scores them with the verifier, gives each group its
arm's advantages (:mod:`.arms`), and takes one Adam step on the token-level loss
``sum(-A * log p(token)) / tokens kept`` (one update per batch: the clipped ratio is 1, so this
is plain policy gradient). Every ``eval_every`` steps it evaluates on the held-out set.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np
import torch

from . import arms, monitors, task
from .policy import completion_logprobs, completion_mask, sample


@dataclass(frozen=True, slots=True)
class Config:
    steps: int = 100
    prompts: int = 32
    group_size: int = 4
    lr: float = 3e-4
    optimiser: str = "adam"  # or "sgd" (with momentum 0.9)
    eval_every: int = 10
    heldout: int = 512
    heldout_seed: int = 999_983


DEFAULT_CONFIG = Config()


@dataclass(slots=True)
class Batch:
    problems: list[task.Problem]
    tokens: torch.Tensor
    lengths: list[int]
    traces: list[str]
    rewards: np.ndarray  # [groups, G]


def step_problems(seed: int, step: int, count: int, round_: int = 0) -> list[task.Problem]:
    """The step's problems: the same for every arm at this seed and step."""
    return task.problems(seed * 1_000_003 + step * 101 + round_, count)


def draw(policy, problems: list[task.Problem], group_size: int, generator) -> Batch:
    prompts = [p.prompt for p in problems for _ in range(group_size)]
    tokens, lengths, traces = sample(policy, prompts, generator)
    rewards = np.array([task.reward(p, t) for p, t in
                        zip((p for p in problems for _ in range(group_size)), traces)])
    return Batch(problems, tokens, lengths, traces, rewards.reshape(len(problems), group_size))


def _groups(batch: Batch, step: int, group_size: int):
    from trainer_client import make_group

    return [make_group(f"s{step}g{g}", batch.traces[g * group_size:(g + 1) * group_size],
                       batch.rewards[g].tolist(), prompt_id=p.prompt, prompt=p.prompt,
                       reference=p.reference, step=step)
            for g, p in enumerate(batch.problems)]


def advantages(arm: str, batch: Batch, *, step: int, group_size: int, client, rng
               ) -> np.ndarray:
    """[groups, G]: the arm's advantages for ``batch`` (the judge's for the judged arms)."""
    if arm == "reference_shaping":
        credit = np.array([task.reference_credit(p, t) for p, t in zip(
            (p for p in batch.problems for _ in range(group_size)), batch.traces)])
        return arms.group_relative(batch.rewards + arms.SHAPING * credit.reshape(
            batch.rewards.shape))
    if arm not in arms.JUDGED:
        return arms.group_relative(batch.rewards)
    result = client.rank(_groups(batch, step, group_size))
    judged = np.array(result.advantages, dtype=np.float64)
    is_dead = arms.dead(batch.rewards)
    if arm == "random":
        return arms.shuffled(judged, is_dead, rng)
    if arm == "judge_scores":
        scores = np.array(monitors.judge_scores(
            [p for p in batch.problems for _ in range(group_size)], batch.traces))
        return arms.scaled_scores(judged, scores.reshape(judged.shape), is_dead)
    return judged


def _refill(policy, batch: Batch, config: Config, seed: int, step: int, generator
            ) -> tuple[Batch, int]:
    """``dapo_resample``: keep the live groups, sample more problems until the batch holds
    ``config.prompts`` live groups or ``RESAMPLE_ROUNDS`` rounds are spent."""
    keep = ~arms.dead(batch.rewards)
    parts, extra = [(batch, keep)], 0
    live = int(keep.sum())
    for round_ in range(1, arms.RESAMPLE_ROUNDS + 1):
        if live >= config.prompts:
            break
        more = draw(policy, step_problems(seed, step, config.prompts, round_),
                    config.group_size, generator)
        extra += more.tokens.shape[0]
        keep = ~arms.dead(more.rewards)
        parts.append((more, keep))
        live += int(keep.sum())
    return _concat(parts, config.prompts, config.group_size), extra


def _concat(parts, wanted: int, group_size: int) -> Batch:
    """The live groups of ``parts`` (at most ``wanted``), then dead ones of the first part to
    fill up (they are dropped from the loss)."""
    chosen = [(b, g) for b, keep in parts for g in np.flatnonzero(keep)][:wanted]
    first, keep = parts[0]
    chosen += [(first, g) for g in np.flatnonzero(~keep)][: max(0, wanted - len(chosen))]
    index = [(b, r) for b, g in chosen for r in range(g * group_size, (g + 1) * group_size)]
    return Batch(
        problems=[b.problems[g] for b, g in chosen],
        tokens=torch.stack([b.tokens[r] for b, r in index]),
        lengths=[b.lengths[r] for b, r in index],
        traces=[b.traces[r] for b, r in index],
        rewards=np.stack([b.rewards[g] for b, g in chosen]),
    )


def policy_loss(policy, batch: Batch, advantages: np.ndarray, weights: np.ndarray
                ) -> torch.Tensor:
    """Token mean of ``-A * log p`` over the completion tokens of the traces kept."""
    mask = completion_mask(batch.tokens, batch.lengths).float()
    mask = mask * torch.tensor(weights, dtype=torch.float32)[:, None]
    logp = completion_logprobs(policy, batch.tokens)
    adv = torch.tensor(advantages.reshape(-1), dtype=torch.float32)[:, None]
    return -(adv * logp * mask).sum() / mask.sum().clamp_min(1.0)


def make_optimiser(policy, config: Config):
    if config.optimiser == "sgd":
        return torch.optim.SGD(policy.parameters(), lr=config.lr, momentum=0.9)
    return torch.optim.Adam(policy.parameters(), lr=config.lr)


def run(arm: str, seed: int, policy, config: Config, *, client_options: dict | None = None,
        heldout: list[task.Problem] | None = None, progress=None) -> dict:
    """Train ``policy`` (modified in place) with ``arm``; return its per-step and per-eval
    records."""
    from trainer_client import ArenaClient

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    eval_generator = torch.Generator().manual_seed(seed + 1)
    rng = np.random.default_rng(seed)
    heldout = heldout or task.problems(config.heldout_seed, config.heldout)
    optimiser = make_optimiser(policy, config)
    client = None
    if arm in arms.JUDGED:
        from trainer_client import RunSettings

        run_id = f"learn-{arm}-s{seed}-{uuid.uuid4().hex[:8]}"
        settings = (RunSettings(run_id=run_id, **arms.RUN_SETTINGS[arm])
                    if arm in arms.RUN_SETTINGS else None)
        client = ArenaClient(run_id=run_id, run_settings=settings, deadline_s=120,
                             **(client_options or {}))
    steps, evals, samples, seconds = [], [], 0, 0.0
    try:
        for step in range(config.steps + 1):
            if step % config.eval_every == 0 or step == config.steps:
                policy.eval()
                evals.append({"step": step, "samples": samples, "seconds": seconds,
                              **monitors.evaluate(policy, heldout, eval_generator)})
                if progress:
                    progress(arm, seed, evals[-1])
            if step == config.steps:
                break
            start = time.perf_counter()
            steps.append(_train_step(arm, seed, step, policy, optimiser, config, client, rng,
                                     generator))
            samples += steps[-1]["samples"]
            seconds += time.perf_counter() - start
    finally:
        if client is not None:
            client.close()
    return {"arm": arm, "seed": seed, "steps": steps, "evals": evals}


def _train_step(arm, seed, step, policy, optimiser, config, client, rng, generator) -> dict:
    policy.eval()
    batch = draw(policy, step_problems(seed, step, config.prompts), config.group_size,
                 generator)
    first = batch
    drawn = batch.tokens.shape[0]
    if arm == "dapo_resample":
        batch, extra = _refill(policy, batch, config, seed, step, generator)
        drawn += extra
    adv = advantages(arm, batch, step=step, group_size=config.group_size, client=client,
                     rng=rng)
    is_dead = arms.dead(batch.rewards)
    weights = arms.loss_weights(arm, is_dead, config.group_size)
    policy.train()
    loss = policy_loss(policy, batch, adv, weights)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    first_dead = arms.dead(first.rewards)
    all_correct = first_dead & (first.rewards[:, 0] > 0.5)
    flat = [p for p in first.problems for _ in range(config.group_size)]
    return {
        "step": step,
        "samples": drawn,
        "train_accuracy": float(first.rewards.mean()),
        "dead": float(first_dead.mean()),
        "dead_all_correct": float(all_correct.mean()),
        "dead_all_wrong": float((first_dead & ~all_correct).mean()),
        "dead_with_signal": _dead_with_signal(adv, is_dead),
        "dead_advantage_size": float(np.abs(adv[is_dead]).mean()) if is_dead.any() else None,
        "live_advantage_size": float(np.abs(adv[~is_dead]).mean()) if (~is_dead).any()
        else None,
        "kept_groups": int(weights.reshape(-1, config.group_size)[:, 0].sum()),
        **monitors.form_monitors(flat, first.traces),
    }


def _dead_with_signal(adv: np.ndarray, is_dead: np.ndarray) -> float | None:
    """Share of the dead groups (verifier) whose advantages are not all zero."""
    if not is_dead.any():
        return None
    return float((np.abs(adv[is_dead]).max(axis=1) > 1e-9).mean())
