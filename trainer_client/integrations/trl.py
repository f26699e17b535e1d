"""TRL: a reward function for ``GRPOTrainer`` that rescues dead groups with the judge.

TRL lets no reward function return advantages; it computes them itself from the rewards,
group by group: ``advantage = reward - mean(group)``, divided by the group's standard deviation
unless told otherwise. :class:`ArenaReward` wraps your verifier (any TRL reward function) and
returns, for each completion, its verifiable reward plus, inside a *dead* group (every
verifiable reward equal), the judge's zero-mean advantage for it. The group mean is unchanged,
so TRL's own group normalisation hands the judge's advantages to exactly the dead groups and
leaves every other group as the verifier made it::

    from trainer_client.integrations.trl import ArenaReward
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(num_generations=8, scale_rewards="none", ...)
    reward = ArenaReward(my_verifier, num_generations=args.num_generations,
                         client=ClientConfig(target="judge:50051", run_id="exp-1"))
    trainer = GRPOTrainer(model=..., reward_funcs=reward, args=args, train_dataset=...)

Settings TRL needs (read from TRL 1.16's ``GRPOConfig`` and ``GRPOTrainer``):

``scale_rewards="none"`` (or ``False``)
    TRL's advantage is ``reward - group mean``, divided by ``std + 1e-4`` when
    ``scale_rewards="group"`` (the default) or by the batch's std with ``"batch"``. With
    ``"none"`` the judge's values reach the policy as they are: zero-mean inside the dead group
    and on the scale the judge server's run settings give them (``scale``, ``normalisation``).
    With ``"group"`` every rescued group is blown up to unit standard deviation, however weak
    the judge's preference; with ``"batch"`` they are divided by the batch's std. Both work, but
    the server's ``scale`` then means nothing.
``multi_objective_aggregation="sum_then_normalize"`` (the default)
    and :class:`ArenaReward` as the only reward function, or with its verifier combining every
    verifiable reward: it decides which groups are dead on its verifier's rewards only.
``AsyncGRPOTrainer``
    calls reward functions once per complete group, in a spawned worker (the reward function
    is pickled: :class:`ArenaReward` is, with its client, as long as the verifier is a
    module-level function or a picklable object). It always divides by the group's std
    (``(r - mean) / (std + 1e-8)``, no ``scale_rewards`` option): a rescued group's advantages
    get unit std there.

Groups. TRL puts a prompt's ``num_generations`` completions next to each other. The reward
function takes consecutive runs of ``num_generations`` completions of one prompt as a group
(``num_generations_eval`` too, for evaluation batches, when it differs). Under
``torch.distributed`` with several processes each process sees a slice of the batch, and a
group may be split between processes: the reward function then gathers the batch from every
process (``all_gather_object``), process 0 ranks every group once and sends back the values
(``broadcast_object_list``), and each process keeps its slice (``gather=False`` turns this
off). A group the call sees only part of (no gathering) keeps its verifiable rewards: whether
it is dead cannot be known from a part. A group with a ``None`` reward is not sent either.

The judge's metrics (``arena/judged``, ``arena/dead_fraction``, ``arena/fell_back``, ...,
``arena/partial_groups``) go to TRL's logs through ``log_metric``. A judge failure never stops
training: the dead groups it did not rank keep their verifiable rewards (zero advantages).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._core import BatchResult, ClientConfig
from ..client import ArenaClient, AsyncArenaClient
from ..errors import ArenaClientError
from ..types import Group, Trace
from ._common import completion_text, digest, finite, prompt_key, prompt_text

logger = logging.getLogger("trainer_client")

RewardFunc = Callable[..., Any]


@dataclass
class _Batch:
    """What one call sees (or, gathered, what every process saw), as plain data."""

    keys: list[str]
    prompts: list[str]
    texts: list[str]
    references: list[str | None]
    rewards: list[float | None]

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def concat(cls, parts: Sequence[_Batch]) -> _Batch:
        return cls(*(sum((getattr(p, f) for p in parts), []) for f in (
            "keys", "prompts", "texts", "references", "rewards")))


@dataclass
class _Plan:
    """The complete groups of a batch: index ranges and the groups to send."""

    spans: list[tuple[int, int]] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    partial: int = 0


def _torch_distributed():
    """``torch.distributed`` when the batch is split between processes, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _offset(n: int) -> int:
    """Where this process's slice starts in the whole batch (TRL: rank * slice length)."""
    dist = _torch_distributed()
    return 0 if dist is None else dist.get_rank() * n


class ArenaReward:
    """A TRL reward function: ``verifier``'s rewards, plus the judge's inside dead groups.

    ``verifier``: a TRL reward function (``f(prompts, completions, **kwargs) -> list[float |
    None]``) giving the verifiable rewards. ``num_generations``: TRL's ``num_generations``
    (``num_generations_eval`` when evaluation uses another group size). ``client``: an
    :class:`~trainer_client.ArenaClient`, or a :class:`~trainer_client.ClientConfig` (the
    client is then made on first use), or None for the defaults. ``reference_column``: a
    dataset column shown to the judge as the reference answer. ``gather``: None (gather the
    batch under ``torch.distributed``), False (never). ``name``: TRL logs the rewards under it
    (default ``arena``).

    Picklable (``AsyncGRPOTrainer``): the client travels as its config.
    """

    def __init__(
        self,
        verifier: RewardFunc,
        *,
        num_generations: int,
        client: ArenaClient | AsyncArenaClient | ClientConfig | None = None,
        num_generations_eval: int | None = None,
        reference_column: str | None = None,
        gather: bool | None = None,
        name: str = "arena",
    ) -> None:
        if not callable(verifier):
            raise TypeError(f"verifier: must be a TRL reward function, got {verifier!r}")
        sizes = [num_generations] + ([num_generations_eval] if num_generations_eval else [])
        for size in sizes:
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"num_generations: must be an integer >= 1, got {size!r}")
        self.verifier = verifier
        self.num_generations = num_generations
        self.num_generations_eval = num_generations_eval
        self.reference_column = reference_column
        self.gather = gather
        self.__name__ = name
        if isinstance(client, (ArenaClient, AsyncArenaClient)):
            self.config = client.config
            self._client: ArenaClient | AsyncArenaClient | None = client
        else:
            self.config = client if client is not None else ClientConfig()
            self._client = None
        self._lock = threading.Lock()

    # -- pickling: the client travels as its config --------------------------------------------

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_client", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._client = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.verifier!r}, num_generations="
                f"{self.num_generations}, run_id={self.config.run_id!r})")

    # -- TRL calls this -------------------------------------------------------------------------

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        rewards = self.verifier(prompts=prompts, completions=completions, **kwargs)
        batch = self._batch(prompts, completions, rewards, kwargs)
        dist = None if self.gather is False else _torch_distributed()
        if dist is None:
            extra, metrics = self._rank(batch, kwargs, _offset(len(batch)))
        else:
            extra, metrics = self._rank_gathered(dist, batch, kwargs)
        return self._finish(batch, extra, metrics, kwargs)

    def close(self) -> None:
        """Close the client this reward function made (not one it was given)."""
        client, self._client = self._client, None
        if isinstance(client, ArenaClient):
            client.close()

    # -- the steps ------------------------------------------------------------------------------

    def _batch(self, prompts, completions, rewards, kwargs) -> _Batch:
        n = len(completions)
        rewards = list(rewards)
        if len(prompts) != n or len(rewards) != n:
            raise ValueError(f"{len(prompts)} prompts, {n} completions and {len(rewards)} "
                             "rewards: one of each per completion")
        references: list[str | None] = [None] * n
        if self.reference_column is not None:
            column = kwargs.get(self.reference_column)
            if column is None:
                raise KeyError(f"reference_column: no dataset column {self.reference_column!r}")
            references = [None if r is None else str(r) for r in column]
        return _Batch(
            keys=[prompt_key(p) for p in prompts],
            prompts=[prompt_text(p) for p in prompts],
            texts=[completion_text(c) for c in completions],
            references=references,
            rewards=[finite(r) for r in rewards],
        )

    def _plan(self, batch: _Batch, offset: int, step: int | None) -> _Plan:
        """Find the complete groups: aligned runs of one prompt, ``num_generations`` long."""
        sizes = [self.num_generations]
        if self.num_generations_eval and self.num_generations_eval != self.num_generations:
            sizes.append(self.num_generations_eval)
        best: _Plan | None = None
        for size in sizes:
            plan = _plan_for(batch, size, offset, step)
            if best is None or plan.partial < best.partial:
                best = plan
            if plan.partial == 0:
                break
        assert best is not None  # sizes is never empty
        return best

    def _rank(self, batch: _Batch, kwargs: dict, offset: int = 0) -> tuple[list[float], dict]:
        plan = self._plan(batch, offset, _step(kwargs))
        extra = [0.0] * len(batch)
        if not plan.groups:
            return extra, {"arena/partial_groups": float(plan.partial)}
        try:
            result = self._client_sync().rank(plan.groups)
        except ArenaClientError as exc:  # e.g. a completion the server would refuse
            logger.warning("groups not sent to the judge (%s); verifiable rewards kept", exc)
            return extra, {"arena/error": 1.0, "arena/partial_groups": float(plan.partial)}
        return _apply(plan, result, extra)

    def _rank_gathered(self, dist, batch: _Batch, kwargs: dict) -> tuple[list[float], dict]:
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, batch)
        rank = dist.get_rank()
        offset = sum(len(p) for p in parts[:rank])
        answer: list[Any] = [None]
        if rank == 0:
            try:
                answer[0] = self._rank(_Batch.concat(parts), kwargs)
            except Exception:  # noqa: BLE001 - the other processes wait on the broadcast
                logger.exception("ranking the gathered batch failed; verifiable rewards kept")
                answer[0] = ([0.0] * sum(len(p) for p in parts), {"arena/error": 1.0})
        dist.broadcast_object_list(answer, src=0)
        extra, metrics = answer[0]
        return extra[offset : offset + len(batch)], metrics

    def _finish(self, batch: _Batch, extra: list[float], metrics: dict, kwargs: dict):
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for key, value in metrics.items():
                log_metric(key, value)
        return [None if r is None else r + e for r, e in zip(batch.rewards, extra)]

    def _client_sync(self) -> ArenaClient:
        with self._lock:
            if not isinstance(self._client, ArenaClient):
                self._client = ArenaClient(self.config)
            return self._client


class AsyncArenaReward(ArenaReward):
    """:class:`ArenaReward` as an ``async def`` reward function.

    TRL runs async reward functions concurrently on its own event loop (``asyncio.gather``),
    so judging overlaps the other reward functions. ``verifier`` may be sync or async.
    """

    _sync_client: ArenaClient | None  # the gathered path's, made on first use

    async def __call__(  # type: ignore[override]
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        rewards = self.verifier(prompts=prompts, completions=completions, **kwargs)
        if inspect.isawaitable(rewards):
            rewards = await rewards
        batch = self._batch(prompts, completions, rewards, kwargs)
        dist = None if self.gather is False else _torch_distributed()
        if dist is None:
            plan = self._plan(batch, _offset(len(batch)), _step(kwargs))
            extra = [0.0] * len(batch)
            metrics = {"arena/partial_groups": float(plan.partial)}
            if plan.groups:
                try:
                    result = await self._client_async().rank(plan.groups)
                except ArenaClientError as exc:
                    logger.warning("groups not sent to the judge (%s); verifiable rewards kept",
                                   exc)
                    metrics["arena/error"] = 1.0
                else:
                    extra, metrics = _apply(plan, result, extra)
        else:  # the collectives block: not on the event loop
            extra, metrics = await asyncio.to_thread(self._rank_gathered, dist, batch, kwargs)
        return self._finish(batch, extra, metrics, kwargs)

    def _client_async(self) -> AsyncArenaClient:
        with self._lock:
            if not isinstance(self._client, AsyncArenaClient):
                self._client = AsyncArenaClient(self.config)
            return self._client

    def _client_sync(self) -> ArenaClient:  # the gathered path runs in a thread
        with self._lock:
            client = getattr(self, "_sync_client", None)
            if client is None:
                client = self._sync_client = ArenaClient(self.config)
            return client

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_sync_client", None)
        return state

    async def aclose(self) -> None:
        """Close the clients this reward function made."""
        client, self._client = self._client, None
        if isinstance(client, AsyncArenaClient):
            await client.aclose()
        sync = getattr(self, "_sync_client", None)
        if sync is not None:
            sync.close()
            self._sync_client = None


# -- helpers ------------------------------------------------------------------------------------


def _step(kwargs: dict) -> int | None:
    state = kwargs.get("trainer_state")
    step = getattr(state, "global_step", None)
    return step if isinstance(step, int) and step >= 0 else None


def _plan_for(batch: _Batch, size: int, offset: int, step: int | None) -> _Plan:
    """Complete groups when groups are ``size`` long and the batch starts at ``offset``."""
    plan = _Plan()
    n = len(batch)
    start = 0
    while start < n:
        # The end of the group that ``start`` is in (groups are aligned on the whole batch).
        end = min(n, start + size - (offset + start) % size)
        k = start
        while k < end:  # split a chunk whose prompts differ into runs of one prompt
            run_end = k + 1
            while run_end < end and batch.keys[run_end] == batch.keys[k]:
                run_end += 1
            if run_end - k == size:
                _add_group(plan, batch, k, run_end, step)
            else:
                plan.partial += 1
            k = run_end
        start = end
    return plan


def _add_group(plan: _Plan, batch: _Batch, start: int, end: int, step: int | None) -> None:
    rewards = [r for r in batch.rewards[start:end] if r is not None]
    if len(rewards) < 2 or len(rewards) < end - start:
        return  # nothing to judge: a group of one, or a completion the verifier could not score
    key = batch.keys[start]
    plan.spans.append((start, end))
    plan.groups.append(Group(
        group_id=f"g{len(plan.groups)}-{digest(key)}",
        traces=tuple(Trace(text=t, reward=r) for t, r in zip(batch.texts[start:end], rewards)),
        prompt_id=f"p-{digest(key)}",
        prompt=batch.prompts[start],
        reference=batch.references[start],
        step=step,
    ))


def _apply(plan: _Plan, result: BatchResult, extra: list[float]) -> tuple[list[float], dict]:
    """Add each judged group's advantages to its completions' rewards."""
    for (start, end), outcome in zip(plan.spans, result.outcomes):
        if outcome.routed and outcome.judged:
            extra[start:end] = [float(a) for a in outcome.advantages]
    metrics = result.stats.as_metrics()
    metrics["arena/partial_groups"] = float(plan.partial)
    return extra, metrics


__all__ = ["ArenaReward", "AsyncArenaReward"]
