"""Where run settings and anchor pools live between requests and across restarts.

``MemoryStore`` is for tests and throwaway servers; ``SqliteStore`` is the single-node
default. A store that cannot read or write raises :class:`judge_server.errors.StoreError`:
a failed write is an error the caller sees, never a silent loss.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence

from trainer_client.types import RunSettings

from ..arena.pools import Anchor, RunPool


class Store(abc.ABC):
    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunSettings | None:
        """The run's settings, or None."""

    @abc.abstractmethod
    async def create_run(self, settings: RunSettings) -> bool:
        """Store a new run; False (and nothing written) if the id is taken."""

    @abc.abstractmethod
    async def delete_run(self, run_id: str) -> bool:
        """Delete a run and its pool; False if there was none."""

    @abc.abstractmethod
    async def list_runs(self) -> list[RunSettings]:
        """Every run's settings."""

    @abc.abstractmethod
    async def load_pool(self, run_id: str) -> RunPool:
        """Every prompt's anchors for the run (empty when none)."""

    @abc.abstractmethod
    async def save_pools(self, run_id: str, prompts: Mapping[str, Sequence[Anchor]]) -> None:
        """Replace the anchors of the given prompts (an empty list removes the prompt)."""

    async def aclose(self) -> None:
        """Release the store's connections."""


def settings_to_dict(settings: RunSettings) -> dict:
    return dataclasses.asdict(settings)


def settings_from_dict(data: Mapping) -> RunSettings:
    known = {f.name for f in dataclasses.fields(RunSettings)}
    return RunSettings(**{k: v for k, v in data.items() if k in known})


__all__ = ["Store", "settings_from_dict", "settings_to_dict"]
