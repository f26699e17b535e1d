"""A store that keeps everything in this process: for tests and throwaway servers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from trainer_client.types import RunSettings

from ..arena.pools import Anchor, RunPool
from .base import Store


class MemoryStore(Store):
    def __init__(self) -> None:
        self._runs: dict[str, RunSettings] = {}
        self._pools: dict[str, dict[str, list[Anchor]]] = {}

    async def get_run(self, run_id: str) -> RunSettings | None:
        return self._runs.get(run_id)

    async def create_run(self, settings: RunSettings) -> bool:
        if settings.run_id in self._runs:
            return False
        self._runs[settings.run_id] = settings
        return True

    async def delete_run(self, run_id: str) -> bool:
        self._pools.pop(run_id, None)
        return self._runs.pop(run_id, None) is not None

    async def list_runs(self) -> list[RunSettings]:
        return list(self._runs.values())

    async def load_pool(self, run_id: str) -> RunPool:
        return RunPool({pid: list(a) for pid, a in self._pools.get(run_id, {}).items()})

    async def save_pools(self, run_id: str, prompts: Mapping[str, Sequence[Anchor]]) -> None:
        pools = self._pools.setdefault(run_id, {})
        for prompt_id, anchors in prompts.items():
            if anchors:
                pools[prompt_id] = list(anchors)
            else:
                pools.pop(prompt_id, None)
