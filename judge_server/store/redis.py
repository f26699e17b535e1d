"""The store that several judge replicas share: Redis.

Keys (``prefix`` defaults to ``arena:``)::

    {prefix}run-ids            set of run ids
    {prefix}run:{run_id}       the run: JSON of its settings and tenant
    {prefix}pool:{run_id}      hash: prompt id -> JSON list of anchors
    {prefix}pool-size:{run_id} the run's anchor count (kept with every pool write)

Pool updates are optimistic transactions: WATCH the run, its pool and its count, read the
prompt's anchors, compute the update, and write in MULTI/EXEC; when another replica wrote any
of them in between, EXEC fails and the update runs again on what that replica wrote. So two
replicas updating one pool at once never lose each other's anchors, and a run deleted meanwhile
is not brought back. The update may therefore be called more than once: it must be a pure
function of the anchors it is given.
"""

from __future__ import annotations

import asyncio
import random

from ..arena.pools import Anchor, RunPool
from ..errors import StoreError
from .base import (
    PoolUpdate,
    Store,
    StoredRun,
    anchors_from_json,
    anchors_to_json,
    pool_from_json,
)

MAX_TRIES = 64  # optimistic tries of one pool update before it is a StoreError


class RedisStore(Store):
    shared = True

    def __init__(self, url: str, *, prefix: str = "arena:") -> None:
        from redis import asyncio as aioredis  # the server's extra; imported on use

        self.url = url
        self.prefix = prefix
        self._redis = aioredis.from_url(url, decode_responses=True)

    def _key(self, kind: str, run_id: str = "") -> str:
        return f"{self.prefix}{kind}:{run_id}" if run_id else f"{self.prefix}{kind}"

    async def _call(self, work):
        from redis.exceptions import RedisError

        try:
            return await work(self._redis)
        except RedisError as exc:
            message = f"redis store {self._redacted()}: {type(exc).__name__}: {exc}"
            raise StoreError(message) from exc

    def _redacted(self) -> str:
        """The URL without a password, for messages."""
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}"

    async def get_run(self, run_id: str) -> StoredRun | None:
        text = await self._call(lambda r: r.get(self._key("run", run_id)))
        return None if text is None else StoredRun.from_json(text)

    async def create_run(self, run: StoredRun) -> bool:
        async def work(r):
            async with r.pipeline(transaction=True) as pipe:
                pipe.set(self._key("run", run.run_id), run.to_json(), nx=True)
                pipe.sadd(self._key("run-ids"), run.run_id)
                created, _ = await pipe.execute()
            return bool(created)

        return await self._call(work)

    async def delete_run(self, run_id: str) -> bool:
        async def work(r):
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(self._key("run", run_id))
                pipe.delete(self._key("pool", run_id), self._key("pool-size", run_id))
                pipe.srem(self._key("run-ids"), run_id)
                deleted, _, _ = await pipe.execute()
            return deleted == 1

        return await self._call(work)

    async def list_runs(self, tenant: str | None = None) -> list[StoredRun]:
        async def work(r):
            ids = sorted(await r.smembers(self._key("run-ids")))
            texts = await r.mget([self._key("run", i) for i in ids]) if ids else []
            return [StoredRun.from_json(t) for t in texts if t is not None]

        runs = await self._call(work)
        return [run for run in runs if tenant is None or run.tenant == tenant]

    async def load_anchors(self, run_id: str, prompt_id: str) -> list[Anchor]:
        return anchors_from_json(await self._call(lambda r: r.hget(self._key("pool", run_id),
                                                                   prompt_id)))

    async def update_anchors(
        self, run_id: str, prompt_id: str, update: PoolUpdate, *, per_run: int
    ) -> tuple[list[Anchor], int] | None:
        from redis.exceptions import WatchError

        run_key, pool_key = self._key("run", run_id), self._key("pool", run_id)
        size_key = self._key("pool-size", run_id)

        async def work(r):
            async with r.pipeline(transaction=True) as pipe:
                for attempt in range(MAX_TRIES):
                    try:
                        await pipe.watch(run_key, pool_key, size_key)
                        if not await pipe.exists(run_key):
                            return None
                        before = anchors_from_json(await pipe.hget(pool_key, prompt_id))
                        after = update(before)
                        size = int(await pipe.get(size_key) or 0) - len(before) + len(after)
                        if size <= per_run:
                            pool, changed = RunPool({prompt_id: after}), {prompt_id}
                        else:  # over the run's capacity: its oldest anchors leave
                            stored = await pipe.hgetall(pool_key)
                            pool = pool_from_json(stored.items())
                            changed = pool.put(prompt_id, after, per_run)
                            size = pool.size()
                        pipe.multi()
                        for pid in changed:
                            if pool.get(pid):
                                pipe.hset(pool_key, pid, anchors_to_json(pool.get(pid)))
                            else:
                                pipe.hdel(pool_key, pid)
                        pipe.set(size_key, size)
                        await pipe.execute()
                        return pool.get(prompt_id), size
                    except WatchError:  # another replica wrote first: again, on its state
                        await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
            raise StoreError(
                f"redis store: pool of run {run_id!r} prompt {prompt_id!r} changed under "
                f"{MAX_TRIES} tries in a row"
            )

        return await self._call(work)

    async def load_pool(self, run_id: str) -> RunPool:
        stored = await self._call(lambda r: r.hgetall(self._key("pool", run_id)))
        return pool_from_json(stored.items())

    async def pool_size(self, run_id: str) -> tuple[int, int]:
        async def work(r):
            async with r.pipeline(transaction=False) as pipe:
                pipe.hlen(self._key("pool", run_id))
                pipe.get(self._key("pool-size", run_id))
                prompts, anchors = await pipe.execute()
            return int(prompts), int(anchors or 0)

        return await self._call(work)

    async def check(self) -> None:
        """Raise :class:`StoreError` when Redis does not answer (readiness)."""
        await self._call(lambda r: r.ping())

    async def aclose(self) -> None:
        await self._redis.aclose()
