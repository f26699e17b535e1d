"""Where run settings and anchor pools live between requests, across restarts and replicas.

``MemoryStore`` is for tests and throwaway servers; ``SqliteStore`` is the single-node
default; ``RedisStore`` is shared by several replicas. A store that cannot read or write raises
:class:`judge_server.errors.StoreError`: a failed write is an error the caller sees, never a
silent loss.

A pool changes by read-modify-write (:meth:`Store.update_anchors`): the store reads the prompt's
anchors, calls the update with them and writes what it returns, atomically, so that two
replicas updating one pool at once never lose each other's anchors. After the write, the run's
oldest anchors leave while the run holds more than ``per_run`` (:meth:`RunPool.put`), taken
prompt by prompt in (oldest step, prompt id) order from an index of each prompt's oldest step,
so that an update costs about the same at capacity as below it.

Retention: a store made with ``idle_ttl_s`` > 0 deletes a run, with its pool, once it has gone
unused that long (:meth:`Store.expire_idle_runs`; Redis expires its keys by itself). A run is
used when it is created, when its pool is written, and when :meth:`Store.touch_run` says so
(the run registry does, at most every :func:`touch_every_s`, on each request of the run).
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from trainer_client.types import RunSettings

from ..arena.pools import Anchor, RunPool

PoolUpdate = Callable[[list[Anchor]], list[Anchor]]


@dataclasses.dataclass(frozen=True, slots=True)
class StoredRun:
    """A run's settings and the tenant that owns it ("" on a server without API keys)."""

    settings: RunSettings
    tenant: str = ""

    @property
    def run_id(self) -> str:
        return self.settings.run_id

    def to_json(self) -> str:
        return json.dumps({"settings": dataclasses.asdict(self.settings), "tenant": self.tenant})

    @classmethod
    def from_json(cls, text: str | bytes) -> StoredRun:
        data = json.loads(text)
        return cls(settings_from_dict(data["settings"]), str(data.get("tenant", "")))


def touch_every_s(idle_ttl_s: float) -> float:
    """How often a process records that a run is still in use: a small part of the time it
    may stay idle (so that it never expires while used), and at most once a minute."""
    return min(60.0, idle_ttl_s / 20)


class Store(abc.ABC):
    #: True when other processes write the same state (replicas): the service then caches
    #: nothing and reads settings and anchors from the store every time.
    shared: ClassVar[bool] = False
    #: Seconds a run may stay unused before it is deleted with its pool; 0: kept for good.
    idle_ttl_s: float = 0.0

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> StoredRun | None:
        """The run, or None."""

    @abc.abstractmethod
    async def create_run(self, run: StoredRun) -> bool:
        """Store a new run; False (and nothing written) if the id is taken."""

    @abc.abstractmethod
    async def delete_run(self, run_id: str) -> bool:
        """Delete a run and its pool; False if there was none."""

    @abc.abstractmethod
    async def list_runs(self, tenant: str | None = None) -> list[StoredRun]:
        """Every run (of ``tenant`` when given), by run id."""

    @abc.abstractmethod
    async def load_anchors(self, run_id: str, prompt_id: str) -> list[Anchor]:
        """One prompt's anchors (empty when none)."""

    @abc.abstractmethod
    async def update_anchors(
        self, run_id: str, prompt_id: str, update: PoolUpdate, *, per_run: int
    ) -> tuple[list[Anchor], int] | None:
        """Atomically set the prompt's anchors to ``update(current)``, then keep the run within
        ``per_run`` anchors. Returns the prompt's anchors and the run's anchor count, or None
        (and writes nothing) when the run does not exist: a run deleted while its group was
        judged stays deleted."""

    @abc.abstractmethod
    async def load_pool(self, run_id: str) -> RunPool:
        """Every prompt's anchors for the run (empty when none)."""

    async def pool_size(self, run_id: str) -> tuple[int, int]:
        """(prompts, anchors) in the run's pool."""
        pool = await self.load_pool(run_id)
        return len(pool.prompts), pool.size()

    async def touch_run(self, run_id: str) -> None:
        """Record that the run is in use (it does not expire for ``idle_ttl_s`` from now).
        Cheap to call on every request: a store writes at most every :func:`touch_every_s`."""

    async def expire_idle_runs(self) -> list[str]:
        """Delete the runs unused for ``idle_ttl_s`` (none when it is 0), with their pools;
        returns their ids (those this call deleted, or found gone: Redis expires by itself)."""
        return []

    async def check_health(self) -> bool:
        """True when the store can be read and written; raises :class:`StoreError` saying why
        not (readiness probes)."""
        return True

    async def aclose(self) -> None:
        """Release the store's connections."""


def settings_from_dict(data: Mapping) -> RunSettings:
    known = {f.name for f in dataclasses.fields(RunSettings)}
    return RunSettings(**{k: v for k, v in data.items() if k in known})


def anchors_to_json(anchors: list[Anchor]) -> str:
    return json.dumps([a.to_dict() for a in anchors])


def anchors_from_json(text: str | bytes | None) -> list[Anchor]:
    return [Anchor.from_dict(a) for a in json.loads(text)] if text else []


def pool_from_json(rows: Iterable[tuple[str, str | bytes]]) -> RunPool:
    """A run's pool from stored ``(prompt id, anchors as JSON)`` rows."""
    return RunPool({prompt_id: anchors_from_json(text) for prompt_id, text in rows})


__all__ = [
    "PoolUpdate",
    "Store",
    "StoredRun",
    "anchors_from_json",
    "anchors_to_json",
    "pool_from_json",
    "settings_from_dict",
    "touch_every_s",
]
