"""Reasoning Arena's trainer client: the light side (grpcio, protobuf and httpx only).

    from trainer_client import ArenaClient, Group, Trace

    with ArenaClient(target="judge:50051", run_id="exp-1", deadline_s=30) as arena:
        result = arena.rank(groups)          # one GroupOutcome per group, in order
        advantages = result.advantages       # one vector per group
        log(result.stats.as_metrics())       # {"arena/dead_fraction": ..., ...}

Dead groups (every reward equal) go to the judge; the others get group-relative advantages
computed here. A judge failure never stops training: a dead group the judge does not answer
in time falls back to zeros. :class:`AsyncArenaClient` is the async twin. Options:
:class:`ClientConfig`; errors: :mod:`trainer_client.errors`.
"""

from ._core import (
    MAX_ABS_REWARD,
    STD_EPS,
    BatchResult,
    BatchStats,
    ClientConfig,
    GroupOutcome,
    group_relative,
    is_dead,
    make_group,
)
from .client import ArenaClient, AsyncArenaClient
from .errors import ArenaClientError, ClientClosed, InvalidConfig, InvalidGroup
from .types import Group, GroupResult, RunSettings, Trace

__all__ = [
    "MAX_ABS_REWARD",
    "STD_EPS",
    "ArenaClient",
    "ArenaClientError",
    "AsyncArenaClient",
    "BatchResult",
    "BatchStats",
    "ClientClosed",
    "ClientConfig",
    "Group",
    "GroupOutcome",
    "GroupResult",
    "InvalidConfig",
    "InvalidGroup",
    "RunSettings",
    "Trace",
    "group_relative",
    "is_dead",
    "make_group",
]
