"""A store that keeps everything in this process: for tests and throwaway servers."""

from __future__ import annotations

from ..arena.pools import Anchor, RunPool
from .base import PoolUpdate, Store, StoredRun


class MemoryStore(Store):
    def __init__(self) -> None:
        self._runs: dict[str, StoredRun] = {}
        self._pools: dict[str, RunPool] = {}

    async def get_run(self, run_id: str) -> StoredRun | None:
        return self._runs.get(run_id)

    async def create_run(self, run: StoredRun) -> bool:
        if run.run_id in self._runs:
            return False
        self._runs[run.run_id] = run
        return True

    async def delete_run(self, run_id: str) -> bool:
        self._pools.pop(run_id, None)
        return self._runs.pop(run_id, None) is not None

    async def list_runs(self, tenant: str | None = None) -> list[StoredRun]:
        return [
            r for _, r in sorted(self._runs.items()) if tenant is None or r.tenant == tenant
        ]

    async def load_anchors(self, run_id: str, prompt_id: str) -> list[Anchor]:
        return self._pools.get(run_id, RunPool()).get(prompt_id)

    async def update_anchors(
        self, run_id: str, prompt_id: str, update: PoolUpdate, *, per_run: int
    ) -> tuple[list[Anchor], int] | None:
        if run_id not in self._runs:
            return None
        pool = self._pools.setdefault(run_id, RunPool())  # no await below: atomic in the loop
        pool.put(prompt_id, update(pool.get(prompt_id)), per_run)
        return pool.get(prompt_id), pool.size()

    async def load_pool(self, run_id: str) -> RunPool:
        return RunPool.from_dict(self._pools.get(run_id, RunPool()).to_dict())
