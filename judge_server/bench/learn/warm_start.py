"""The warm start: supervised learning on a teacher that often forgets a carry.

The policy learns the format and the chain from the teacher's traces (always well formed, often
wrong), so that the right behaviour is within reach but unreliable: that is where RL has
something to learn and where many groups are dead. The checkpoint ships as
``warm_start.safetensors`` beside this module (the shape and recipe in its metadata); remake it
with ``python -m judge_server.bench.learn.warm_start`` (deterministic on one thread).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

from . import task
from .policy import END, PAD, Policy, Shape, encode

CHECKPOINT = Path(__file__).with_name("warm_start.safetensors")
DROP_CARRY = 0.35
STEPS = 2000
BATCH = 64
LR = 3e-3
SEED = 1234
#: A second phase from the first one's weights: more of the same teacher at a lower rate, so
#: that the policy can add (greedy accuracy) while still forgetting carries when sampled.
MORE_STEPS = 1000
MORE_LR = 1e-3
MORE_DROP_CARRY = 0.4


def _batch(rng: random.Random, shape: Shape, *, drop_carry: float) -> tuple[torch.Tensor, ...]:
    tokens = torch.full((BATCH, shape.context), PAD, dtype=torch.long)
    mask = torch.zeros((BATCH, shape.context - 1), dtype=torch.bool)
    for i in range(BATCH):
        problem = task.sample_problem(rng)
        prompt = encode(problem.prompt + "\n")
        ids = prompt + encode(task.teacher_trace(problem, rng, drop_carry=drop_carry)) + [END]
        tokens[i, : len(ids)] = torch.tensor(ids)
        mask[i, len(prompt) - 1: len(ids) - 1] = True
    return tokens, mask


def train(*, steps: int = STEPS, drop_carry: float = DROP_CARRY, seed: int = SEED,
          shape: Shape | None = None, lr: float = LR, policy: Policy | None = None,
          log=None) -> Policy:
    """A policy trained on ``steps`` batches of teacher traces (one-cycle AdamW), from
    scratch or from ``policy``."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    policy = policy or Policy(shape or Shape())
    optimiser = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps,
                                                   pct_start=0.05)
    for step in range(steps):
        tokens, mask = _batch(rng, policy.shape, drop_carry=drop_carry)
        logits = policy(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[mask], tokens[:, 1:][mask])
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"step {step} loss {loss.item():.4f}")
    return policy


def save(policy: Policy, path: Path = CHECKPOINT, **recipe: object) -> None:
    from safetensors.torch import save_file

    metadata = {"shape": json.dumps(policy.config()), "recipe": json.dumps(recipe)}
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(path),
              metadata=metadata)


def load(path: Path = CHECKPOINT) -> Policy:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        shape = Shape(**json.loads(f.metadata()["shape"]))
    policy = Policy(shape)
    policy.load_state_dict(load_file(str(path)))
    return policy


def main(argv: list[str] | None = None) -> int:
    """``python -m judge_server.bench.learn.warm_start [--resume PATH]``: both phases, or the
    second only from a checkpoint of the first."""
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if argv[:1] == ["--resume"]:
        policy = load(Path(argv[1]))
    else:
        policy = train(steps=STEPS, log=log)
    policy = train(steps=MORE_STEPS, drop_carry=MORE_DROP_CARRY, seed=SEED + 1, lr=MORE_LR,
                   policy=policy, log=log)
    save(policy, steps=STEPS, drop_carry=DROP_CARRY, lr=LR, more_steps=MORE_STEPS,
         more_drop_carry=MORE_DROP_CARRY, more_lr=MORE_LR, seed=SEED, batch=BATCH,
         seconds=round(time.perf_counter() - start))
    print(f"saved {CHECKPOINT} after {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
