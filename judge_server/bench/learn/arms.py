"""The arms of the experiment and the advantages each gives a step's groups. Pure functions.

Every arm sees the same prompts and the same first samples per step and seed, and trains with
the same optimiser and the same per-token loss normalisation (token mean over the traces it
keeps). They differ only in the advantages of their groups and in which groups they keep:

``grpo``               live groups: ``(r - mean) / (std + 1e-4)``; dead groups stay, all zeros
``dapo``               the same advantages; dead groups are dropped from the loss
``dapo_resample``      dead groups dropped, and more prompts sampled to refill the batch with
                       live ones (up to ``RESAMPLE_ROUNDS`` extra rounds; samples are counted)
``arena``              the product: every group goes to ``ArenaClient.rank`` (a running
                       ``arena-judge serve``, its default judge and run settings); live groups
                       come back with the GRPO advantages, dead ones with the judge's
``random``             control: the arena's advantages of each dead group, shuffled within the
                       group (same size, same zero mean, no information)
``judge_scores``       control: each trace's own judge score (``assess().score``, no
                       tournament), centred within the dead group and scaled to the arena's
                       spread for that group (same size, other ordering)
``reference_shaping``  control: reward + ``SHAPING`` x the share of the reference's running
                       sums the trace reaches, then plain GRPO (is the gain just the reference?)

Not run by default (``--arms`` names it): ``arena_zscore``, the product with one run setting
changed, ``normalisation="zscore"``: each judged dead group's advantages at unit standard
deviation, the size GRPO gives a live group. It tells whether the judge's ordering helps once
its advantages are as large as the verifier's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from judge_server.arena import advantages as server

ARMS = ("grpo", "dapo", "dapo_resample", "arena", "random", "judge_scores",
        "reference_shaping")
EXTRA_ARMS = ("arena_zscore",)
#: The arms whose dead groups go to the judge server, and the run settings they change.
JUDGED = ("arena", "random", "judge_scores", "arena_zscore")
RUN_SETTINGS: dict[str, dict[str, Any]] = {"arena_zscore": {"normalisation": "zscore"}}
RESAMPLE_ROUNDS = 3
SHAPING = 0.5
EPS = 1e-6


def dead(rewards: np.ndarray) -> np.ndarray:
    """[groups]: True where every trace of the group got the same reward (the server's rule,
    :func:`judge_server.arena.advantages.is_dead`)."""
    return np.array([server.is_dead(r, eps=EPS) for r in rewards], dtype=bool)


def group_relative(rewards: np.ndarray) -> np.ndarray:
    """[groups, G]: ``(r - mean) / (std + 1e-4)`` per group (population std); zeros when dead
    (:func:`judge_server.arena.advantages.group_relative`, the server's)."""
    return np.stack([server.group_relative(r) for r in rewards])


def shuffled(advantages: np.ndarray, is_dead: np.ndarray, rng: np.random.Generator
             ) -> np.ndarray:
    """The ``random`` control: each dead group's advantages permuted within the group."""
    out = advantages.copy()
    for g in np.flatnonzero(is_dead):
        out[g] = rng.permutation(out[g])
    return out


def scaled_scores(advantages: np.ndarray, scores: np.ndarray, is_dead: np.ndarray
                  ) -> np.ndarray:
    """The ``judge_scores`` control: dead groups get their traces' own judge scores, centred
    and scaled to the standard deviation of the arena's advantages for that group (zeros
    where the arena tied or the scores do)."""
    out = advantages.copy()
    for g in np.flatnonzero(is_dead):
        centred = scores[g] - scores[g].mean()
        spread, size = centred.std(), advantages[g].std()
        out[g] = centred * (size / spread) if spread > EPS else 0.0
    return out


def loss_weights(arm: str, is_dead: np.ndarray, group_size: int) -> np.ndarray:
    """[groups * G]: 1 for the traces whose tokens the loss covers (and normalises over)."""
    keep = ~is_dead if arm in ("dapo", "dapo_resample") else np.ones_like(is_dead)
    return np.repeat(keep.astype(np.float64), group_size)
