"""The store that several judge replicas share: Redis.

Keys (``prefix`` defaults to ``arena:``)::

    {prefix}run-ids            set of run ids
    {prefix}run:{run_id}       the run: JSON of its settings and tenant
    {prefix}pool:{run_id}      hash: prompt id -> JSON list of anchors
    {prefix}pool-size:{run_id} the run's anchor count (kept with every pool write)
    {prefix}pool-oldest:{run_id} sorted set: prompt id -> the step of its oldest anchor
    {prefix}health             written by readiness checks (expires after a minute)

Over the run's capacity, an update takes the oldest anchors prompt by prompt in the order of
``pool-oldest`` (score, then prompt id), reading only the prompts it takes anchors from. A
pool written before that index existed gets it on its first update over capacity.

Retention: with ``idle_ttl_s`` > 0 the run's keys expire that long after the run was last used
(created, its pool written, or touched); each use sets their expiry again. The run-ids set
keeps an expired run's id until :meth:`RedisStore.expire_idle_runs` finds its key gone.

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
import time
from typing import Any

from ..arena.pools import Anchor, RunPool, drop_oldest, oldest_step
from ..errors import StoreError
from .base import (
    PoolUpdate,
    Store,
    StoredRun,
    anchors_from_json,
    anchors_to_json,
    pool_from_json,
    touch_every_s,
)

MAX_TRIES = 64  # optimistic tries of one pool update before it is a StoreError


class RedisStore(Store):
    shared = True

    def __init__(self, url: str, *, prefix: str = "arena:", idle_ttl_s: float = 0.0) -> None:
        from redis import asyncio as aioredis  # the server's extra; imported on use

        self.url = url
        self.prefix = prefix
        self.idle_ttl_s = idle_ttl_s
        self._redis = aioredis.from_url(url, decode_responses=True)
        self._touched: dict[str, float] = {}  # run id -> when this process last set its expiry

    @property
    def client(self) -> Any:
        """The Redis client (its connection pool), shared with what else the replicas keep
        in this Redis (:mod:`.redis_shared`); closed by :meth:`aclose`."""
        return self._redis

    def _run_keys(self, run_id: str) -> list[str]:
        """Every key of a run."""
        return [self._key(kind, run_id) for kind in ("run", "pool", "pool-size", "pool-oldest")]

    @property
    def _ttl_ms(self) -> int | None:
        return max(1, round(self.idle_ttl_s * 1000)) if self.idle_ttl_s else None

    def _expire(self, pipe: Any, run_id: str) -> None:
        """Queue the run's keys' expiry on ``pipe`` (nothing without a TTL)."""
        if self._ttl_ms is not None:
            for key in self._run_keys(run_id):
                pipe.pexpire(key, self._ttl_ms)

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
                pipe.set(self._key("run", run.run_id), run.to_json(), nx=True, px=self._ttl_ms)
                pipe.sadd(self._key("run-ids"), run.run_id)
                created, _ = await pipe.execute()
            return bool(created)

        return await self._call(work)

    async def delete_run(self, run_id: str) -> bool:
        async def work(r):
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(self._key("run", run_id))
                pipe.delete(*self._run_keys(run_id)[1:])
                pipe.srem(self._key("run-ids"), run_id)
                deleted, _, _ = await pipe.execute()
            self._touched.pop(run_id, None)
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

        run_key, pool_key, size_key, oldest_key = self._run_keys(run_id)

        async def work(r):
            async with r.pipeline(transaction=True) as pipe:
                for attempt in range(MAX_TRIES):
                    try:
                        await pipe.watch(run_key, pool_key, size_key, oldest_key)
                        if not await pipe.exists(run_key):
                            return None
                        before = anchors_from_json(await pipe.hget(pool_key, prompt_id))
                        after = update(before)
                        size = int(await pipe.get(size_key) or 0) - len(before) + len(after)
                        changed = {prompt_id: after}
                        if size > per_run:  # over the run's capacity: its oldest anchors leave
                            if await pipe.zcard(oldest_key) != await pipe.hlen(pool_key):
                                await self._index(pipe, pool_key, oldest_key)
                                continue  # again, on the index
                            size = await self._evict(pipe, pool_key, oldest_key, changed,
                                                     size, per_run)
                        pipe.multi()
                        for pid, anchors in changed.items():
                            if anchors:
                                pipe.hset(pool_key, pid, anchors_to_json(anchors))
                                pipe.zadd(oldest_key, {pid: oldest_step(anchors)})
                            else:
                                pipe.hdel(pool_key, pid)
                                pipe.zrem(oldest_key, pid)
                        pipe.set(size_key, size)
                        self._expire(pipe, run_id)
                        await pipe.execute()
                        self._touched[run_id] = time.monotonic()
                        return changed[prompt_id], size
                    except WatchError:  # another replica wrote first: again, on its state
                        await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
            raise StoreError(
                f"redis store: pool of run {run_id!r} prompt {prompt_id!r} changed under "
                f"{MAX_TRIES} tries in a row"
            )

        return await self._call(work)

    @staticmethod
    async def _index(pipe: Any, pool_key: str, oldest_key: str) -> None:
        """Write the prompts' oldest steps for a pool stored before the index (once)."""
        stored = pool_from_json((await pipe.hgetall(pool_key)).items())
        pipe.multi()
        pipe.delete(oldest_key)
        index = {pid: oldest_step(v) for pid, v in stored.prompts.items() if v}
        if index:
            pipe.zadd(oldest_key, index)
        await pipe.execute()

    @staticmethod
    async def _evict(
        pipe: Any, pool_key: str, oldest_key: str, changed: dict[str, list[Anchor]],
        size: int, per_run: int,
    ) -> int:
        """Take the run's oldest anchors, prompt by prompt in (oldest step, prompt id) order,
        until it holds ``per_run``; ``changed`` (prompt id -> its anchors to write) gets every
        prompt taken from. Returns the run's anchor count."""
        rank = 0  # the index's first entry not yet in ``changed``
        while size > per_run:
            entry = await pipe.zrange(oldest_key, rank, rank, withscores=True)
            if entry and entry[0][0] in changed:  # its stored score is out of date
                rank += 1
                continue
            heads = [(oldest_step(v), pid) for pid, v in changed.items() if v]
            if entry:
                heads.append((int(entry[0][1]), entry[0][0]))
            if not heads:
                break
            _, pid = min(heads)
            current = changed[pid] if pid in changed else anchors_from_json(
                await pipe.hget(pool_key, pid)
            )
            kept = drop_oldest(current, size - per_run)
            size -= len(current) - len(kept)
            changed[pid] = kept
        return size

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

    async def touch_run(self, run_id: str) -> None:
        if not self.idle_ttl_s:
            return
        now = time.monotonic()
        if now - self._touched.get(run_id, float("-inf")) < touch_every_s(self.idle_ttl_s):
            return

        async def work(r):
            async with r.pipeline(transaction=False) as pipe:
                self._expire(pipe, run_id)
                await pipe.execute()

        await self._call(work)
        self._touched[run_id] = now

    async def expire_idle_runs(self) -> list[str]:
        """The ids of runs whose keys expired, taken out of the run-ids set."""
        from redis.exceptions import WatchError

        if not self.idle_ttl_s:
            return []

        async def work(r):
            ids = sorted(await r.smembers(self._key("run-ids")))
            if not ids:
                return []
            async with r.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.exists(self._key("run", run_id))
                alive = await pipe.execute()
            gone = []
            for run_id in (i for i, there in zip(ids, alive) if not there):
                async with r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(self._key("run", run_id))
                        if await pipe.exists(self._key("run", run_id)):
                            continue  # created again meanwhile
                        pipe.multi()
                        pipe.delete(*self._run_keys(run_id))  # what has not expired yet
                        pipe.srem(self._key("run-ids"), run_id)
                        await pipe.execute()
                    except WatchError:  # created again meanwhile
                        continue
                self._touched.pop(run_id, None)
                gone.append(run_id)
            return gone

        return await self._call(work)

    async def check_health(self) -> bool:
        """PING, then a write (expiring in a minute) and a read."""
        token = f"{time.time():.6f}-{random.random()}"

        async def work(r):
            await r.ping()
            await r.set(self._key("health"), token, ex=60)
            if await r.get(self._key("health")) != token:
                raise StoreError(f"redis store {self._redacted()}: a write did not read back")
            return True

        return await self._call(work)

    async def aclose(self) -> None:
        await self._redis.aclose()
