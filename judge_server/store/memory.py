"""A store that keeps everything in this process: for tests and throwaway servers."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..arena.pools import Anchor, RunPool
from .base import PoolUpdate, Store, StoredRun


class MemoryStore(Store):
    """``idle_ttl_s``: seconds a run may go unused before :meth:`expire_idle_runs` deletes it
    (0: never); ``clock``: seconds (tests pass their own)."""

    def __init__(
        self, *, idle_ttl_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_ttl_s = idle_ttl_s
        self.clock = clock
        self._runs: dict[str, StoredRun] = {}
        self._pools: dict[str, RunPool] = {}
        self._used: dict[str, float] = {}  # run id -> when it was last used

    async def get_run(self, run_id: str) -> StoredRun | None:
        return self._runs.get(run_id)

    async def create_run(self, run: StoredRun) -> bool:
        if run.run_id in self._runs:
            return False
        self._runs[run.run_id] = run
        self._used[run.run_id] = self.clock()
        return True

    async def delete_run(self, run_id: str) -> bool:
        self._pools.pop(run_id, None)
        self._used.pop(run_id, None)
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
        self._used[run_id] = self.clock()
        pool = self._pools.setdefault(run_id, RunPool())  # no await below: atomic in the loop
        pool.put(prompt_id, update(pool.get(prompt_id)), per_run)
        return pool.get(prompt_id), pool.size()

    async def load_pool(self, run_id: str) -> RunPool:
        return RunPool.from_dict(self._pools.get(run_id, RunPool()).to_dict())

    async def pool_size(self, run_id: str) -> tuple[int, int]:
        pool = self._pools.get(run_id, RunPool())
        return len(pool.prompts), pool.size()

    async def touch_run(self, run_id: str) -> None:
        if run_id in self._runs:
            self._used[run_id] = self.clock()

    async def expire_idle_runs(self) -> list[str]:
        if not self.idle_ttl_s:
            return []
        cutoff = self.clock() - self.idle_ttl_s
        expired = sorted(r for r, used in self._used.items() if used < cutoff)
        for run_id in expired:
            await self.delete_run(run_id)
        return expired
