"""Anchor pools: traces kept from earlier training steps, with their fitted strengths.

A run keeps, for each prompt id, a small pool of earlier traces of that prompt. A new group of
the same prompt draws a few of them into its tournament as anchors: their known strengths tie
the new group's strengths to a scale shared across steps, and they give the judge references
spread over the quality range.

An anchor keeps the strength and standard error of the fit it came from, for good: a later
group's fit never writes back to it (:func:`after_group`). A tournament lets an anchor move only
within its own uncertainty and places the new group's level by its comparisons with the
anchors (:mod:`.tournament`), so the pool's scale stays put while the policy's strengths drift
on it. (Until anchors had standard errors, every later fit wrote its anchors' strengths back,
:func:`refit`; with the traces' prior pinned to the anchors' centre that pulled the pool down
as the policy improved.)

Policies (:class:`PoolPolicy`):

* entry: after a group is fitted, its traces are candidates; the pool keeps at most
  ``per_prompt`` anchors *spread over the strength range* (the strongest and the weakest
  always, the rest evenly spaced by strength);
* exit: anchors older than ``max_age`` steps leave; of two anchors closer than ``min_gap`` in
  strength, the older leaves (redundancy); a duplicate text keeps its newest strength;
* capacity: ``per_prompt`` anchors per prompt and ``per_run`` in all; over the run's capacity
  the oldest anchors of the run leave first.

Everything here is plain data and pure functions, so a store can persist a pool as JSON.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np


@dataclass(frozen=True, slots=True)
class Anchor:
    """A trace kept in a pool: its text, fitted strength, and the step it came from.

    ``stderr`` is the strength's standard error in that fit; ``None`` in pools stored before
    anchors had one (a tournament then gives the anchor a new trace's prior precision).
    """

    text: str
    strength: float
    step: int
    trace_id: str = ""
    stderr: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.strength):
            raise ValueError(f"strength: must be finite, got {self.strength}")
        if self.stderr is not None and not (math.isfinite(self.stderr) and self.stderr >= 0):
            raise ValueError(f"stderr: must be a finite number >= 0 or None, got {self.stderr}")
        if not self.trace_id:
            object.__setattr__(self, "trace_id", trace_id(self.text))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Anchor:
        return cls(
            text=str(data["text"]),
            strength=float(data["strength"]),
            step=int(data["step"]),
            trace_id=str(data.get("trace_id", "")),
            stderr=None if data.get("stderr") is None else float(data["stderr"]),
        )


def trace_id(text: str) -> str:
    """A short stable id for a trace text."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """How a run's anchor pool fills and empties; see the module docstring."""

    per_prompt: int = 8
    per_run: int = 100_000
    max_age: int | None = 100
    min_gap: float = 0.05
    anchors_per_group: int = 3

    def __post_init__(self) -> None:
        for name in ("per_prompt", "per_run", "anchors_per_group"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.max_age is not None and self.max_age < 0:
            raise ValueError(f"max_age: must be >= 0 or None, got {self.max_age}")
        if not (self.min_gap >= 0 and math.isfinite(self.min_gap)):
            raise ValueError(f"min_gap: must be a finite number >= 0, got {self.min_gap}")


def spread_indices(strengths: Sequence[float], k: int) -> list[int]:
    """Indices of ``k`` items spread evenly over the strength range (extremes first kept)."""
    n = len(strengths)
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    order = np.argsort(np.asarray(strengths, dtype=float), kind="stable")
    if k == 1:
        return [int(order[n // 2])]
    ranks = np.round(np.linspace(0, n - 1, k)).astype(int)
    return sorted(int(order[r]) for r in ranks)


def admit(
    anchors: Sequence[Anchor], candidates: Sequence[Anchor], policy: PoolPolicy, *, step: int
) -> list[Anchor]:
    """The prompt's pool after ``candidates`` (just fitted, from ``step``) try to enter."""
    newest: dict[str, Anchor] = {}
    for a in [*anchors, *candidates]:  # later entries win: candidates replace stale copies
        if policy.max_age is not None and step - a.step > policy.max_age:
            continue
        newest[a.trace_id] = a
    kept = sorted(newest.values(), key=lambda a: a.strength)
    if policy.min_gap > 0 and kept:
        spaced = [kept[0]]
        for a in kept[1:]:
            if a.strength - spaced[-1].strength < policy.min_gap:
                if a.step >= spaced[-1].step:
                    spaced[-1] = a
            else:
                spaced.append(a)
        kept = spaced
    chosen = spread_indices([a.strength for a in kept], policy.per_prompt)
    return [kept[i] for i in chosen]


def after_group(
    anchors: Sequence[Anchor],
    texts: Sequence[str],
    strengths: Iterable[float],
    stderr: Iterable[float],
    policy: PoolPolicy,
    *,
    step: int | None,
) -> list[Anchor]:
    """The prompt's pool after a group of ``step`` was fitted: the group's traces try to enter
    with their fitted strengths and standard errors; the anchors already there keep theirs.
    ``step`` ``None`` (the trainer gave none): the step after the pool's newest anchor. Pure
    in ``anchors``: a shared store may call it again on a newer pool."""
    if step is None:
        step = max((a.step for a in anchors), default=-1) + 1
    candidates = [
        Anchor(text=t, strength=float(s), step=step, stderr=float(e))
        for t, s, e in zip(texts, strengths, stderr, strict=True)
    ]
    return admit(anchors, candidates, policy, step=step)


def select(anchors: Sequence[Anchor], k: int) -> list[Anchor]:
    """``k`` anchors for a tournament, spread over the pool's strength range."""
    chosen = spread_indices([a.strength for a in anchors], k)
    return [anchors[i] for i in chosen]


def refit(anchors: Sequence[Anchor], strengths: Iterable[float]) -> list[Anchor]:
    """The same anchors with the strengths of the latest fit.

    The service's rule before anchors had standard errors (the ratchet); kept for the drift
    benchmark's before/after (:mod:`judge_server.bench.pool_drift`).
    """
    return [replace(a, strength=float(s)) for a, s in zip(anchors, strengths, strict=True)]


def oldest_step(anchors: Sequence[Anchor]) -> int:
    """The step of a prompt's oldest anchors (``anchors`` not empty)."""
    return min(a.step for a in anchors)


def drop_oldest(anchors: Sequence[Anchor], n: int) -> list[Anchor]:
    """The prompt's anchors without at most ``n`` of its oldest: those of its oldest step, by
    trace id. Over a run's capacity, anchors leave in the order (step, prompt id, trace id):
    the prompt first in (oldest step, prompt id) gives up its anchors of that step, then the
    next, so eviction visits only the prompts it takes anchors from."""
    if n <= 0 or not anchors:
        return list(anchors)
    step = oldest_step(anchors)
    gone = set(sorted(a.trace_id for a in anchors if a.step == step)[:n])
    return [a for a in anchors if a.step != step or a.trace_id not in gone]


@dataclass
class RunPool:
    """Every prompt's anchors for one run; enforces the run-wide capacity.

    Keeps its anchor count and a heap of its prompts by (oldest step, prompt id), so that a
    :meth:`put` over capacity evicts without visiting every anchor of the run. Change
    ``prompts`` through :meth:`put` only.
    """

    prompts: dict[str, list[Anchor]] = field(default_factory=dict)
    _size: int = field(default=0, init=False, repr=False, compare=False)
    _oldest: list[tuple[int, str]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._size = sum(len(v) for v in self.prompts.values())
        self._reindex()

    def _reindex(self) -> None:
        self._oldest = [(oldest_step(v), pid) for pid, v in self.prompts.items() if v]
        heapq.heapify(self._oldest)

    def size(self) -> int:
        return self._size

    def get(self, prompt_id: str) -> list[Anchor]:
        return list(self.prompts.get(prompt_id, ()))

    def _set(self, prompt_id: str, anchors: list[Anchor]) -> None:
        self._size += len(anchors) - len(self.prompts.get(prompt_id, ()))
        if not anchors:
            self.prompts.pop(prompt_id, None)
            return
        self.prompts[prompt_id] = anchors
        heapq.heappush(self._oldest, (oldest_step(anchors), prompt_id))
        if len(self._oldest) > 2 * len(self.prompts) + 64:  # too many stale entries
            self._reindex()

    def put(self, prompt_id: str, anchors: Sequence[Anchor], per_run: int) -> set[str]:
        """Store a prompt's pool, then evict the run's oldest anchors (order: step, prompt id,
        trace id) while it holds more than ``per_run``; returns every prompt id whose pool
        changed."""
        self._set(prompt_id, list(anchors))
        changed = {prompt_id}
        while self._size > per_run and self._oldest:
            step, pid = heapq.heappop(self._oldest)
            current = self.prompts.get(pid)
            if not current or oldest_step(current) != step:
                continue  # stale: the prompt changed since
            self._set(pid, drop_oldest(current, self._size - per_run))
            changed.add(pid)
        return changed

    def to_dict(self) -> dict:
        return {pid: [a.to_dict() for a in v] for pid, v in self.prompts.items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> RunPool:
        return cls({str(pid): [Anchor.from_dict(a) for a in v] for pid, v in data.items()})


__all__ = [
    "Anchor", "PoolPolicy", "RunPool", "admit", "after_group", "drop_oldest", "oldest_step",
    "refit", "select", "spread_indices", "trace_id",
]
